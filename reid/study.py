"""Seed study: the same models trained with several seeds, summarised as mean ± sd and per-seed claims.

Two halves. The aggregation is pure (plain dicts in, plain dicts out): ``study_document`` builds
metrics/study.json, ``study_markdown`` metrics/study.md. The driver, ``run_study`` (entry point
``python -m stages.study``, ``make study``), runs one DVC experiment per training seed and reads each
experiment's committed metrics/<model>.json and metrics/claims.json:

1. queues one experiment per seed, ``dvc exp run --queue -S train.seed=<s> -n study-seed<s>-<tag>``
   (``<tag>``: this invocation's UTC time, so names never collide with earlier studies or with
   failed queue entries, which keep their names in ``dvc queue status``);
2. ``dvc queue start -j 1`` (one worker: one training at a time on a 2-core machine);
3. polls ``dvc queue status`` until each of its experiments is Success or Failed (a failure is
   named with its ``dvc queue logs <name>`` hint, and nothing is written);
4. finds each experiment's commit (``refs/exps/<baseline[:2]>/<baseline[2:]>/<name>``), reads
   ``metrics/<model>.json`` (models: the experiment's ``report.models``) and ``metrics/claims.json``
   there with ``git show``, and writes metrics/study.json and metrics/study.md (the aggregation above).

Queued experiments run in temporary copies under .dvc/tmp/exps: the workspace is left as it is
(no ``dvc exp apply``). Stages upstream of training keep their params and match the baseline's
dvc.lock, so they are skipped (cached outputs checked out from the DVC cache); train@*,
features@*, evaluate@* and report re-run. Commit ``make repro``'s dvc.lock and metrics first:
uncommitted changes to git-tracked files go into every experiment (DVC stashes the workspace),
untracked files do not, so a stage whose ``cache: false`` output is untracked re-runs in every
experiment, and one depending on an untracked file fails. The driver warns about untracked files. (train@*
never enters DVC's run cache, its outputs being ``persist``/``cache: false``: a repeated study
trains again.)

The experiments stay in the repository (``dvc exp list``; remove with ``dvc exp remove``). After an
interruption, ``python -m stages.study --resume <tag> SEED ...`` waits for and collects the
experiments of that earlier invocation without queueing new ones.

A study records the state of the work tree it ran from: uncommitted changes to tracked files would go
into every experiment while study.json names the base commit, so the driver refuses them unless
``allow_dirty``, and then records ``dirty: true`` with the sha256 of ``git diff HEAD``.

A seed study measures run-to-run spread on one machine; float kernels differ across CPUs, so a
study on another machine can differ by more than its sd (see the README).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reid.io import write_json_atomic, write_text_atomic
from reid.modeling import MODEL_NAMES  # an experiment without report.models reports them all

# metrics/<model>.json keys summarised per model -> their names in metrics/study.json.
STUDY_METRICS = {"rank1_pct": "rank1_pct", "mAP_pct": "map_pct", "mINP_pct": "minp_pct"}
# The markdown table's columns: (header, study.json key).
MARKDOWN_METRICS = (("Rank-1", "rank1_pct"), ("mAP", "map_pct"))
# The pretrained trunk is evaluated without training: its numbers do not depend on train.seed.
SEED_INDEPENDENT_MODELS = frozenset({"pretrained"})


def _number(value: Any) -> float | None:
    """A finite float, or None for a missing / non-numeric / NaN value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def summarize(values: Sequence[float | None], digits: int = 4) -> dict[str, Any]:
    """``{"values", "mean", "sd", "n"}`` of per-seed values; None entries (a seed without the value)
    are kept in ``values`` and left out of the statistics. sd is the sample sd (ddof=1): None below
    two values."""
    present = [v for v in values if v is not None]
    mean = round(statistics.fmean(present), digits) if present else None
    sd = round(statistics.stdev(present), digits) if len(present) >= 2 else None
    return {"values": list(values), "mean": mean, "sd": sd, "n": len(present)}


def _ordered_union(keys: Sequence[Sequence[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for group in keys:
        for k in group:
            seen.setdefault(k, None)
    return list(seen)


def aggregate_models(per_seed: Sequence[Mapping[str, Mapping[str, Any]]],
                     metrics: Mapping[str, str] = STUDY_METRICS) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {name: summarize(per-seed values)}}`` from one ``{model: metrics dict}`` per seed, for
    each metrics-file key -> study name in `metrics`.

    Models keep their first-seen order; seed-independent models (``pretrained``) are skipped."""
    models = [m for m in _ordered_union([list(s) for s in per_seed]) if m not in SEED_INDEPENDENT_MODELS]
    return {m: {name: summarize([_number(s.get(m, {}).get(key)) for s in per_seed]) for key, name in metrics.items()}
            for m in models}


def aggregate_claims(per_seed: Sequence[Mapping[str, Any] | None]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{claim: {metric: {"delta", "verdicts", "mean_delta", "sd_delta", "n_holds"}}}`` from one
    metrics/claims.json document per seed (None: that seed has none). ``delta`` / ``verdicts`` hold
    one entry per seed, None where the seed lacks the claim; ``n_holds`` counts "holds" verdicts."""
    rows: list[dict[tuple[str, str], Mapping[str, Any]]] = []
    for doc in per_seed:
        by_key: dict[tuple[str, str], Mapping[str, Any]] = {}
        for c in (doc or {}).get("claims", []) or []:
            by_key.setdefault((str(c["claim"]), str(c["metric"])), c)
        rows.append(by_key)
    keys = _ordered_union([list(r) for r in rows])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for claim, metric in keys:
        found = [r.get((claim, metric)) for r in rows]
        deltas = [_number(c.get("delta")) if c else None for c in found]
        verdicts = [c.get("verdict") if c else None for c in found]
        stats = summarize(deltas)
        out.setdefault(claim, {})[metric] = {
            "delta": deltas, "verdicts": verdicts, "mean_delta": stats["mean"], "sd_delta": stats["sd"],
            "n_holds": sum(v == "holds" for v in verdicts)}
    return out


def study_document(seeds: Sequence[int], experiments: Mapping[int, str],
                   model_metrics: Sequence[Mapping[str, Mapping[str, Any]]],
                   claims: Sequence[Mapping[str, Any] | None], **extra: Any) -> dict[str, Any]:
    """metrics/study.json. `model_metrics[i]` / `claims[i]` belong to `seeds[i]`; `experiments` maps a
    seed to its DVC experiment (name or rev); `extra` keys (e.g. ``baseline``) are added verbatim."""
    if not (len(seeds) == len(model_metrics) == len(claims)):
        raise ValueError(f"{len(seeds)} seeds but {len(model_metrics)} metrics and {len(claims)} claims entries")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"duplicate seeds in {list(seeds)}")
    doc = {"seeds": list(seeds), "experiments": {str(s): experiments[s] for s in seeds},
           "models": aggregate_models(model_metrics), "claims": aggregate_claims(claims)}
    doc.update(extra)
    return doc


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _fmt_mean_sd(stats: Mapping[str, Any]) -> str:
    if stats.get("mean") is None:
        return "—"
    return _fmt(stats["mean"]) if stats.get("sd") is None else f"{_fmt(stats['mean'])} ± {_fmt(stats['sd'])}"


def _fmt_delta(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}"


def study_markdown(doc: Mapping[str, Any]) -> str:
    """metrics/study.md: per model mean ± sd over seeds, then every claim's Δ and verdict per seed."""
    seeds = doc["seeds"]
    lines = [f"Seed study over `train.seed` ∈ {{{', '.join(str(s) for s in seeds)}}} "
             f"({len(seeds)} runs; mean ± sample sd, in %).", "",
             "| model | " + " | ".join(f"{h} mean ± sd" for h, _ in MARKDOWN_METRICS) + " |",
             "|---|" + "---|" * len(MARKDOWN_METRICS)]
    for model, stats in doc["models"].items():
        lines.append(f"| `{model}` | " + " | ".join(_fmt_mean_sd(stats.get(k, {})) for _, k in MARKDOWN_METRICS)
                     + " |")
    if doc.get("claims"):
        lines += ["", f"Δ in points (A − B), seeds in the order {', '.join(str(s) for s in seeds)}.", "",
                  "| claim | metric | Δ per seed | mean Δ | verdicts per seed |", "|---|---|---|---|---|"]
        for claim, by_metric in doc["claims"].items():
            for metric, c in by_metric.items():
                deltas = ", ".join(_fmt_delta(d) for d in c["delta"])
                verdicts = ", ".join(v or "—" for v in c["verdicts"])
                lines.append(f"| {claim} | {metric} | {deltas} | {_fmt_delta(c['mean_delta'])} | {verdicts} |")
    return "\n".join(lines) + "\n"


# --- the driver: one DVC experiment per seed -------------------------------------------------------

DEFAULT_SEEDS = (0, 1, 2)
SEED_PARAM = "train.seed"
CLAIMS_FILE = "metrics/claims.json"
TERMINAL = ("Success", "Failed")
STATUSES = ("Queued", "Running", "Success", "Failed")


def default_tag(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%d-%H%M%S")


def exp_name(seed: int, tag: str) -> str:
    """The experiment of `seed` in the study tagged `tag` (a valid git ref component)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", tag) or ".." in tag or tag.endswith((".", ".lock")):
        raise ValueError(f"tag {tag!r} is not usable in an experiment name (letters, digits, '-', '_', '.')")
    return f"study-seed{seed}-{tag}"


def queue_commands(seeds: Sequence[int], tag: str, dvc: str = "dvc", param: str = SEED_PARAM) -> list[list[str]]:
    """One ``dvc exp run --queue`` command line per seed."""
    return [[dvc, "exp", "run", "--queue", "-S", f"{param}={s}", "-n", exp_name(s, tag)] for s in seeds]


def start_command(dvc: str = "dvc", jobs: int = 1) -> list[str]:
    return [dvc, "queue", "start", "-j", str(jobs)]


def status_command(dvc: str = "dvc") -> list[str]:
    return [dvc, "queue", "status"]


def logs_command(name: str, dvc: str = "dvc") -> list[str]:
    return [dvc, "queue", "logs", name]


@dataclass
class QueueStatus:
    """``dvc queue status``, parsed: each named task's status (the last row wins for a repeated
    name) and the worker counts."""

    tasks: dict[str, str] = field(default_factory=dict)
    active: int = 0
    idle: int = 0

    @property
    def workers(self) -> int:
        return self.active + self.idle


_WORKERS = re.compile(r"Worker status:\s*(\d+)\s+active,\s*(\d+)\s+idle")


def parse_queue_status(text: str) -> QueueStatus:
    """Parse the table DVC 3.x prints: ``Task  Name  Created  Status`` rows (Created is ``02:12 AM``
    today, ``Dec 01, 2026`` before; Name may be empty), then ``Worker status: A active, I idle``."""
    out = QueueStatus()
    for line in text.splitlines():
        if m := _WORKERS.search(line):
            out.active, out.idle = int(m.group(1)), int(m.group(2))
            continue
        tokens = line.split()
        if len(tokens) >= 3 and re.fullmatch(r"[0-9a-f]{7,40}", tokens[0]) and tokens[-1] in STATUSES:
            name = tokens[1]
            if re.fullmatch(r"\d{1,2}:\d{2}|[A-Z][a-z]{2}|-", name):  # no name: the Created column follows
                continue
            out.tasks[name] = tokens[-1]
    return out


def exp_refs(refs_text: str) -> dict[str, list[str]]:
    """``{experiment name: [commit, ...]}`` from ``git for-each-ref refs/exps --format='%(objectname)
    %(refname)'``. Experiment refs are ``refs/exps/<2 hex>/<38 hex>/<name>``; DVC's own bookkeeping
    refs (``refs/exps/celery/...``, ``refs/exps/exec/...``) are skipped."""
    out: dict[str, list[str]] = {}
    for line in refs_text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        rev, ref = parts
        segs = ref.split("/")
        if len(segs) == 5 and segs[:2] == ["refs", "exps"] and re.fullmatch(r"[0-9a-f]{2}", segs[2]) \
                and re.fullmatch(r"[0-9a-f]{38}", segs[3]):
            out.setdefault(segs[4], []).append(rev)
    return out


def dotted(mapping: Any, key: str) -> Any:
    node = mapping
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


class StudyError(RuntimeError):
    """A failed or missing experiment, or a queue that stopped working."""


def _now() -> str:
    return dt.datetime.now().strftime("%H:%M:%S")


def say(text: str) -> None:
    """Progress on stdout, flushed (make and pipes would buffer it)."""
    print(text, flush=True)


class Dvc:
    """Runs dvc and git in `repo`, echoing what it runs."""

    def __init__(self, repo: Path, dvc: str, echo: Callable[[str], None] = say):
        self.repo, self.dvc, self.echo = repo, dvc, echo
        self.env = {**os.environ, "DVC_NO_ANALYTICS": "1"}

    def run(self, cmd: Sequence[str], *, quiet: bool = False, check: bool = True) -> subprocess.CompletedProcess:
        if not quiet:
            self.echo("$ " + " ".join(cmd))
        # Output goes through files, not pipes: `dvc queue start` leaves a detached worker holding the
        # child's stdout/stderr, and reading a pipe to EOF would wait until that worker exits.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            code = subprocess.run(list(cmd), cwd=self.repo, env=self.env, stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=err).returncode
            out.seek(0)
            err.seek(0)
            proc = subprocess.CompletedProcess(list(cmd), code, out.read(), err.read())
        if not quiet:
            for line in (proc.stdout + proc.stderr).strip().splitlines():
                self.echo("  " + line)
        if check and proc.returncode != 0:
            detail = "" if not quiet else "\n" + (proc.stdout + proc.stderr).strip()
            raise StudyError(f"`{' '.join(cmd)}` failed with exit status {proc.returncode}{detail}")
        return proc

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["git", *args], quiet=True, check=check)

    def queue_status(self) -> QueueStatus:
        return parse_queue_status(self.run(status_command(self.dvc), quiet=True).stdout)

    def refs(self) -> dict[str, list[str]]:
        return exp_refs(self.git("for-each-ref", "refs/exps", "--format=%(objectname) %(refname)").stdout)

    def show(self, rev: str, path: str) -> str | None:
        proc = self.git("show", f"{rev}:{path}", check=False)
        return proc.stdout if proc.returncode == 0 else None


def wait_for(runner: Dvc, names: Sequence[str], *, poll_s: float, stall_s: float, jobs: int,
             max_restarts: int = 2, sleep: Callable[[float], None] = time.sleep) -> dict[str, str]:
    """Poll until every experiment in `names` is Success or Failed; ``{name: status}``.

    A name missing from ``dvc queue status`` counts as Success once its experiment ref exists, and
    is an error after `stall_s` seconds otherwise. When one of ours is unfinished and no worker
    has been seen for `stall_s` seconds, a worker is started again (at most `max_restarts` times)."""
    echo = runner.echo
    seen: dict[str, str] = {}
    start = last_worker = last_beat = time.monotonic()
    missing_since: float | None = None
    restarts = 0
    while True:
        status = runner.queue_status()
        refs = runner.refs() if any(n not in status.tasks for n in names) else {}
        current = {n: status.tasks.get(n) or ("Success" if n in refs else "Missing") for n in names}
        for n, s in current.items():
            if seen.get(n) != s:
                echo(f"[{_now()}] {n}: {s}")
        seen = current
        if all(s in TERMINAL for s in current.values()):
            return current
        pending = [n for n, s in current.items() if s not in TERMINAL]
        now = time.monotonic()
        if "Missing" in current.values():
            missing_since = now if missing_since is None else missing_since
            if now - missing_since >= stall_s:
                lost = [n for n, s in current.items() if s == "Missing"]
                raise StudyError(f"{', '.join(lost)} neither in `dvc queue status` nor in refs/exps "
                                 f"for {now - missing_since:.0f} s")
        else:
            missing_since = None
        if status.workers:
            last_worker = now
        elif now - last_worker >= stall_s:
            if restarts >= max_restarts:
                raise StudyError(f"no queue worker for {now - last_worker:.0f} s while {', '.join(pending)} "
                                 "did not finish; see `dvc queue status` and `dvc queue logs <name>`")
            restarts += 1
            echo(f"[{_now()}] no queue worker for {now - last_worker:.0f} s: starting one ({restarts}/{max_restarts})")
            runner.run(start_command(runner.dvc, jobs))
            last_worker = now
        if now - last_beat >= 300:
            counts = {s: sum(v == s for v in current.values()) for s in STATUSES + ("Missing",)}
            echo(f"[{_now()}] waiting, {(now - start) / 60:.0f} min so far: "
                 + ", ".join(f"{c} {s.lower()}" for s, c in counts.items() if c))
            last_beat = now
        sleep(poll_s)


def collect(runner: Dvc, seeds: Sequence[int], names: Sequence[str], param: str = SEED_PARAM
            ) -> tuple[dict[int, str], list[dict[str, dict]], list[dict | None]]:
    """Per seed: the experiment's commit, and ``{model: metrics}`` and claims.json (None if absent)
    read from that commit. Raises StudyError for a missing experiment or one
    whose params do not hold its seed."""
    refs = runner.refs()
    revs: dict[int, str] = {}
    model_metrics: list[dict[str, dict]] = []
    claims: list[dict | None] = []
    for seed, name in zip(seeds, names, strict=True):
        found = refs.get(name, [])
        if len(found) != 1:
            raise StudyError(f"experiment {name}: expected one ref refs/exps/.../{name}, found {len(found)}")
        rev = revs[seed] = found[0]
        params = yaml.safe_load(runner.show(rev, "params.yaml") or "") or {}
        if dotted(params, param) != seed:
            raise StudyError(f"experiment {name} ({rev[:7]}): {param} is {dotted(params, param)!r}, expected {seed}")
        models = [m for m in dotted(params, "report.models") or MODEL_NAMES if m not in SEED_INDEPENDENT_MODELS]
        metrics: dict[str, dict] = {}
        for m in models:
            text = runner.show(rev, f"metrics/{m}.json")
            if text is None:
                runner.echo(f"warning: {name} ({rev[:7]}) has no metrics/{m}.json")
                continue
            metrics[m] = json.loads(text)
        text = runner.show(rev, CLAIMS_FILE)
        if text is None:
            runner.echo(f"warning: {name} ({rev[:7]}) has no {CLAIMS_FILE}")
        claims.append(None if text is None else json.loads(text))
        model_metrics.append(metrics)
        runner.echo(f"collected seed {seed}: {name} at {rev[:7]} ({', '.join(metrics) or 'no models'})")
    return revs, model_metrics, claims


def default_dvc() -> str:
    """dvc beside this interpreter (the project's virtualenv), else the one on PATH."""
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.is_file() else (shutil.which("dvc") or "dvc")


def work_tree_state(runner: Dvc, *, allow_dirty: bool) -> dict[str, Any]:
    """``{"dirty": False}``, or, when tracked files differ from HEAD and `allow_dirty`, ``{"dirty": True,
    "diff_sha256": sha256 of `git diff HEAD --binary`}``; without `allow_dirty` such changes are refused."""
    changed = [line for line in runner.git("status", "--porcelain", "--untracked-files=no").stdout.splitlines() if line]
    if not changed:
        return {"dirty": False}
    if not allow_dirty:
        raise StudyError("uncommitted changes to tracked files would go into every experiment while study.json "
                         "names the base commit; commit them first, or pass --allow-dirty to record them "
                         "(dirty: true and the diff's sha256):\n  " + "\n  ".join(changed))
    diff = runner.run(["git", "diff", "HEAD", "--binary"], quiet=True).stdout
    runner.echo(f"warning: uncommitted changes to tracked files go into every experiment (recorded): {len(changed)} file(s)")
    return {"dirty": True, "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()}


def run_study(seeds: Sequence[int], *, repo: Path = Path("."), out_dir: Path = Path("metrics"), tag: str | None = None,
              resume: bool = False, allow_dirty: bool = False, dvc: str | None = None, jobs: int = 1,
              poll_s: float = 20.0, stall_s: float = 120.0, param: str = SEED_PARAM,
              echo: Callable[[str], None] = say) -> dict[str, Any]:
    """The whole study (see the module docstring); returns the study document it wrote."""
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one: {seeds}")
    tag = tag or default_tag()
    names = [exp_name(s, tag) for s in seeds]
    runner = Dvc(Path(repo), dvc or default_dvc(), echo)
    baseline = runner.git("rev-parse", "HEAD").stdout.strip()
    echo(f"seed study {tag}: {param} in {seeds}, baseline {baseline[:7]}, experiments {', '.join(names)}")
    tree = work_tree_state(runner, allow_dirty=allow_dirty)  # on --resume too: the tree the experiments came from

    if not resume:
        status_lines = runner.git("status", "--porcelain", "--untracked-files=all").stdout.splitlines()
        untracked = [line[3:] for line in status_lines if line.startswith("??")]
        if untracked:
            shown = untracked[:20] + ([f"... and {len(untracked) - 20} more"] if len(untracked) > 20 else [])
            echo("warning: untracked files are left out of the experiments (a stage that depends on one fails "
                 "there; one whose `cache: false` output is untracked re-runs there):\n  " + "\n  ".join(shown))
        existing = runner.refs()
        clash = [n for n in names if n in existing]
        if clash:
            raise StudyError(f"experiments {clash} exist already: pick another --tag, or --resume {tag}")
        for cmd in queue_commands(seeds, tag, runner.dvc, param):
            runner.run(cmd)
    status = runner.queue_status()
    others = [n for n, s in status.tasks.items() if s == "Queued" and n not in names]
    if others:
        echo(f"note: the queue also holds other queued experiments, which the worker runs too: {', '.join(others)}")
    if any(status.tasks.get(n) in ("Queued", None) for n in names):
        if status.workers:  # a second worker would train two models at once on 2 cores
            echo(f"a queue worker is running already ({status.active} active, {status.idle} idle): "
                 "it takes these experiments too")
        else:
            runner.run(start_command(runner.dvc, jobs))

    try:
        final = wait_for(runner, names, poll_s=poll_s, stall_s=stall_s, jobs=jobs)
    except KeyboardInterrupt:
        echo(f"\ninterrupted: the queued experiments keep running; collect them later with "
             f"`python -m stages.study --resume {tag} {' '.join(map(str, seeds))}`")
        raise
    failed = [n for n in names if final[n] != "Success"]
    if failed:
        raise StudyError("experiments failed: " + "; ".join(
            f"{n} (see `{' '.join(logs_command(n))}`)" for n in failed) + ". metrics/study.* not written.")

    revs, model_metrics, claims = collect(runner, seeds, names, param)
    doc = study_document(seeds, dict(zip(seeds, names, strict=True)), model_metrics, claims, baseline=baseline, tag=tag,
                         param=param, revs={str(s): revs[s] for s in seeds}, **tree)
    out_dir = Path(repo) / out_dir
    write_json_atomic(out_dir / "study.json", doc)
    markdown = study_markdown(doc)
    write_text_atomic(out_dir / "study.md", markdown)
    echo(f"wrote {out_dir / 'study.json'} and {out_dir / 'study.md'}\n")
    echo(markdown)
    return doc
