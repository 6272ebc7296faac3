"""An HTML page template for `dvc plots show --html-template` that works offline.

DVC's own page loads vega, vega-lite and vega-embed from a CDN: without that network the page is
blank. This writes DVC's page with the three libraries inlined instead, taken from a folder holding
their npm packages (``npm pack vega@5 vega-lite@5 vega-embed@6`` unpacked, or a node_modules/):

    python scripts/plots_template.py node_modules --out plots_template.html
    dvc plots show --html-template plots_template.html
"""

from __future__ import annotations

import argparse
from pathlib import Path

LIBRARIES = ("vega", "vega-lite", "vega-embed")  # in load order
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")  # what DVC replaces in the page

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- vega, vega-lite, vega-embed inlined (scripts/plots_template.py); DVC's CDN scripts left out -->
    %s
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def find_build(root: Path, library: str) -> Path:
    """``<library>[-<version>]/build/<library>.min.js`` under `root` (the newest, when several)."""
    found = sorted(root.glob(f"{library}*/build/{library}.min.js"))
    if not found:
        raise SystemExit(f"no {library}/build/{library}.min.js under {root}")
    return found[-1]


def template(root: Path) -> str:
    scripts = []
    for library in LIBRARIES:
        code = find_build(root, library).read_text(encoding="utf-8")
        if any(p in code for p in PLACEHOLDERS) or "</script" in code:
            raise SystemExit(f"{library}: cannot be inlined (it contains a DVC placeholder or </script>)")
        scripts.append(f"<script>{code}</script>")
    return PAGE % "\n    ".join(scripts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packages", type=Path, help="folder holding the vega, vega-lite and vega-embed packages")
    parser.add_argument("--out", type=Path, default=Path("plots_template.html"), help="template to write")
    args = parser.parse_args(argv)
    args.out.write_text(template(args.packages), encoding="utf-8")
    print(f"wrote {args.out}: dvc plots show --html-template {args.out}")


if __name__ == "__main__":
    main()
