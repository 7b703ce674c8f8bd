"""The committed records: a copy of a reproduction's results folder (the JSON records, dense statistics,
searches and speed measurements; never a cache of model tensors), which ``make render`` reads.

    python -m dlp_lib.experiments.archive --results results --records records
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from ..errors import ConfigError


def record_files(results: Path) -> list[Path]:
    """Every JSON file under ``results`` (relative paths, sorted); the folder holds nothing else a
    render needs."""
    return sorted(p.relative_to(results) for p in results.rglob("*.json") if p.is_file())


def archive(results: str | os.PathLike, records: str | os.PathLike) -> tuple[int, int]:
    """Replace ``records`` with a copy of the JSON files under ``results``; ``(files, bytes)``.

    Refused before anything is written if ``results`` holds no record, or if ``records`` holds a file
    this function would not have written (anything but JSON): it is replaced whole, and a user's own
    file must not go with it. The new copy is built beside it and renamed into place."""
    results, records = Path(results), Path(records)
    files = record_files(results) if results.is_dir() else []
    if not files:
        raise ConfigError(f"no records in {results}/: run make reproduce (quick profile) first")
    if records.exists():
        if not records.is_dir():
            raise ConfigError(f"{records} is a file; move it away or pass another --records folder")
        foreign = [p for p in records.rglob("*") if p.is_file() and p.suffix != ".json"]
        if foreign:
            raise ConfigError(f"{records}/ holds files that are not records (e.g. {foreign[0]}): move them away first")
    staging = records.with_name(f".{records.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    size = 0
    for name in files:
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(results / name, target)
        size += target.stat().st_size
    old = records.with_name(f".{records.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if records.exists():
        records.rename(old)
    staging.rename(records)
    shutil.rmtree(old, ignore_errors=True)
    return len(files), size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlp_lib.experiments.archive", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="the reproduction's results folder (default: results)")
    parser.add_argument("--records", default="records", help="the committed records folder (default: records)")
    args = parser.parse_args(argv)
    try:
        files, size = archive(args.results, args.records)
    except (ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{files} records ({size / 1e6:.2f} MB) copied from {args.results}/ into {args.records}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
