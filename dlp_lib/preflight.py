"""The check ``make reproduce`` runs before its first notebook: the profile and model parameters,
the data sources (a hub one: cached or reachable) and the output directories. A bad one is refused
in one line with exit status 2, instead of a traceback inside a notebook after minutes of work::

    python -m dlp_lib.preflight --profile quick [--model meta-llama/Llama-2-7b-hf] [--outputs results tables]
        [--sparsegpt_sweep auto] [--sparsegpt_hessian fp32]

Each notebook checks its own parameters the same way in its first cell (dlp_lib.experiments.notebook).
``make reproduce`` runs it through papermill's command line as ``python -m dlp_lib.preflight papermill
[papermill's arguments]``, which tells a ConfigError raised in the notebook in one line (exit status 2)
instead of papermill's traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import rehearsal, zeroshot
from .cache import check_writable
from .config import ConfigError


def check(profile: str, model: str | None = None, outputs: tuple[str, ...] | dict[str, str] = (), **overrides) -> dict:
    """The profile (with ``model`` and other ``overrides`` of its settings if given, e.g. SparseGPT's
    arithmetic), after checking everything it will need; raises ConfigError. ``outputs``: the directories
    to be written, or a notebook's ``{parameter: directory}``, so that the message names the parameter."""
    from .data import check_source
    from .experiments.profiles import profile as read_profile
    from .models import check_model_spec

    prof = read_profile(profile, model=model or None, **overrides)
    if prof["name"] == "rehearsal":
        rehearsal.require_built()
    check_model_spec(prof["model"], network=True)
    recovery_data = prof["recovery"]["settings"].get("data")  # None: the calibration source
    for source in {prof["calibration"], prof["eval"], recovery_data or prof["calibration"]}:
        check_source(source)
    kind, directory = zeroshot.parse_source(prof["zero_shot"]["source"])
    if directory is not None:
        zeroshot.check_hub_files(directory, zeroshot.resolve_tasks(prof["zero_shot"]["tasks"]))
    elif kind == "hub":
        from .hub import check_dataset

        check_dataset("lm-eval's hub task data", "use the shipped task data (the profile's zero_shot source 'local')")
    labelled = outputs.items() if isinstance(outputs, dict) else ((None, directory) for directory in outputs)
    for parameter, directory in labelled:
        what = f"the outputs in {directory}/" + (f" (parameter {parameter})" if parameter else "")
        check_writable(Path(directory) / ".probe", what)
    return prof


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, help="smoke, quick, paper or rehearsal")
    parser.add_argument("--model", default=None, help="a model instead of the profile's")
    parser.add_argument("--outputs", nargs="*", default=[], help="directories the notebooks write")
    parser.add_argument("--sparsegpt_sweep", default=None, help="SparseGPT's column loop instead of the profile's")
    parser.add_argument(
        "--sparsegpt_hessian", default=None, help="SparseGPT's Hessian arithmetic instead of the profile's"
    )
    args = parser.parse_args(argv)
    try:
        arithmetic = {"sparsegpt_sweep": args.sparsegpt_sweep, "sparsegpt_hessian": args.sparsegpt_hessian}
        prof = check(args.profile, args.model, tuple(args.outputs), **arithmetic)
    except ConfigError as err:
        print(f"{parser.prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"profile {prof['name']}: model {prof['model']}, data {prof['calibration']} / {prof['eval']}: ready")
    return 0


def papermill(argv: list[str]) -> int:
    """papermill's command line, with a ConfigError in the notebook (a bad parameter, a record missing
    under DLP_RECORDS_ONLY=1) told in one line, exit status 2; any other error as papermill reports it."""
    from papermill.cli import papermill as papermill_cli
    from papermill.exceptions import PapermillExecutionError

    try:
        papermill_cli.main(argv, prog_name="papermill")  # exits (SystemExit) unless an error escapes
    except PapermillExecutionError as err:
        if err.ename != "ConfigError":  # the notebook shows a ConfigError of any subclass under this name
            raise
        notebook = next((arg for arg in argv if arg.endswith(".ipynb")), "")
        print(f"papermill {notebook}: error: {' '.join(err.evalue.split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(papermill(sys.argv[2:]) if sys.argv[1:2] == ["papermill"] else main())
