"""``python -m dlp_lib.zeroshot [CACHE_DIR]``: build the zero-shot task files and print where they are."""

import sys

from ..log import setup_logging
from .files import build_task_files

setup_logging()
print(build_task_files(sys.argv[1] if len(sys.argv) > 1 else None))
