"""Helpers for the kill-and-resume tests: a kill at one call, and the step column of DVCLive curves."""

from __future__ import annotations

from pathlib import Path


class Killed(Exception):
    """Stands in for a kill at one point of a training loop."""


def kill_on_call(monkeypatch, module, name: str, call: int) -> None:
    """Make `module.name` raise Killed on its `call`-th call (1-based), and work normally otherwise."""
    real, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise Killed(f"{name} call {call}")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def live_steps(live_dir: Path) -> dict[str, list[int]]:
    """The step column of every DVCLive curve under `live_dir`."""
    return {tsv.stem: [int(row.split("\t")[0]) for row in tsv.read_text().splitlines()[1:]]
            for tsv in sorted((Path(live_dir) / "plots" / "metrics").glob("*.tsv"))}
