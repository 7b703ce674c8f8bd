"""Command line of DSA's allocation search (``dlp_lib.search``).

Examples::

    dlp-search --population 10 --generations 6 --nsamples 4 --seqlen 128 --search_windows 8
    dlp-search --model meta-llama/Llama-2-7b-hf --calibration c4 --nsamples 32 --seqlen 2048 \\
        --population 20 --generations 15 --save out/dsa_search.json

It prints the best expression and the ``dlp-prune`` command that applies it. Every setting is checked
before the model is loaded; an invalid one exits with status 2 and a one-line message on stderr.
Candidates are cached under ``$DLP_CACHE_DIR/dsa_search``: a killed search, run again with the same
flags, reads what it had evaluated and carries on; the same ``--seed`` gives the same result.
"""

from __future__ import annotations

import argparse
import sys

from .flags import (
    DEFAULT_SPARSITY,
    add_calibration_arguments,
    add_model_arguments,
    add_output_arguments,
    add_pruning_arguments,
    add_sparsegpt_arguments,
    calibration_source,
    check_calibration,
    checked_save_path,
    one_line,
    resolve_device,
    start_command,
)

PROG = "dlp-search"


def build_parser() -> argparse.ArgumentParser:
    from ..search import DSA_README_GRAPH

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Evolutionary search over DSA allocation expressions: fitness = the pruned model's "
        "perplexity on search windows of the calibration side (never the evaluation text).",
    )
    add_model_arguments(parser)

    g = parser.add_argument_group("fitness (one pruning and one short evaluation per candidate)")
    add_pruning_arguments(g)
    add_calibration_arguments(g)  # --seed: the calibration and search windows' seed, as in dlp-prune
    g.add_argument(
        "--search_windows", type=int, default=16, help="calibration-side windows the fitness is measured on (16)"
    )
    # the flag's name before --seed meant the same for both commands
    g.add_argument("--calibration_seed", dest="seed", type=int, help=argparse.SUPPRESS)
    add_sparsegpt_arguments(g)

    g = parser.add_argument_group("evolution")
    g.add_argument("--population", type=int, default=16, help="expressions per generation (default: %(default)s)")
    g.add_argument("--generations", type=int, default=10, help="generations (default: %(default)s)")
    g.add_argument("--search_seed", type=int, default=0, help="seed of the evolution (default: %(default)s)")
    g.add_argument("--elite", type=int, default=2, help="best expressions kept as they are (default: %(default)s)")
    g.add_argument("--tournament", type=int, default=3, help="tournament size of selection (default: %(default)s)")
    g.add_argument("--crossover", type=float, default=0.5, help="probability of a crossover (default: %(default)s)")
    g.add_argument("--mutation", type=float, default=0.2, help="probability of a mutation (default: %(default)s)")
    g.add_argument("--max_pre", type=int, default=2, help="most pre-process ops (default: %(default)s)")
    g.add_argument("--max_post", type=int, default=2, help="most transforms (default: %(default)s)")
    g.add_argument(
        "--initial",
        action="append",
        default=None,
        help=f"an expression of the first generation; repeatable (default: {DSA_README_GRAPH})",
    )

    add_output_arguments(parser, "write the search result (every candidate, history) as JSON here")
    return parser


def build_settings(args):
    """Validate every flag and return ``(FitnessSettings, SearchConfig, save path or None)``."""
    from ..cache import check_cache_root
    from ..config import PruneConfig
    from ..models import check_model_spec, resolve_dtype
    from ..search import DSA_README_GRAPH, FitnessSettings, SearchConfig

    resolve_dtype(args.dtype)
    args.device = resolve_device(args.device)
    calibration, defaulted = calibration_source(args)  # the model's default when not given
    fitness = FitnessSettings(
        model=args.model,
        method=args.prune_method.lower(),
        sparsity=DEFAULT_SPARSITY if args.sparsity_ratio is None else args.sparsity_ratio,
        dsa_lambda=PruneConfig.dsa_lambda if args.Lamda is None else args.Lamda,
        calibration=calibration,
        nsamples=args.nsamples,
        seqlen=args.seqlen,
        windows=args.search_windows,
        seed=args.seed,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        sparsegpt_sweep=args.sparsegpt_sweep,
        sparsegpt_hessian=args.sparsegpt_hessian,
    )
    config = SearchConfig(
        population=args.population,
        generations=args.generations,
        seed=args.search_seed,
        elite=args.elite,
        tournament=args.tournament,
        crossover=args.crossover,
        mutation=args.mutation,
        max_pre=args.max_pre,
        max_post=args.max_post,
        initial=tuple(args.initial) if args.initial else (DSA_README_GRAPH,),
    )
    check_model_spec(fitness.model, network=True)
    check_calibration(fitness.model, fitness.calibration, defaulted)
    check_cache_root()  # candidates and windows are cached as they are computed
    save = checked_save_path(args.save, "dsa_search.json")
    return fitness, config, save


def main(argv: list[str] | None = None) -> int:
    """Run the search; returns the exit status (0 ok, 1 no valid expression found, 2 invalid settings)."""
    started = start_command(PROG, build_parser(), argv, build_settings)
    if isinstance(started, int):
        return started
    args, (fitness_settings, config, save) = started
    from ..config import ConfigError
    from ..search import ProxyFitness, save_result, search

    try:
        fitness = ProxyFitness(fitness_settings, progress=not args.quiet)
        result = search(fitness, config, progress=not args.quiet)
    except ConfigError as err:  # found once the model is known (architecture, window length, ...)
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        return 2
    if save is not None:
        try:
            save_result(result, save)
        except ConfigError as err:  # the place changed during the run (disk full, a file put there since)
            print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
            return 2
    best = result.best
    print(f"best        {best.expression}  (perplexity {best.fitness:.4g} on the search windows)")
    print(
        f"evaluated   {len(result.candidates)} expressions in {config.generations} generations, "
        f"{result.computed} computed now, {result.seconds:.0f} s"
    )
    for candidate in result.candidates[:5]:
        fitness_text = "invalid" if candidate["fitness"] is None else f"{candidate['fitness']:.4g}"
        print(f"  #{candidate['rank'] + 1:<3} {fitness_text:>10}  {candidate['expression']}")
    if save is not None:
        print(f"result      {save}")
    if not best.valid:  # nothing to apply: say why rather than report a perplexity of inf
        print(f"{PROG}: error: every expression was invalid on this model, e.g. {best.reason}", file=sys.stderr)
        return 1
    s = fitness_settings
    print(
        f'apply with  dlp-prune --prune_method {s.method} --allocation dsa --dsa_graph "{best.expression}" '
        f"--Lamda {s.dsa_lambda:g} --sparsity_ratio {s.sparsity:g}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
