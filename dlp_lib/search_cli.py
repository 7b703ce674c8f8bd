"""``dlp-search``'s former module: the command now lives in :mod:`dlp_lib.cli.search` (kept importable)."""

import sys

from .cli.search import PROG, build_parser, build_settings, main  # noqa: F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
