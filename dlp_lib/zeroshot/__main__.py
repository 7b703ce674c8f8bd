"""``python -m dlp_lib.zeroshot [CACHE_DIR]``: build the zero-shot task files and print where they are."""

import argparse
import sys

from ..config import ConfigError
from ..log import setup_logging
from .files import build_task_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dlp_lib.zeroshot",
        description="Convert the shipped zero-shot task data into local lm-eval tasks once, and print their folder.",
    )
    parser.add_argument(
        "cache_dir", nargs="?", default=None, help="where to build them (default: <dlp_lib cache>/lm_eval_tasks)"
    )
    args = parser.parse_args(argv)
    setup_logging()
    try:
        if args.cache_dir is not None:
            from ..cache import check_writable

            check_writable(f"{args.cache_dir}/.probe", "the zero-shot task files")
        print(build_task_files(args.cache_dir))
    except ConfigError as err:
        print(f"{parser.prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
