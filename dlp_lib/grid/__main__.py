"""``python -m dlp_lib.grid``: see :mod:`dlp_lib.grid.command`."""

import sys

from .command import main

sys.exit(main())
