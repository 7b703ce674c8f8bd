"""What ``make reproduce`` costs on a fresh clone, and whether its tables agree with the committed ones.

    python bench/fresh_reproduce.py                 # quick profile, about 35-40 minutes on 2 cores
    python bench/fresh_reproduce.py --profile smoke # a few minutes

Clones the repository's HEAD into a scratch directory and runs, with a new empty dlp_lib cache
(``DLP_CACHE_DIR``), ``make venv`` (the environment, timed on its own) and then ``make reproduce
PROFILE=<profile>`` under ``/usr/bin/time -v`` (wall time and peak resident memory of the whole tree of
processes' largest one). Each notebook's seconds are papermill's, read from the executed copies. For the
quick profile the fresh tables are then compared with the committed ones cell by cell within the
committed reproduction tolerance (``make check-reproduction``'s check).

Writes ``--out``.json and .md (default ``bench/results/reproduce-<profile>-<cpu>``): the commit, the
command, the machine, the times, the check. Exit status 1 if ``make`` fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dlp_lib.cache import atomic_path, write_json_atomic  # noqa: E402
from dlp_lib.results import hardware, machine_label  # noqa: E402


def slug(text: str) -> str:
    """``Intel(R) Xeon(R) Processor`` -> ``intel-xeon``: the CPU's name for a file name."""
    text = re.sub(r"\((r|tm)\)|\bprocessor\b|\bcpu\b", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:40]


def timed(command: list[str], cwd: Path, env: dict, log: Path) -> tuple[float, int, float | None]:
    """(wall seconds, exit status, peak resident GiB from /usr/bin/time -v if it is there)."""
    prefix = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    start = time.perf_counter()
    with log.open("a") as out:
        status = subprocess.run(prefix + command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    peak = None
    found = re.findall(r"Maximum resident set size \(kbytes\): (\d+)", log.read_text())
    if prefix and found:
        peak = int(found[-1]) / 2**20
    return seconds, status, peak


def notebook_seconds(executed: Path) -> dict[str, float]:
    seconds = {}
    for path in sorted(executed.glob("[0-9][0-9]_*.ipynb")):
        meta = json.loads(path.read_text())["metadata"].get("papermill", {})
        if meta.get("duration") is not None:
            seconds[path.stem] = round(meta["duration"], 1)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", help="the profile make reproduce runs (default: quick)")
    parser.add_argument("--out", help="output path without extension (default: bench/results/reproduce-...)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch clone (its path is printed)")
    args = parser.parse_args(argv)
    info = hardware()
    out = Path(args.out or ROOT / "bench" / "results" / f"reproduce-{args.profile}-{slug(info['cpu_model'] or '')}")
    out.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    scratch = Path(tempfile.mkdtemp(prefix="fresh-reproduce-"))
    clone, log = scratch / "clone", scratch / "make.log"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = dict(os.environ, DLP_CACHE_DIR=str(scratch / "cache"))
    env.pop("MAKEFLAGS", None)
    env.pop("VIRTUAL_ENV", None)
    print(f"cloned {commit[:7]} into {clone}; log: {log}", flush=True)
    venv_s, status, _ = timed(["make", "venv"], clone, env, log)
    reproduce_s, status, peak = (
        (0.0, status, None) if status else timed(["make", "reproduce", f"PROFILE={args.profile}"], clone, env, log)
    )
    result = {
        "commit": commit,
        "command": f"make venv; make reproduce PROFILE={args.profile} (fresh clone, empty DLP_CACHE_DIR)",
        "date": date.today().isoformat(),
        "machine": machine_label(info),
        "hardware": info,
        "profile": args.profile,
        "status": status,
        "venv_seconds": round(venv_s, 1),
        "reproduce_seconds": round(reproduce_s, 1),
        "peak_rss_gib": None if peak is None else round(peak, 2),
        "notebook_seconds": notebook_seconds(clone / "notebooks" / "executed"),
    }
    if status == 0 and args.profile == "quick":
        from dlp_lib import reproduction

        check = reproduction.check_tables(ROOT / "tables", clone / "tables")
        result["check"] = {
            "cells": len(check),
            "status": check["status"].value_counts().to_dict(),
            "flagged": [f"{r.cell} ({r.status})" for r in reproduction.flagged(check).itertuples()],
            "unexpected": len(reproduction.unexpected(check)),
            # of those, cells that one table has and the other lacks (a profile that gained or lost a row)
            "missing": int(reproduction.unexpected(check)["status"].str.startswith("missing").sum()),
        }
    write_json_atomic(out.with_suffix(".json"), result)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(result))
    print(markdown(result))
    if not args.keep and status == 0:
        subprocess.run(["rm", "-rf", str(scratch)])
    return 1 if status else 0


def markdown(result: dict) -> str:
    total = result["venv_seconds"] + result["reproduce_seconds"]
    lines = [
        f"# make reproduce PROFILE={result['profile']} on a fresh clone",
        "",
        f"{result['machine']}; commit {result['commit'][:7]}, {result['date']}; `python bench/fresh_reproduce.py"
        f" --profile {result['profile']}` ({result['command']}).",
        "",
        f"- environment (`make venv`): {result['venv_seconds'] / 60:.1f} min",
        f"- `make reproduce`: {result['reproduce_seconds'] / 60:.1f} min, peak resident memory "
        f"{result['peak_rss_gib']} GiB; in all {total / 60:.1f} min (exit status {result['status']})",
        "",
        "| notebook | minutes |",
        "|---|---|",
        *(f"| {name} | {seconds / 60:.1f} |" for name, seconds in result["notebook_seconds"].items()),
    ]
    if "check" in result:
        check = result["check"]
        counts = ", ".join(f"{n} {status}" for status, n in check["status"].items())
        lines += ["", f"Against the committed tables (`make check-reproduction`): {check['cells']} cells, {counts};"]
        missing = check.get("missing", 0)
        lines.append(
            f"{check['unexpected'] - missing} outside the tolerance that are neither noise-dominated nor searched; "
            f"{missing} in one table only (a row the profile gained or lost)."
        )
        if check["flagged"]:
            lines.append("Flagged: " + "; ".join(check["flagged"]) + ".")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
