"""``python -m dlp_lib``: the dlp-prune command line (see dlp_lib.cli)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
