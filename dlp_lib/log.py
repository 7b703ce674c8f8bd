"""The one logging setup every entry point uses: dlp-prune, dlp-search, the grid, the notebooks, the
rehearsal's and zero-shot's ``python -m`` commands."""

from __future__ import annotations

import logging
import sys

_MARK = "_dlp_handler"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a notebook's, a test's captured one)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _Formatter(logging.Formatter):
    """``HH:MM:SS message``; warnings and errors also say which they are."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.levelno >= logging.WARNING:
            time, _, rest = line.partition(" ")
            return f"{time} {record.levelname} {rest}"
        return line


def setup_logging(level: int = logging.INFO) -> None:
    """One log line per event of ``dlp_lib`` on stderr (shown in executed notebooks and by ``papermill
    --log-output``), at ``level`` (the commands' ``--quiet``: WARNING); silences the per-file
    weight-loading bars of transformers. Calling it again only changes the level."""
    logger = logging.getLogger("dlp_lib")
    if not any(getattr(h, _MARK, False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        setattr(handler, _MARK, True)
        logger.addHandler(handler)
    logger.setLevel(level)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
