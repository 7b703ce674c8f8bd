"""Where dlp-prune writes, checked before the model loads: the ``--save`` record path and the
``--save_model`` directory, and that the two do not overlap."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("dlp_lib.cli")

RECORD = "the result record"


def record_destination(save: str, config_dict: dict) -> Path:
    """``--save``: a file path, or a directory (existing, or written with a trailing '/') that gets
    ``<config hash>.json`` as the papers' scripts pass an output directory; checked before the work
    (``results.check_record_path``): nothing there, or an earlier record it replaces."""
    from ..cache import check_writable
    from ..results import check_record_path, record_path

    path = Path(save).expanduser()
    check_writable(path, RECORD)  # a name too long: refused before the stat below would raise on it
    if save.endswith(("/", os.sep)) or path.is_dir():
        path = record_path(path, config_dict)
    return check_record_path(path, RECORD)


def check_model_destination(args, model: str):
    """``--save_model`` and ``--overwrite``: the directory checked (``saving.check_save_directory``) and
    not the input model's, or None without ``--save_model``."""
    from ..cache import check_writable
    from ..config import ConfigError
    from ..saving import WHAT, check_save_directory

    if not args.save_model:
        if args.overwrite:
            log.warning("--overwrite only applies with --save_model; ignoring it")
        return None
    target = Path(args.save_model).expanduser()
    check_writable(target, WHAT)  # a name too long: refused before resolve() would stat it
    source = Path(model).expanduser()
    if source.exists() and target.resolve() == source.resolve():
        raise ConfigError("--save_model would overwrite the input model; give another directory")
    return check_save_directory(target, args.overwrite, "--overwrite")


def check_apart(record: Path | None, model_dir: Path | None) -> None:
    """Refuse a record path inside the --save_model directory (the save would replace it, or find it a
    file it did not write) or a model directory inside the record's path."""
    from ..config import ConfigError

    if record is None or model_dir is None:
        return
    record, model_dir = record.resolve(), model_dir.resolve()
    if record == model_dir or model_dir in record.parents or record in model_dir.parents:
        raise ConfigError(
            f"--save {record} and --save_model {model_dir} overlap; give the record a path outside the model directory"
        )
