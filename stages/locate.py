"""Stage `locate@prepare`, `locate@target`: check that a dataset root exists before DVC looks for it.

Run as ``python -m stages.locate SECTION --out JSON`` (SECTION: prepare or target). `prepare` and
`prepare_target` depend on ``${<section>.root}``; when that path is missing, DVC itself stops with a
bare "missing data" path before any stage code runs. This stage runs first (they depend on its
output) and stops with one line naming the parameter instead. It writes ``{"dataset", "root"}``: its
bytes change only with those two parameters, so the prepare stages re-run for nothing else.
A synthetic root is the output of a synthesize stage: DVC builds it, so it is not checked here.
"""

from __future__ import annotations

from pathlib import Path

from reid.config import ConfigError
from reid.data.manifest import PrepareConfig
from reid.io import write_json_atomic
from stages.common import PARAMS_FILE, load_config, run, section, stage_parser

KEYS = ("dataset", "root")
EXAMPLES = {"prepare": "dvc exp run -S prepare.dataset=custom -S prepare.root=mydata/manifest.csv",
            "target": "dvc exp run -S target.dataset=market1501 -S target.root=/path/to/Market-1501"}


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__, out="JSON receipt to write ({dataset, root})")
    parser.add_argument("section", choices=sorted(EXAMPLES), help="params section naming the dataset")
    args = parser.parse_args(argv)
    # Only the two keys it declares in dvc.yaml (the prepare stages check the rest of the section).
    node = section(args.section)
    picked = {k: node[k] for k in KEYS if k in node} if isinstance(node, dict) else node
    cfg = load_config(PrepareConfig, args.section, {args.section: picked})
    if cfg.dataset != "synthetic" and not Path(cfg.root).exists():
        raise ConfigError(f"{PARAMS_FILE}: {args.section}.root: {cfg.root} not found (the {cfg.dataset} dataset's "
                          f"folder or manifest; e.g. {EXAMPLES[args.section]})")
    write_json_atomic(args.out, {"dataset": cfg.dataset, "root": cfg.root})
    print(f"locate@{args.section}: {cfg.dataset} at {cfg.root}")


if __name__ == "__main__":
    run(main)
