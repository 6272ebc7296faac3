"""Rewrite the code deps of every dvc.yaml stage as the import closure of its command.

    python scripts/sync_dvc_deps.py          # rewrite dvc.yaml in place, print what changed
    python scripts/sync_dvc_deps.py --check  # exit 1 if any stage's code deps are not its closure

The closure is what tests/test_dvc_deps.py checks (read statically with `ast`, its own module first,
then the others sorted); data deps (anything outside reid/ and stages/) keep their place after the
code. After moving code between modules, run this instead of editing the lists by hand.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = ROOT / "dvc.yaml"


def _deps_checker():
    spec = importlib.util.spec_from_file_location("dvc_deps_reader", ROOT / "tests" / "test_dvc_deps.py")
    module = importlib.util.module_from_spec(spec)
    # Only its functions are used: skip the module-level DVC load (STAGES = resolved_stages()).
    source = (ROOT / "tests" / "test_dvc_deps.py").read_text().replace("STAGES = resolved_stages()", "STAGES = {}")
    exec(compile(source, str(spec.origin), "exec"), module.__dict__)
    return module


def code_deps(module: str, reader) -> list[str]:
    """The stage module's file first, then the rest of its closure sorted."""
    own = str(reader.module_file(module).relative_to(ROOT))
    return [own] + sorted(str(p) for p in reader.import_closure(module) if str(p) != own)


def stage_modules(dvc_yaml: Path) -> dict[str, str]:
    """Stage name (foreach stages once) -> the module its command runs."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: (body.get("do") or body)["cmd"].split()[2] for name, body in stages.items()}


def synced(text: str, modules: dict[str, str], reader) -> tuple[str, list[str]]:
    """dvc.yaml `text` with each stage's code-dep lines replaced by its closure; the names changed."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    changed: list[str] = []
    stage = None
    i = 0
    while i < len(lines):
        line = lines[i]
        header = re.match(r"^  ([A-Za-z0-9_]+):\s*$", line)
        if header:
            stage = header.group(1)
        out.append(line)
        i += 1
        if stage in modules and re.match(r"^\s+deps:\s*$", line):
            indent = None
            items = []
            while i < len(lines) and re.match(r"^\s+- ", lines[i]):
                indent = indent or lines[i][: len(lines[i]) - len(lines[i].lstrip())]
                items.append(lines[i].strip()[2:].strip())
                i += 1
            code = [d for d in items if d.split("/")[0] in ("reid", "stages")]
            data = [d for d in items if d not in code]
            wanted = code_deps(modules[stage], reader)
            if wanted != code:
                changed.append(stage)
            out.extend(f"{indent}- {d}\n" for d in wanted + data)
    return "".join(out), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report; exit 1 when a stage is out of date")
    args = parser.parse_args(argv)
    text = DVC_YAML.read_text()
    new, changed = synced(text, stage_modules(DVC_YAML), _deps_checker())
    for name in changed:
        print(f"{'out of date' if args.check else 'updated'}: {name}")
    if args.check:
        return 1 if changed else 0
    if new != text:
        tmp = DVC_YAML.with_name(".dvc.yaml.sync.tmp")
        tmp.write_text(new)
        tmp.replace(DVC_YAML)
    return 0


if __name__ == "__main__":
    sys.exit(main())
