"""Seed study entry point: ``make study`` = ``python -m stages.study [SEED ...]`` (default seeds 0 1 2).

Queues one DVC experiment per ``train.seed``, waits for them and writes metrics/study.json and
metrics/study.md; the driver and what it does are in `reid.study`. ``--resume TAG`` collects an
earlier invocation's experiments; ``--allow-dirty`` runs with (and records) uncommitted changes.
"""

from __future__ import annotations

import argparse
import sys

from reid.study import (
    DEFAULT_SEEDS,
    StudyError,
    default_tag,
    exp_name,
    queue_commands,
    run_study,
    start_command,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seeds", nargs="*", type=int, default=list(DEFAULT_SEEDS),
                        help=f"training seeds (default {' '.join(map(str, DEFAULT_SEEDS))})")
    parser.add_argument("--tag", help="experiment name suffix (default: the UTC time, YYYYmmdd-HHMMSS)")
    parser.add_argument("--resume", metavar="TAG", help="queue nothing: wait for and collect the study tagged TAG")
    parser.add_argument("--jobs", type=int, default=1, help="queue workers (default 1)")
    parser.add_argument("--poll", type=float, default=20.0, help="seconds between `dvc queue status` polls")
    parser.add_argument("--dvc", default=None, help="the dvc executable (default: beside this python, else PATH)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run with uncommitted changes to tracked files (recorded in study.json as dirty: true)")
    parser.add_argument("--dry-run", action="store_true", help="print the queue commands and stop")
    args = parser.parse_args(argv)
    if args.resume and args.tag:
        parser.error("--resume names the tag; do not give --tag too")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"seeds must be distinct: {args.seeds}")
    tag = args.resume or args.tag or default_tag()
    try:
        exp_name(0, tag)
    except ValueError as exc:
        parser.error(str(exc))
    if args.dry_run:
        dvc = args.dvc or "dvc"
        for cmd in [*queue_commands(args.seeds, tag, dvc), start_command(dvc, args.jobs)]:
            print(" ".join(cmd))
        return 0
    try:
        run_study(args.seeds, tag=tag, resume=bool(args.resume), allow_dirty=args.allow_dirty, dvc=args.dvc,
                  jobs=args.jobs, poll_s=args.poll)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
