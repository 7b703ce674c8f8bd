"""Peak memory and time of building token windows from a large local text file (not a timed test).

    python bench/text_memory.py                          # a 60 MB .txt: calibration, 128 x 2048 windows
    python bench/text_memory.py --mb 15 --suffix .jsonl  # a 15 MB JSON-lines file
    python bench/text_memory.py --build evaluation --count 64

The file is written once under /tmp (the embedded Wikipedia extracts, repeated in a shuffled order until it
has the size asked for) and tokenised by the embedded model's tokenizer, without the window cache. Each
build runs in a fresh subprocess, whose peak resident memory (VmHWM) and wall time are printed, with the
resident memory of that process before the build (Python, torch and the tokenizer loaded) for reference.
Run the child under ``/usr/bin/time -v`` to read the same peak from outside::

    /usr/bin/time -v python bench/text_memory.py --child --path /tmp/dlp-text-60mb.txt

Measured on a 2-core Intel Xeon (peak resident memory of the build's process, 533 MiB before it), before
and after text was read as a stream and tokenised in bounded calls (``dlp_lib.data.token_stream``):

    60 MiB .txt, calibration 128 x 2048:     9361 MiB, 64.5 s  ->  683 MiB, 59.9 s
    60 MiB .txt, evaluation, first 64:       9362 MiB, 72.5 s  ->  571 MiB,  0.9 s
    62 MiB .jsonl, evaluation, all (x 128):  9440 MiB, 78.5 s  ->  749 MiB, 58.0 s
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

MiB = 2**20


def _status(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def make_file(mb: float, suffix: str) -> Path:
    """A text file of about ``mb`` MiB (kept between runs: its content depends only on the size)."""
    from dlp_lib.data import wiki_extracts_parts

    path = Path(f"/tmp/dlp-text-{mb:g}mb{suffix}")
    if path.is_file():
        return path
    articles = wiki_extracts_parts()[0]
    rng, written = random.Random(0), 0
    with open(path, "w", encoding="utf-8") as f:
        while written < mb * MiB:
            rng.shuffle(articles)
            for text in articles:
                f.write(json.dumps({"text": text}) + "\n" if suffix == ".jsonl" else text + "\n\n")
                written += len(text) + 2
                if written >= mb * MiB:
                    break
    return path


def child(args) -> dict:
    from transformers import AutoTokenizer

    from dlp_lib.data import calibration_windows, evaluation_windows
    from dlp_lib.models import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    before, start = _status("VmRSS"), time.perf_counter()
    if args.build == "calibration":
        windows = calibration_windows(args.path, tokenizer, args.nsamples, args.seqlen, seed=0, cache=False)
    else:
        windows = evaluation_windows(args.path, tokenizer, args.seqlen, args.count, cache=False)
    return {
        "windows": list(windows.shape),
        "seconds": round(time.perf_counter() - start, 1),
        "rss_before_mib": round(before / MiB),
        "peak_rss_mib": round(_status("VmHWM") / MiB),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=60, help="size of the text file in MiB (default: %(default)s)")
    parser.add_argument("--suffix", default=".txt", choices=[".txt", ".jsonl"])
    parser.add_argument("--build", default="calibration", choices=["calibration", "evaluation"])
    parser.add_argument("--nsamples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--count", type=int, default=None, help="evaluation windows (default: all)")
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    path = make_file(args.mb, args.suffix)
    flags = ["--build", args.build, "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen)]
    flags += ["--count", str(args.count)] if args.count else []
    cmd = [sys.executable, __file__, "--child", "--path", str(path), *flags]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    print(json.dumps({"file": str(path), "file_mib": round(path.stat().st_size / MiB, 1), **result}))


if __name__ == "__main__":
    main()
