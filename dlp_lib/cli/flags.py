"""Flags the commands share, declared once: the model, SparseGPT's arithmetic, the pruning target, the
calibration data, the output; the device check, the one-line error and the logging every command uses."""

from __future__ import annotations

import argparse
import logging

from ..config import DEFAULT_MODEL, EMBEDDED_SOURCE, PAPER_CALIBRATION, PAPER_EVAL, RUN_DEFAULTS

DEFAULT_SPARSITY = 0.5
# the data flags' defaults, as --help says them (config.default_sources decides)
CALIBRATION_DEFAULT_HELP = (
    f"{EMBEDDED_SOURCE} for the embedded {DEFAULT_MODEL}, {PAPER_CALIBRATION} for any other model, as the papers"
)
EVAL_DEFAULT_HELP = (
    f"{EMBEDDED_SOURCE} for the embedded {DEFAULT_MODEL}, {PAPER_EVAL} (WikiText-2 test) for any other model, "
    "as the papers"
)


def add_model_arguments(parser: argparse.ArgumentParser):
    """The "model" group every command shares (--model, --device, --dtype, --trust_remote_code);
    returns the group so a command can add its own model flags to it."""
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="smollm2-135m (embedded), a local HF directory, a .gguf file, or a hub id (default: %(default)s)",
    )
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    g.add_argument(
        "--dtype", default=RUN_DEFAULTS["dtype"], help="auto, float32, float16 or bfloat16 (default: %(default)s)"
    )
    g.add_argument("--trust_remote_code", action="store_true", help="let transformers run the model's own code")
    return g


def add_sparsegpt_arguments(group, default: str | None = "auto") -> None:
    """SparseGPT's arithmetic (``PruneConfig.sparsegpt_sweep`` and ``sparsegpt_hessian``), for dlp-prune,
    dlp-search and the grid alike (the grid's ``default=None``: the profile's)."""
    from ..config import SPARSEGPT_HESSIANS, SPARSEGPT_SWEEPS

    shown = default or "the profile's"
    group.add_argument(
        "--sparsegpt_sweep",
        default=default,
        choices=list(SPARSEGPT_SWEEPS),
        help="SparseGPT's column loop; every one gives the same weights. auto: C on a CPU, Triton on CUDA "
        f"(default: {shown})",
    )
    group.add_argument(
        "--sparsegpt_hessian",
        default=default,
        choices=list(SPARSEGPT_HESSIANS),
        help="SparseGPT's Hessian arithmetic: fp32 (the reference's) or half (x^T x from bf16/fp16 activations, exact "
        "products, fp32 sums; tensor cores on CUDA); auto: half on CUDA, fp32 elsewhere "
        f"(default: {shown})",
    )


def add_pruning_arguments(group) -> None:
    """The pruner, the sparsity and DSA's/OWL's lambda, as both commands read them."""
    group.add_argument(
        "--prune_method",
        default="wanda",
        help="magnitude, wanda, sparsegpt or ria (dlp-prune also: dense, or a compound name such as wanda_dlp) "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--sparsity_ratio",
        type=float,
        default=None,
        help=f"fraction of zeros in [0, 1) (default: {DEFAULT_SPARSITY}; for N:M sparsity, N/M)",
    )
    group.add_argument("--Lamda", type=float, default=None, help="OWL's and DSA's density half-range lambda (0.08)")


# AlphaPruning's, ATP's, LSA's and RIA's flags: each is a PruneConfig field of the same name
RECENT_METHOD_FLAGS = ("alpha_epsilon", "alpha_estimator", "atp_beta", "lsa_beta", "lsa_group", "lsa_fraction", "ria_a")


def add_recent_method_arguments(group) -> None:
    """The settings of AlphaPruning, ATP and LSA (allocations) and RIA (a pruner), as dlp-prune reads them."""
    group.add_argument(
        "--alpha_epsilon", type=float, default=None,
        help="AlphaPruning: block sparsities scale with factors in [1 - e, 1 + e] (0.3, the authors' default; their "
        "LLaMA-7B Wanda/SparseGPT scripts use 0.2)",
    )  # fmt: skip
    group.add_argument(
        "--alpha_estimator", default=None,
        help="AlphaPruning's Hill estimator: xmin_peak (the authors' default) or xmin_mid",
    )  # fmt: skip
    group.add_argument(
        "--atp_beta", type=float, default=None,
        help="ATP: the sparsity step from one block to the next (required with --allocation atp: the authors have "
        "no default; notebook 12 chooses it on held-out calibration text)",
    )  # fmt: skip
    group.add_argument(
        "--lsa_beta", type=float, default=None,
        help="LSA: the block sparsities' half-range (default: the authors' table, 0.15 at 70%%, 0.04 at 50%%)",
    )  # fmt: skip
    group.add_argument("--lsa_group", type=int, default=None, help="LSA: input columns per group (128)")
    group.add_argument("--lsa_fraction", type=float, default=None, help="LSA: fraction of each group removed (0.5)")
    group.add_argument("--ria_a", type=float, default=None, help="RIA: exponent of the input norms (0.5)")
    group.add_argument(
        "--ria_reallocation", action="store_true",
        help="RIA with N:M: channel reallocation before the masks (the mask is N:M after permuting the input "
        "channels, which nothing here applies)",
    )  # fmt: skip


def add_calibration_arguments(group) -> None:
    """The calibration windows and the batch sizes, as both commands read them."""
    group.add_argument(
        "--calibration",
        default=None,
        help=f"calibration text: {EMBEDDED_SOURCE} (embedded Wikipedia extracts), {PAPER_CALIBRATION} (the hub's first "
        f"C4 train shard), {PAPER_EVAL}, or local copies: c4:/local/c4-train.00000-of-01024.json.gz, "
        f"wikitext2:/local/test.parquet, a .txt/.jsonl file (default: {CALIBRATION_DEFAULT_HELP}; offline, "
        "pass a local copy)",
    )
    group.add_argument(
        "--nsamples", type=int, default=RUN_DEFAULTS["nsamples"], help="calibration windows (default: %(default)s)"
    )
    group.add_argument(
        "--seqlen", type=int, default=RUN_DEFAULTS["seqlen"], help="tokens per window (default: %(default)s)"
    )
    group.add_argument(
        "--seed", type=int, default=RUN_DEFAULTS["seed"], help="seed of the calibration sampling (default: %(default)s)"
    )
    group.add_argument(
        "--batch_size",
        type=int,
        default=RUN_DEFAULTS["batch_size"],
        help="calibration windows per forward (default: %(default)s)",
    )
    group.add_argument(
        "--eval_batch_size",
        type=int,
        default=RUN_DEFAULTS["eval_batch_size"],
        help="evaluation windows per forward (default: %(default)s)",
    )


def add_output_arguments(parser, save_help: str):
    """The "output" group: ``--save`` (what it writes is the command's) and ``--quiet``; returns the group."""
    g = parser.add_argument_group("output")
    g.add_argument("--save", default=None, help=save_help)
    g.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    return g


def start_logging(args) -> None:
    """The commands' log: ``dlp_lib.log.setup_logging`` at INFO, or WARNING with ``--quiet``."""
    from ..log import setup_logging

    setup_logging(logging.WARNING if args.quiet else logging.INFO)


def one_line(message) -> str:
    return " ".join(str(message).split())


def resolve_device(device: str | None) -> str:
    """``--device``: cuda if available when not given; an unknown device, or CUDA without a GPU, is a
    ConfigError."""
    import torch

    from ..config import ConfigError

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or cuda:N ({one_line(err)})") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return device


def checked_save_path(save: str | None, example: str, what: str = "the search result"):
    """``--save``: None, or a ``Path`` where the record ``what`` may be written, checked before any work
    (``results.check_record_path``): names the file system can hold in a writable place, and nothing
    there or a dlp_lib record to replace; a directory is refused naming ``example``, a file name, inside
    it, and any other file is refused rather than overwritten."""
    from pathlib import Path

    from ..cache import check_writable
    from ..config import ConfigError
    from ..results import check_record_path

    if not save:
        return None
    path = Path(save).expanduser()
    check_writable(path, what)  # a name too long: refused before the stat below would raise on it
    if path.is_dir():
        raise ConfigError(f"--save {path} is a directory; give a file path such as {path / example}")
    return check_record_path(path, what)


def start_command(prog: str, parser: argparse.ArgumentParser, argv, build):
    """Parse ``argv``, start the log and ``build(args)`` the command's settings (every check before a model
    loads), then keep freed memory in the heap (the Makefile's MALLOC_* settings, for a user who runs the
    command directly). Returns ``(args, settings)``, or the exit status: argparse's, or 2 with a one-line
    error on stderr for a ConfigError."""
    import sys

    from ..config import ConfigError
    from ..heap import keep_freed_memory

    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    start_logging(args)
    try:
        settings = build(args)
    except ConfigError as err:
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 2
    keep_freed_memory()
    return args, settings


def calibration_source(args) -> tuple[str, bool]:
    """``--calibration``, or the model's default when it was not given (``config.default_sources``), and
    whether it was the default."""
    from ..config import default_sources

    if args.calibration is None:
        return default_sources(args.model)[0], True
    return args.calibration, False


def check_calibration(model: str, source: str, defaulted: bool) -> None:
    """Refuse, before the model loads, a calibration source that cannot be read: a default the hub cannot
    give (``data.check_default_sources``: one line naming --calibration and the local forms), or any
    other unreadable source (``data.check_source``)."""
    from ..data import check_default_sources, check_source

    if defaulted:
        check_default_sources(model, {"--calibration": source})
    check_source(source, network=not defaulted)
