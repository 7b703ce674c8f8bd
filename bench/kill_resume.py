"""Interrupt and resume ``make reproduce``: SIGKILL at random moments, resume each time, check what is left.

    python bench/kill_resume.py                       # smoke profile, 10 kills (about 20 minutes on 2 cores)
    python bench/kill_resume.py --kills 3 --target 02_layerwise_allocation   # a short check

Two copies of the working tree (tracked and untracked files; no executed notebooks, tables, figures or
results) are made
in a scratch directory, each with its own dlp_lib cache. The first runs ``make <target>`` once: the
reference, and its wall time T. The second is started and killed with SIGKILL (make, papermill, the
kernel: the whole process tree, nothing can clean up) after a random 2-12% of T, ``--kills`` times; after
each kill every result record and executed notebook must parse, and no notebook may be marked failed.
Then it runs to the end. The tables of both copies must be equal, byte for byte, except the columns (or
key-value rows) that hold seconds or speeds, measured rather than computed, and the count of DSA
candidates a resumed search found cached; which ones is reported. Work redone: the killed
copy's total wall time minus T, and the records written more than once.

Writes ``--out``.json and .md (default bench/results/kill-resume-<profile>). Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dlp_lib.cache import atomic_path, write_json_atomic  # noqa: E402
from dlp_lib.results import hardware, machine_label  # noqa: E402

# column-name parts measured by the clock (or derived from it), which differ between any two runs
TIMED = {"seconds", "second", "ms", "tps", "time", "speedup", "throughput"}
# tables that are live measurements as a whole (notebook 09's sparse products on this CPU)
MEASURED_TABLES = ("speedup_cpu", "speedup_end_to_end")


OUTPUTS = ("notebooks/executed/", "tables/", "figures/")  # what a run writes: not copied


def copy_tree(destination: Path) -> Path:
    """The working tree's tracked and untracked files (not ignored ones, not the committed outputs),
    with their modification times, so make sees the same state as in the checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in (n.decode() for n in listed if n):
        if name.startswith(OUTPUTS) or not (ROOT / name).is_file():
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return destination


def make_command(tree: Path, target: str, profile: str, venv: Path) -> list[str]:
    # -o: the virtual environment is the checkout's and is never rebuilt from the copy
    return ["make", "-C", str(tree), f"VENV={venv}", "-o", f"{venv}/.installed", target, f"PROFILE={profile}"]


def environment(tree: Path, cache: Path) -> dict:
    env = dict(os.environ, DLP_CACHE_DIR=str(cache), PYTHONPATH=str(tree))  # the copy's dlp_lib
    env.pop("MAKEFLAGS", None)
    return env


def kill_tree(process: subprocess.Popen) -> int:
    """SIGKILL the process and every descendant (jupyter starts kernels in their own session)."""
    try:
        victims = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        victims = []
    for victim in victims:
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    process.wait()
    psutil.wait_procs(victims, timeout=10)
    return len(victims)


def run(command, env, log, seconds: float | None = None) -> tuple[float, bool, int]:
    """Run ``command``; with ``seconds``, SIGKILL its tree then. Returns (wall seconds, finished, status)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        status = process.wait(timeout=seconds)
        return time.perf_counter() - start, True, status
    except subprocess.TimeoutExpired:
        kill_tree(process)
        return time.perf_counter() - start, False, -signal.SIGKILL


def damaged_files(tree: Path) -> list[str]:
    """Result records and executed notebooks that do not parse, notebooks marked failed, and executed
    notebooks in which a cell never ran (a killed papermill's copy that make would take as done)."""
    bad = []
    for path in sorted((tree / "results").rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(tree / "results").parts):
            continue  # a writer's temporary (atomic_path), never read as a record
        try:
            json.loads(path.read_text())
        except (OSError, ValueError):
            bad.append(str(path.relative_to(tree)))
    executed = tree / "notebooks" / "executed"
    for path in sorted(executed.glob("*.ipynb")) if executed.is_dir() else []:
        if path.name.startswith("."):
            continue  # papermill's partial copy (Makefile): never taken as done, redone on resume
        if path.name.endswith(".failed.ipynb"):
            bad.append(str(path.relative_to(tree)))
            continue
        try:
            cells = json.loads(path.read_text())["cells"]
        except (OSError, ValueError, KeyError):
            bad.append(str(path.relative_to(tree)))
            continue
        if any(c["cell_type"] == "code" and c.get("execution_count") is None for c in cells):
            bad.append(f"{path.relative_to(tree)} (not every cell ran)")
    return bad


def partial_notebooks(tree: Path) -> list[str]:
    """The hidden copies a killed papermill left; make ignores them and runs the notebook again."""
    return sorted(p.name for p in (tree / "notebooks" / "executed").glob(".*.partial.ipynb"))


def record_times(tree: Path) -> dict[str, int]:
    """Each visible record's inode and modification time: a change means it was written again."""
    out = {}
    for path in (tree / "results").rglob("*.json"):
        if not any(part.startswith(".") for part in path.relative_to(tree / "results").parts):
            stat = path.stat()
            out[str(path.relative_to(tree))] = (stat.st_ino, stat.st_mtime_ns)
    return out


def leftover_temporaries(tree: Path) -> list[str]:
    return sorted(str(p.relative_to(tree)) for p in (tree / "results").rglob(".*.tmp.*"))


# columns that count what a resumed run found already done (DSA candidates read from the cache)
RESUME_COLUMNS = {"from_cache"}


def _timed(label) -> bool:
    """A column (``prune_seconds``) or a key-value row (``evaluation seconds``) measured by the clock."""
    return bool(TIMED & set(str(label).lower().replace(" ", "_").split("_")))


def _without_measured(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The frame without its timed and resume-bookkeeping columns, and without key-value rows whose
    key is timed; also the names of what was dropped."""
    dropped = [c for c in frame.columns if _timed(c) or c in RESUME_COLUMNS]
    frame = frame.drop(columns=dropped)
    if len(frame.columns) and not pd.api.types.is_numeric_dtype(frame[frame.columns[0]]):
        rows = frame[frame.columns[0]].map(_timed)
        dropped += [f"row '{k}'" for k in frame.loc[rows, frame.columns[0]]]
        frame = frame.loc[~rows]
    return frame.reset_index(drop=True), dropped


def compare_tables(reference: Path, killed: Path) -> dict:
    """Every table of the reference against the killed copy's: byte-equal, or (CSV) equal once the
    columns measured by the clock are dropped. Markdown/LaTeX renderings of a table with timed columns
    are judged by its CSV."""
    equal, equal_untimed, different, missing = [], {}, [], []
    timed_stems = set()
    for path in sorted((reference / "tables").iterdir()):
        other = killed / "tables" / path.name
        if not other.is_file():
            missing.append(path.name)
        elif path.read_bytes() == other.read_bytes():
            equal.append(path.name)
        elif path.stem in MEASURED_TABLES:
            equal_untimed[path.name] = "a live measurement as a whole"
        elif path.suffix == ".csv":
            (a, timed), (b, _) = _without_measured(pd.read_csv(path)), _without_measured(pd.read_csv(other))
            if a.equals(b):
                equal_untimed[path.name] = timed
                timed_stems.add(path.stem)
            else:
                different.append(path.name)
        else:
            different.append(path.name)
    for name in list(different):  # an .md/.tex whose CSV differs only in timed columns
        if Path(name).suffix in (".md", ".tex", ".json") and Path(name).stem in timed_stems:
            different.remove(name)
            equal_untimed[name] = "rendering of the CSV above"
    return {"equal": equal, "equal_without_timed_columns": equal_untimed, "different": different, "missing": missing}


def kill_and_resume(
    kills: int = 10,
    target: str = "reproduce",
    profile: str = "smoke",
    seed: int = 0,
    scratch: Path | None = None,
    fractions: list[float] | None = None,
) -> dict:
    """The whole check (see the module docstring); ``fractions`` fixes each attempt's lifetime as a
    fraction of the reference's wall time instead of drawing it from ``seed``."""
    venv = ROOT / ".venv"
    rng = random.Random(seed)
    if fractions is not None:
        kills = len(fractions)
    scratch = Path(scratch or tempfile.mkdtemp(prefix="kill-resume-"))
    reference = copy_tree(scratch / "reference")
    killed = copy_tree(scratch / "killed")
    logs = scratch / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    with open(logs / "reference.log", "w") as log:
        print(f"reference: make {target} PROFILE={profile} in {reference}", flush=True)
        t_ref, finished, status = run(
            make_command(reference, target, profile, venv), environment(reference, scratch / "cache-ref"), log
        )
    if status != 0:
        raise SystemExit(f"the reference run failed (status {status}); see {logs / 'reference.log'}")
    print(f"reference: {t_ref:.0f} s", flush=True)

    attempts, writes, seen = [], {}, {}
    env = environment(killed, scratch / "cache-killed")
    command = make_command(killed, target, profile, venv)
    for index in range(kills + 1):
        last = index == kills
        fraction = rng.uniform(0.02, 0.12) if fractions is None else (None if last else fractions[index])
        budget = None if last else fraction * t_ref
        with open(logs / f"attempt-{index:02d}.log", "w") as log:
            seconds, finished, status = run(command, env, log, budget)
        damaged = damaged_files(killed)
        for name, stamp in record_times(killed).items():
            if seen.get(name) != stamp:
                writes[name] = writes.get(name, 0) + 1
                seen[name] = stamp
        attempts.append(
            {
                "attempt": index,
                "kill_after_s": None if budget is None else round(budget, 1),
                "seconds": round(seconds, 1),
                "finished": finished,
                "status": status,
                "records": len(seen),
                "damaged": damaged,
                "partial_notebooks": partial_notebooks(killed),
            }
        )
        what = "finished" if finished else "killed"
        print(f"attempt {index}: {what} after {seconds:.0f} s, {len(seen)} records, damaged {damaged}", flush=True)
        if finished:
            if status != 0:
                raise SystemExit(f"attempt {index} failed (status {status}); see {logs}/attempt-{index:02d}.log")
            if not last:  # it finished before its kill: the remaining kills have nothing to interrupt
                break
    total = sum(a["seconds"] for a in attempts)
    tables = compare_tables(reference, killed)
    result = {
        "target": target,
        "profile": profile,
        "seed": seed,
        "kills": sum(not a["finished"] for a in attempts),
        "reference_seconds": round(t_ref, 1),
        "killed_total_seconds": round(total, 1),
        "redone_seconds": round(total - t_ref, 1),
        "records": len(seen),
        "records_written_twice": sorted(n for n, count in writes.items() if count > 1),
        "damaged_after_a_kill": sorted({d for a in attempts for d in a["damaged"]}),
        "leftover_temporaries": leftover_temporaries(killed),
        "tables": tables,
        "attempts": attempts,
        "machine": machine_label(hardware()),
        "scratch": str(scratch),
    }
    result["ok"] = bool(
        result["kills"] > 0
        and not result["damaged_after_a_kill"]
        and not tables["different"]
        and not tables["missing"]
        and len(record_times(reference)) == len(seen)
    )
    return result


def markdown(result: dict) -> str:
    tables = result["tables"]
    timed = "; ".join(f"`{k}` ({v if isinstance(v, str) else ', '.join(v) or 'no column'})"
                      for k, v in tables["equal_without_timed_columns"].items())  # fmt: skip
    out = io.StringIO()
    out.write(f"# Kill and resume: `make {result['target']} PROFILE={result['profile']}`\n\n")
    out.write(f"Machine: {result['machine']}. `python bench/kill_resume.py --kills {result['kills']} "
              f"--target {result['target']} --profile {result['profile']} --seed {result['seed']}`.\n\n")  # fmt: skip
    out.write(f"- **{result['kills']} SIGKILLs** (make, papermill and kernel), each after a random 2-12% of the "
              f"uninterrupted run's {result['reference_seconds'] / 60:.1f} min, then a run to the end.\n")  # fmt: skip
    out.write(f"- Damaged files after a kill (unparsable records or notebooks, failed notebooks): "
              f"**{len(result['damaged_after_a_kill'])}**. Leftover writer temporaries at the end: "
              f"{len(result['leftover_temporaries'])}.\n")  # fmt: skip
    out.write(f"- Records: {result['records']} (the reference has as many); written more than once: "
              f"{len(result['records_written_twice'])}.\n")  # fmt: skip
    out.write(f"- Tables: {len(tables['equal'])} byte-identical to the uninterrupted run's; "
              f"{len(tables['equal_without_timed_columns'])} identical but for measured seconds/speeds ({timed}); "
              f"different: {tables['different'] or 'none'}; missing: {tables['missing'] or 'none'}.\n")  # fmt: skip
    out.write(f"- Work redone: the killed copy took {result['killed_total_seconds'] / 60:.1f} min in all against "
              f"{result['reference_seconds'] / 60:.1f} min uninterrupted: **{result['redone_seconds'] / 60:.1f} min "
              f"redone** (each restart's kernel start, model load and the run it was in).\n\n")  # fmt: skip
    out.write("| attempt | killed after (s) | ran (s) | records after | damaged | hidden partial notebook left |\n")
    out.write("|---:|---:|---:|---:|---|---|\n")
    for a in result["attempts"]:
        kill = "runs to the end" if a["kill_after_s"] is None else f"{a['kill_after_s']:.0f}"
        damaged = ", ".join(a["damaged"]) or "–"
        partial = ", ".join(a.get("partial_notebooks", [])) or "–"
        out.write(f"| {a['attempt']} | {kill} | {a['seconds']:.0f} | {a['records']} | {damaged} | {partial} |\n")
    out.write(f"\nVerdict: {'pass' if result['ok'] else 'FAIL'}.\n")
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs before the run to the end (default: 10)")
    parser.add_argument("--target", default="reproduce", help="make target (default: reproduce)")
    parser.add_argument("--profile", default="smoke", help="experiment profile (default: smoke)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default: 0)")
    parser.add_argument("--scratch", default=None, help="scratch directory (default: a new temporary one)")
    parser.add_argument("--out", default=None, help="output stem (default: bench/results/kill-resume-<profile>)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    result = kill_and_resume(args.kills, args.target, args.profile, args.seed, args.scratch)
    stem = Path(args.out or ROOT / "bench" / "results" / f"kill-resume-{args.profile}")
    write_json_atomic(stem.with_suffix(".json"), result)
    with atomic_path(stem.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(result))
    print(markdown(result))
    if not args.keep and args.scratch is None:
        shutil.rmtree(result["scratch"], ignore_errors=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
