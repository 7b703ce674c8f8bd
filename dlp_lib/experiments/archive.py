"""The committed records: a copy of a reproduction's results folder (the JSON records, dense statistics,
searches and speed measurements; never a cache of model tensors), with a README that says what is there,
which ``make render`` reads.

    python -m dlp_lib.experiments.archive --results results --records records
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from ..cache import atomic_path
from ..errors import ConfigError
from ..outputs import check_output_directory, embedded_manifest, manifest_of
from ..results import machine_label


def record_files(results: Path) -> list[Path]:
    """Every JSON file under ``results`` (relative paths, sorted); the folder holds nothing else a
    render needs."""
    return sorted(p.relative_to(results) for p in results.rglob("*.json") if p.is_file())


README = "README.md"
TITLE = "# The records behind the committed tables and figures"


def describe(records: Path, files: list[Path], size: int) -> str:
    """The README of a records folder: what each kind of file is, where it was computed, how to find the
    record behind a table cell."""
    machines = set()
    for name in files:
        try:
            record = json.loads((records / name).read_text())
        except (OSError, ValueError):
            continue
        info = record.get("hardware") if isinstance(record, dict) else None
        if isinstance(info, dict):
            machines.add(machine_label(info))
    top = [name for name in files if len(name.parts) == 1]
    folders = sorted({name.parts[0] for name in files if len(name.parts) > 1})
    lines = [
        TITLE,
        "",
        f"{len(files)} JSON files, {size / 1e6:.2f} MB, copied by `make records` from the `results/` folder of a",
        "`make reproduce` (quick profile, embedded model); `make render` rebuilds every table and figure from them",
        "without running a model. Written by `python -m dlp_lib.experiments.archive`: do not edit by hand.",
        "",
        f"- `<key>.json` ({len(top)}): one run each: its full configuration (`config`; `key` is a hash of it),",
        "  package versions, the machine (`hardware`), per-block target and achieved sparsities, perplexity,",
        "  zero-shot accuracies or LoRA curves where the run had them, and timings. The `key` column of",
        "  `tables/main_table_runs.csv` and `tables/zero_shot_runs.csv`, and the runs table of each executed",
        "  notebook, name the file behind each cell.",
    ]
    kinds = {
        "dense_statistics": "the dense model's per-block statistics that OWL, DLP and DSA allocate from",
        "dsa_search": "DSA's allocation search: every candidate expression, its fitness and the history",
        "evopress_search": "EvoPress's searches, one per pruner, and (`checked/`) the allocations notebook 11 ran",
        "speed": "notebook 09's CPU speed measurements",
        "atp_beta": "ATP's beta per pruner: the held-out perplexity of every beta tried and the one chosen",
    }
    for folder in folders:
        count = sum(1 for name in files if name.parts[0] == folder)
        lines.append(f"- `{folder}/` ({count}): {kinds.get(folder, 'records of another kind')}.")
    lines += ["", "Computed on: " + ("; ".join(sorted(machines)) or "(the records do not say)") + "."]
    lines += [
        "",
        "The last line, a comment, lists each file's size and hash: `make records` replaces this folder only while",
        "it holds those files, unchanged, and nothing else.",
    ]
    return "\n".join(lines) + "\n"


def earlier_copy(records: Path) -> list[str]:
    """The names in a records folder without a manifest (copied before the README carried one) that are
    not an earlier copy's: a copy holds JSON objects and its README. Such a folder cannot tell a user's
    JSON object from a record; the manifest can, from the first copy on."""
    foreign = []
    for path in sorted(records.rglob("*")):
        name = path.relative_to(records).as_posix()
        if path.is_symlink() or (path.is_dir() and not any(path.iterdir())):
            foreign.append(name)
        elif path.is_file() and not (_is_json_object(path) or (name == README and _is_ours(path))):
            foreign.append(name)
    return foreign


def _is_json_object(path: Path) -> bool:
    try:
        return path.suffix == ".json" and isinstance(json.loads(path.read_text()), dict)
    except (OSError, ValueError):
        return False


def _is_ours(readme: Path) -> bool:
    try:
        return readme.read_text().startswith(TITLE)
    except (OSError, ValueError):
        return False


def archive(results: str | os.PathLike, records: str | os.PathLike) -> tuple[int, int]:
    """Replace ``records`` with a copy of the JSON files under ``results``; ``(files, bytes)``.

    Refused before anything is written if ``results`` holds no record, or if ``records`` holds anything
    this function did not write, or that changed since: the README's manifest (sizes and sha256, as git
    checks files out with new times) lists what it wrote; a folder copied before the manifest may hold
    JSON objects and its README only (:func:`earlier_copy`). A user's file must not go with the folder,
    which is replaced whole: the new copy is built beside it and renamed into place, with the old
    folder's permissions."""
    results, records = Path(results), Path(records)
    files = record_files(results) if results.is_dir() else []
    if not files:
        raise ConfigError(f"no records in {results}/: run make reproduce (quick profile) first")
    place = dict(what="the records", kind="records", overwrite=True, legacy=earlier_copy, holder=README)
    check_output_directory(records, **place)
    size = 0
    with atomic_path(records, what="the records") as staging:
        staging.mkdir()
        for name in files:
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(results / name, target)
            size += target.stat().st_size
        listing = manifest_of(staging, "python -m dlp_lib.experiments.archive", hashes=True, holder=README)
        (staging / README).write_text(describe(staging, files, size) + embedded_manifest(listing))
        check_output_directory(records, **place)  # again: the folder may have changed meanwhile
    return len(files), size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlp_lib.experiments.archive", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="the reproduction's results folder (default: results)")
    parser.add_argument("--records", default="records", help="the committed records folder (default: records)")
    args = parser.parse_args(argv)
    try:
        files, size = archive(args.results, args.records)
    except (ConfigError, OSError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"{files} records ({size / 1e6:.2f} MB) copied from {args.results}/ into {args.records}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
