"""Command line: one pruning run, with the flag names of the papers' run scripts.

Examples::

    dlp-prune --prune_method wanda --sparsity_ratio 0.5 --sparsity_type unstructured --save out/wanda.json
    dlp-prune --model meta-llama/Llama-2-7b-hf --prune_method wanda_dlp --sparsity_ratio 0.7 --alpha 0.15 \\
        --calibration c4 --eval wikitext2 --save out/llama2-7b/wanda_dlp.json
    python -m dlp_lib --prune_method wanda_owl --Lamda 0.08 --Hyper_m 5 --sparsity_ratio 0.7
    python -m dlp_lib --prune_method wanda_owl_search --graph_string "W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)"
    python -m dlp_lib --prune_method sparsegpt --sparsity_type 2:4 --save_model out/smollm2-sparsegpt-2of4
    python -m dlp_lib --prune_method wanda_dlp --sparsity_ratio 0.7 --nsamples 8 --seqlen 256 --eval_windows 16 \
        --lora_steps 12 --lora_lr 4e-3 --lora_batch_tokens 1024 --lora_micro_batch 4 --save_model out/wanda-dlp-lora

Every setting is checked before the model is loaded (LoRA target names and window length right after
it, before pruning); an invalid one exits with status 2 and a one-line message on stderr. The result
record (configuration, versions, per-block sparsities, perplexity, timings; with ``--lora_steps`` the
``recovery`` section) is written as JSON with ``--save``.

No output replaces a file dlp-prune did not write, and every output place is checked before the model
loads: ``--save`` takes a new path or an earlier record; ``--save_model`` a new or empty directory, or with
``--overwrite`` one an earlier ``--save_model`` wrote that holds nothing else (:mod:`dlp_lib.outputs`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from .destinations import RECORD, check_apart, check_model_destination, record_destination
from .flags import (
    DEFAULT_SPARSITY,
    EVAL_DEFAULT_HELP,
    RECENT_METHOD_FLAGS,
    add_calibration_arguments,
    add_model_arguments,
    add_output_arguments,
    add_pruning_arguments,
    add_recent_method_arguments,
    add_sparsegpt_arguments,
    one_line,
    resolve_device,
    start_logging,
)

log = logging.getLogger("dlp_lib.cli")

PROG = "dlp-prune"
DENSE = "dense"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Prune a decoder-only LLM with magnitude / Wanda / SparseGPT / RIA and a layer-wise sparsity "
        "allocation (uniform, OWL, DLP, DSA, EvoPress, AlphaPruning, ATP, LSA), then measure perplexity.",
        epilog="Compound method names (wanda_owl, wanda_dlp, sparsegpt_owl, magnitude_dlp, wanda_owl_search, ...) "
        "set --allocation. Invalid settings exit with status 2 before the model is loaded.",
    )
    g = add_model_arguments(parser)
    g.add_argument(
        "--offload",
        action="store_true",
        help="keep the model in CPU memory and move one block at a time to --device (models larger than the GPU)",
    )
    g.add_argument(
        "--device_map",
        default=None,
        help="spread the model over all visible GPUs with accelerate: auto, balanced, balanced_low_0 or sequential "
        "(instead of --device; activations follow each block's device)",
    )

    g = parser.add_argument_group("pruning")
    add_pruning_arguments(g)
    g.add_argument(
        "--allocation",
        default=None,
        help="uniform, owl, dlp, dsa, evopress, alphapruning, atp or lsa (default: from --prune_method, else uniform)",
    )
    g.add_argument(
        "--sparsity_type",
        default="unstructured",
        help="unstructured, or N:M such as 2:4 or 4:8 (N zeros in every M weights) (default: %(default)s)",
    )
    g.add_argument("--use_variant", action="store_true", help="Wanda's appendix variant (unstructured only)")
    g.add_argument("--Hyper_m", type=float, default=None, help="OWL's outlier threshold M (5)")
    g.add_argument("--alpha", type=float, default=None, help="DLP's density half-range alpha (0.15)")
    g.add_argument(
        "--dlp_statistic",
        default=None,
        help="DLP's block statistic: mean (the code) or median (the paper) (default: mean)",
    )
    g.add_argument(
        "--graph_string",
        "--dsa_graph",
        dest="graph_string",
        default=None,
        help="DSA's allocation expression, e.g. one found by dlp-search (required with --allocation dsa)",
    )
    g.add_argument(
        "--evopress",
        default=None,
        metavar="FILE",
        help="a saved EvoPress search (dlp-evopress --save FILE): its per-linear sparsities "
        "(with --allocation evopress)",
    )
    g.add_argument(
        "--clip_densities", action="store_true", help="clip an allocation that leaves (0, 1] instead of refusing it"
    )
    add_recent_method_arguments(g)
    g.add_argument("--percdamp", type=float, default=None, help="SparseGPT's Hessian dampening (0.01)")
    g.add_argument("--blocksize", type=int, default=None, help="SparseGPT's column block size (128)")
    add_sparsegpt_arguments(g)
    g.add_argument(
        "--perturb",
        type=float,
        default=None,
        help="float-sensitivity probe: multiply every pruning statistic by (1 + PERTURB * N(0, 1)), e.g. 1e-6",
    )
    g.add_argument("--perturb_seed", type=int, default=None, help="seed of the --perturb noise (default: 0)")

    g = parser.add_argument_group("data")
    add_calibration_arguments(g)
    g.add_argument(
        "--eval",
        default=None,
        help="perplexity text, the forms of --calibration but c4 (wikitext2:/local/test.parquet: a local WikiText-2 "
        f"test), or 'none' (default: {EVAL_DEFAULT_HELP}; offline, pass a local copy)",
    )
    g.add_argument("--eval_windows", type=int, default=None, help="evaluate on the first N windows (default: all)")

    g = parser.add_argument_group("zero-shot accuracy (lm-eval)")
    g.add_argument(
        "--eval_zero_shot",
        action="store_true",
        help="also measure zero-shot accuracy with lm-eval on the pruned model (offline, shipped task data)",
    )
    g.add_argument(
        "--tasks",
        default=None,
        help="comma-separated zero-shot tasks (default: boolq,rte,hellaswag,winogrande,arc_easy,arc_challenge,"
        "openbookqa; also piqa)",
    )
    g.add_argument("--limit", type=int, default=None, help="zero-shot examples per task (default: all)")
    g.add_argument(
        "--zero_shot_batch_size", type=int, default=8, help="lm-eval requests per forward (default: %(default)s)"
    )
    g.add_argument(
        "--add_bos_token", action="store_true", help="prepend BOS to zero-shot requests (the papers did not)"
    )
    g.add_argument(
        "--zero_shot_source",
        default="local",
        help="local (shipped data, offline), hub (lm-eval's stock tasks, downloads data) or hub:DIR (the stock "
        "tasks on local copies of the hub's parquet files, as make rehearsal-assets writes) (default: %(default)s)",
    )

    g = parser.add_argument_group(
        "LoRA recovery (after pruning; defaults: the papers' recipe)",
        "Fine-tune a LoRA adapter on the pruned model, its sparse base frozen; the record's recovery section has "
        "perplexity before, with the adapter (unmerged, the papers' number) and merged with the mask applied again.",
    )
    g.add_argument("--lora_steps", type=int, default=0, help="optimizer steps; 0 = no recovery (default: %(default)s)")
    g.add_argument("--lora_rank", type=int, default=None, help="LoRA rank r (8)")
    g.add_argument("--lora_alpha", type=float, default=None, help="LoRA alpha; the update is scaled by alpha/r (16)")
    g.add_argument("--lora_lr", type=float, default=None, help="AdamW learning rate (1e-4)")
    g.add_argument(
        "--lora_batch_tokens", type=int, default=None, help="tokens per optimizer step, whole windows (131072)"
    )
    g.add_argument(
        "--lora_targets", default=None, help="comma-separated decoder linears to adapt, or 'all' (q_proj,v_proj)"
    )
    g.add_argument("--lora_seqlen", type=int, default=None, help="training window length (default: --seqlen)")
    g.add_argument("--lora_micro_batch", type=int, default=None, help="windows per forward; the rest accumulates (1)")
    g.add_argument("--lora_warmup", type=int, default=None, help="linear warm-up steps, then linear decay (5)")
    g.add_argument("--lora_dropout", type=float, default=None, help="LoRA dropout (0.05)")
    g.add_argument(
        "--lora_data", default=None, help="training text, same forms as --calibration (default: --calibration)"
    )
    g.add_argument("--lora_heldout", type=int, default=None, help="held-out training windows for the curve (128)")
    g.add_argument("--lora_eval_every", type=int, default=None, help="steps between held-out evaluations (10)")
    g.add_argument(
        "--lora_precision", default=None, help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16 (default: auto)"
    )

    g = add_output_arguments(
        parser, "path of the JSON result record (a directory, or a path ending in '/', gets <config hash>.json)"
    )
    g.add_argument(
        "--save_model",
        default=None,
        metavar="DIR",
        help="save the pruned model (safetensors + tokenizer + sparsity.json) to DIR, a new or empty directory; "
        "after LoRA recovery the sparse base there and the adapter in DIR/adapter (peft format)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="let --save_model replace a directory an earlier --save_model wrote (its dlp_lib-manifest.json "
        "lists it), only if it holds nothing else and nothing in it changed; a folder with any other file is "
        "refused, never deleted",
    )
    # accepted so the papers' scripts run unchanged
    parser.add_argument("--cache_dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--outlier_by_wmetric", action="store_true", help=argparse.SUPPRESS)  # OWL's default metric
    return parser


def _effective_sparsity(args, nm) -> float:
    """``--sparsity_ratio``, checked; for N:M the pattern's N/M (a differing ratio is warned about)."""
    from ..config import ConfigError, pattern_sparsity

    ratio = args.sparsity_ratio
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise ConfigError(f"--sparsity_ratio must be in [0, 1) (the fraction of zeros); got {ratio}")
    if nm is None:
        return DEFAULT_SPARSITY if ratio is None else ratio
    fixed = pattern_sparsity(args.sparsity_type, ratio)
    if ratio is not None and abs(ratio - fixed) > 1e-9:
        log.warning("--sparsity_type %d:%d prunes %g of the weights; ignoring --sparsity_ratio %g", *nm, fixed, ratio)
    return fixed


def build_prune_config(args):
    """The PruneConfig the flags ask for, or None for ``--prune_method dense``."""
    from ..config import (
        DSA_README_GRAPH,
        SEARCHED_GRAPH,
        ConfigError,
        PruneConfig,
        parse_sparsity_type,
        split_method,
    )

    if args.prune_method.lower() == DENSE:
        if args.allocation not in (None, "uniform"):
            raise ConfigError(
                f"--allocation {args.allocation} needs a pruning method; drop it or pick one with --prune_method"
            )
        if args.sparsity_ratio:
            log.warning("--prune_method dense: ignoring --sparsity_ratio %g", args.sparsity_ratio)
        return None
    method, allocation = split_method(args.prune_method)
    if args.allocation is not None:
        args.allocation = args.allocation.lower()
        if allocation is not None and args.allocation != allocation:
            raise ConfigError(
                f"--prune_method {args.prune_method} already sets allocation {allocation!r}, which conflicts with "
                f"--allocation {args.allocation}; drop one of them"
            )
        allocation = args.allocation
    nm = parse_sparsity_type(args.sparsity_type)
    kwargs = dict(
        method=method,
        sparsity=_effective_sparsity(args, nm),
        sparsity_type="unstructured" if nm is None else f"{nm[0]}:{nm[1]}",
        allocation=allocation or "uniform",
        clip_densities=args.clip_densities,
        use_variant=args.use_variant,
        sparsegpt_sweep=args.sparsegpt_sweep,
        sparsegpt_hessian=args.sparsegpt_hessian,
    )
    optional = {
        "owl_lambda": args.Lamda,
        "dsa_lambda": args.Lamda,
        "owl_m": args.Hyper_m,
        "dlp_alpha": args.alpha,
        "dlp_statistic": args.dlp_statistic,
        "dsa_graph": args.graph_string,
        "evopress": args.evopress,
        "percdamp": args.percdamp,
        "blocksize": args.blocksize,
        "perturb": args.perturb,
        "perturb_seed": args.perturb_seed,
        **{name: getattr(args, name) for name in RECENT_METHOD_FLAGS},
        "ria_reallocation": args.ria_reallocation or None,
    }
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    if args.evopress is not None and kwargs["allocation"] != "evopress":
        raise ConfigError(f"--evopress {args.evopress} is an allocation: add --allocation evopress, or drop --evopress")
    if kwargs["allocation"] == "evopress" and args.evopress is not None and args.sparsity_ratio is None:
        from ..evopress_file import read_allocation

        kwargs["sparsity"] = read_allocation(args.evopress)["sparsity"]  # the sparsity it was searched for
    if kwargs.get("allocation") == "dsa" and args.graph_string is None:
        raise ConfigError(
            f"--allocation dsa needs --dsa_graph: DSA's README expression {DSA_README_GRAPH} is not finite on most "
            "models that are not LLaMA-1-7B (asin of a variance above tan 1), including the embedded one; give it "
            f"explicitly to try it, take one that works on the embedded model ({SEARCHED_GRAPH}, found by notebook 10) "
            "or search one for your model (dlp-search)"
        )
    return PruneConfig(**kwargs)  # parses a DSA expression strictly


LORA_FLAGS = {
    "lora_rank": "rank",
    "lora_alpha": "alpha",
    "lora_lr": "lr",
    "lora_batch_tokens": "batch_tokens",
    "lora_targets": "targets",
    "lora_seqlen": "seqlen",
    "lora_micro_batch": "micro_batch",
    "lora_warmup": "warmup_steps",
    "lora_dropout": "dropout",
    "lora_data": "data",
    "lora_heldout": "heldout_windows",
    "lora_eval_every": "eval_every",
    "lora_precision": "precision",
}


def build_recovery_config(args):
    """The RecoveryConfig the ``--lora_*`` flags ask for, or None without ``--lora_steps``."""
    from ..config import ConfigError
    from ..recovery import RecoveryConfig

    given = {field: getattr(args, flag) for flag, field in LORA_FLAGS.items() if getattr(args, flag) is not None}
    if args.lora_steps < 0:
        raise ConfigError(f"--lora_steps must be >= 0 (0: no recovery); got {args.lora_steps}")
    if not args.lora_steps:
        if given:
            log.warning("--lora_* settings only apply with --lora_steps > 0; ignoring them")
        return None
    return RecoveryConfig(steps=args.lora_steps, **given)


def build_run_config(args):
    """Validate every flag, the output places included, and return ``(RunConfig, record path or None)``;
    raises ConfigError."""
    from ..config import BY_MODEL
    from ..models import resolve_dtype
    from ..pipeline import RunConfig, validate

    prune = build_prune_config(args)
    resolve_dtype(args.dtype)
    args.device = resolve_device(args.device)
    if args.eval is None:
        eval_source = BY_MODEL  # the model's default (config.default_sources)
    else:
        eval_source = None if args.eval.lower() in ("none", "") else args.eval
    zero_shot_tasks = None
    if args.eval_zero_shot:
        from ..zeroshot import PAPER_TASKS, resolve_tasks

        zero_shot_tasks = tuple(resolve_tasks(args.tasks or PAPER_TASKS, args.zero_shot_source))
    elif args.tasks or args.limit is not None or args.add_bos_token:
        log.warning("--tasks, --limit and --add_bos_token only apply with --eval_zero_shot; ignoring them")
    config = RunConfig(
        model=args.model,
        prune=prune,
        calibration=BY_MODEL if args.calibration is None else args.calibration,
        nsamples=args.nsamples,
        seqlen=args.seqlen,
        seed=args.seed,
        eval=eval_source,
        eval_windows=args.eval_windows,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        offload=args.offload,
        device_map=args.device_map,
        zero_shot_tasks=zero_shot_tasks,
        zero_shot_limit=args.limit if zero_shot_tasks else None,
        zero_shot_batch_size=args.zero_shot_batch_size if zero_shot_tasks else 8,
        zero_shot_bos=args.add_bos_token if zero_shot_tasks else False,
        zero_shot_source=args.zero_shot_source if zero_shot_tasks else "local",
        recovery=build_recovery_config(args),
    )
    validate(config)
    model_dir = check_model_destination(args, config.model)
    save = record_destination(args.save, config.to_dict()) if args.save else None
    check_apart(save, model_dir)
    if args.cache_dir:
        log.warning("--cache_dir is ignored; set HF_HOME (hub downloads) or DLP_CACHE_DIR (dlp_lib caches)")
    return config, save


def summary(record: dict, seconds: float) -> str:
    """A few human-readable lines about a finished run."""
    config = record["config"]
    prune = config["prune"]
    pruning = record.get("pruning") or {}
    if prune is None:
        what = "dense (no pruning)"
    else:
        what = (
            f"{prune['method']} + {prune['allocation']} allocation, {prune['sparsity_type']}, "
            f"target sparsity {prune['sparsity']:.4g}"
        )
    lines = [f"model       {config['model']}: {what}"]
    if "overall_achieved" in pruning:
        lines.append(f"sparsity    {pruning['overall_achieved']:.4f} of the decoder linear weights are zero")
    ppl = record.get("perplexity")
    if ppl:
        lines.append(
            f"perplexity  {ppl['perplexity']:.4f} on {config['eval']} ({ppl['windows']} windows of "
            f"{config['seqlen']} tokens)"
        )
    recovery = record.get("recovery")
    if recovery:
        ppl_r = recovery.get("perplexity") or {}
        settings = recovery["settings"]
        lines.append(
            f"recovery    LoRA r={settings['rank']} on {','.join(settings['targets'])}, {settings['steps']} steps, "
            f"{recovery['trainable_parameters']} trainable parameters, {recovery['seconds']['train']:.0f} s"
        )
        if "adapter" in ppl_r:
            lines.append(
                f"            perplexity {ppl_r['before']:.4f} -> {ppl_r['adapter']:.4f} with the adapter (unmerged), "
                f"{ppl_r.get('merged', float('nan')):.4f} merged with the mask applied again"
            )
    zero = record.get("zero_shot")
    if zero:
        per_task = ", ".join(
            f"{name} {entry['acc']:.3f}" for name, entry in zero["tasks"].items() if entry.get("acc") is not None
        )
        limit = zero["settings"]["limit"]
        lines.append(
            f"zero-shot   mean acc {zero['mean_acc']:.4f} over {len(zero['tasks'])} tasks "
            f"({'all examples' if limit is None else f'first {limit} per task'}): {per_task}"
        )
    lines.append(f"time        {seconds:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 invalid settings)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2, message already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    start_logging(args)
    from ..config import ConfigError
    from ..heap import keep_freed_memory

    try:
        config, save = build_run_config(args)
    except ConfigError as err:
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        return 2
    keep_freed_memory()  # the Makefile's MALLOC_* settings, for a user who runs the command directly

    from transformers.utils import logging as hf_logging

    from ..pipeline import run
    from ..results import check_record_path, save_record
    from ..saving import SaveTarget

    bars = hf_logging.is_progress_bar_enabled()
    if args.quiet:
        hf_logging.disable_progress_bar()
    save_model = SaveTarget(args.save_model, args.overwrite, "--overwrite") if args.save_model else None
    start = time.perf_counter()
    try:
        record = run(config, progress=not args.quiet, save_model=save_model)
    except ConfigError as err:  # found once the model is known (architecture, allocation range, ...), or a failed save
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        return 2
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    seconds = time.perf_counter() - start
    if save is not None:
        try:  # checked again: a file may have appeared there during the run; a full disk says so in one line
            save_record(check_record_path(save, RECORD), record)
        except ConfigError as err:
            print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
            return 2
    print(summary(record, seconds))
    if save is not None:
        print(f"record      {save}")
    if args.save_model:
        print(f"model saved {args.save_model}")
    return 0
