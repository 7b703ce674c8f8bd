"""Command line of EvoPress's search (``dlp_lib.search.evopress``): per-linear sparsities by evolution.

Examples::

    dlp-evopress --prune_method wanda --sparsity_ratio 0.7 --nsamples 8 --seqlen 256 \\
        --search_windows 8 --window_seqlen 128 --generations 40 --save out/evopress.json
    dlp-prune --prune_method sparsegpt --allocation evopress --evopress out/evopress.json

It prints the search's progress and the ``dlp-prune`` command that applies the result. Every setting is
checked before the model is loaded; an invalid one exits with status 2 and a one-line message on stderr.
The state after every generation is kept under ``$DLP_CACHE_DIR/evopress_search``: a killed search, run
again with the same flags, resumes after its last finished generation and ends where an unbroken one would.
"""

from __future__ import annotations

import argparse
import sys

from .flags import (
    add_calibration_arguments,
    add_model_arguments,
    add_output_arguments,
    add_sparsegpt_arguments,
    calibration_source,
    check_calibration,
    checked_save_path,
    one_line,
    resolve_device,
    start_command,
)

PROG = "dlp-evopress"


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 4,1; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from ..search.evopress import EvoPressConfig, EvoPressSettings

    s, c = EvoPressSettings, EvoPressConfig
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="EvoPress: evolutionary search over per-linear sparsity levels at a fixed total, with the KL "
        "divergence from the dense model on calibration-side windows as fitness (never the evaluation text).",
    )
    add_model_arguments(parser)
    g = parser.add_argument_group("level database")
    g.add_argument("--prune_method", default=s.method, help="wanda or sparsegpt (default: %(default)s)")
    g.add_argument("--sparsity_ratio", type=float, default=s.sparsity, help="total sparsity (default: %(default)s)")
    g.add_argument("--granularity", default=s.granularity, help="linear (EvoPress's) or block (default: %(default)s)")
    g.add_argument(
        "--num_levels", type=int, default=s.num_levels, help="levels each way of the target (default: %(default)s)"
    )
    add_calibration_arguments(g)
    for action in parser._actions:  # the search evaluates no perplexity: one flag of the shared set is moot
        if action.dest == "eval_batch_size":
            action.help = argparse.SUPPRESS
    add_sparsegpt_arguments(g)
    g = parser.add_argument_group("fitness and evolution")
    g.add_argument("--search_windows", type=int, default=s.windows, help="search windows (default: %(default)s)")
    g.add_argument(
        "--window_seqlen", type=int, default=s.window_seqlen, help="tokens per search window (default: %(default)s)"
    )
    g.add_argument("--generations", type=int, default=c.generations, help="(default: %(default)s)")
    g.add_argument("--offspring", type=int, default=c.offspring, help="children per generation (default: %(default)s)")
    g.add_argument(
        "--survivors", type=_ints, default=c.survivors, help="survivors of each selection stage (default: 4,1)"
    )
    g.add_argument(
        "--tokens",
        type=_ints,
        default=c.tokens,
        help="tokens of each selection stage, whole windows (default: 2048,8192)",
    )
    g.add_argument(
        "--search_seed", type=int, default=c.search_seed, help="seed of the evolution (default: %(default)s)"
    )
    add_output_arguments(parser, "write the search result (per-linear sparsities, history) as JSON here")
    return parser


def build_settings(args):
    """Validate every flag; returns ``(EvoPressSettings, EvoPressConfig, save path or None)``."""
    from ..cache import check_cache_root
    from ..models import check_model_spec, resolve_dtype
    from ..search.evopress import EvoPressConfig, EvoPressSettings
    from ..search.levels import preview_ladder

    resolve_dtype(args.dtype)
    args.device = resolve_device(args.device)
    calibration, defaulted = calibration_source(args)  # the model's default when not given
    settings = EvoPressSettings(
        model=args.model,
        method=args.prune_method.lower(),
        sparsity=args.sparsity_ratio,
        granularity=args.granularity,
        num_levels=args.num_levels,
        calibration=calibration,
        nsamples=args.nsamples,
        seqlen=args.seqlen,
        windows=args.search_windows,
        window_seqlen=args.window_seqlen,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        sparsegpt_sweep=args.sparsegpt_sweep,
        sparsegpt_hessian=args.sparsegpt_hessian,
    )
    config = EvoPressConfig(
        generations=args.generations,
        offspring=args.offspring,
        survivors=args.survivors,
        tokens=args.tokens,
        search_seed=args.search_seed,
    )
    config.stage_windows(settings.window_seqlen, settings.windows)
    check_model_spec(settings.model, network=True)
    check_calibration(settings.model, settings.calibration, defaulted)
    check_cache_root()
    save = checked_save_path(args.save, "evopress.json")
    preview_ladder(settings.model, settings.sparsity, settings.num_levels, settings.granularity, args.trust_remote_code)
    return settings, config, save


def main(argv: list[str] | None = None) -> int:
    """Run the search; returns the exit status (0 ok, 2 invalid settings)."""
    started = start_command(PROG, build_parser(), argv, build_settings)
    if isinstance(started, int):
        return started
    args, (settings, config, save) = started
    from ..config import ConfigError
    from ..search.evopress import evopress_search, save_evopress

    try:
        result = evopress_search(settings, config, progress=not args.quiet)
    except ConfigError as err:  # found once the model is known (architecture, window length, memory)
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        return 2
    if save is not None:
        try:
            save_evopress(result, save)
        except ConfigError as err:  # the place changed during the run (disk full, a file put there since)
            print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
            return 2
    blocks = result["block_sparsities"]
    print(f"fitness     KL {result['fitness']:.5g} from the dense model after {config.generations} generations")
    print(
        f"blocks      sparsity {min(blocks):.3f} to {max(blocks):.3f} (total {settings.sparsity:g}), "
        f"{result['seconds']:.0f} s"
    )
    if save is not None:
        print(f"result      {save}")
        print(f"apply with  dlp-prune --prune_method {settings.method} --allocation evopress --evopress {save}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
