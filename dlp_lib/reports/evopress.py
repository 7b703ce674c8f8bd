"""Notebook 11's EvoPress texts: what a search did and found, and the fitness check's caption."""

from __future__ import annotations

import pandas as pd

from ..experiments import METHOD_NAMES, model_name


def evopress_summary(result: dict, path, settings, config) -> str:
    """Markdown bullets for one search (``ex.evopress``'s result and ``ex.evopress_settings``): the fitness it
    reached, how far it moved from Uniform, the command that applies it, its settings and cost."""
    history = result["history"]
    kept = sum(h["parent_kept"] for h in history)
    blocks = result["block_sparsities"]
    linears = list(result["linear_sparsities"].values())
    ladder = result["ladder"]
    return (
        f"- **{METHOD_NAMES[settings.method]}**: KL {result['fitness']:.4g} from the dense model on the last "
        f"generation's windows; {sum(abs(v) for v in result['levels'])} levels moved from Uniform over "
        f"{len(ladder['units'])} units (linears); block sparsity {100 * min(blocks):.1f}–{100 * max(blocks):.1f}%, "
        f"linear sparsity {100 * min(linears):.1f}–{100 * max(linears):.1f}%, total {100 * settings.sparsity:g}% "
        f"({result['pruned_weights']:,} weights) exactly\n"
        f"- **use it**: `dlp-prune --prune_method {settings.method} --allocation evopress --evopress {path}`\n"
        f"- **search**: {config.generations} generations of {config.offspring} offspring, survivors "
        f"{' → '.join(map(str, config.survivors))} on {' → '.join(map(str, config.tokens))} tokens, seed "
        f"{config.search_seed}; the parent survived {kept} of {len(history)} generations; {result['seconds']:.0f} s "
        f"when it ran\n"
        f"- **database**: every linear at {settings.num_levels} levels each way of {100 * settings.sparsity:g}% "
        f"({ladder['step']:,} weights a level), pruned by {METHOD_NAMES[settings.method]} on the dense model's "
        f"{settings.nsamples} × {settings.seqlen} calibration tokens; KL on {settings.windows} calibration-side "
        f"windows of {settings.window_seqlen} tokens"
    )


def evopress_check_caption(prof: dict, checks: dict, rhos: dict) -> str:
    """The caption of the fitness check: what was compared and Spearman's rank correlation per pruner."""
    search = prof["evopress_search"]
    parts = ", ".join(f"{METHOD_NAMES[m]} {rho:.2f} over {len(checks[m])}" for m, rho in rhos.items())
    return (
        f"Fitness check: allocations along each search (generation 0 = the Uniform start, then parents evenly "
        f"spread, the last one included), each with its KL on all {search['windows']} search windows of "
        f"{search['window_seqlen']} tokens and its perplexity with the table's settings ({prof['nsamples']}×"
        f"{prof['seqlen']} calibration, {prof['eval_windows'] or 'all'} evaluation windows of {prof['seqlen']}, "
        f"seed {prof['seed']}; the start's is the Uniform run's). Spearman rank correlation of KL and perplexity: "
        f"{parts} allocations. Model {model_name(prof)}; profile '{prof.get('name')}'."
    )


def evopress_table(histories: dict) -> pd.DataFrame:
    """The searches' progress in one table (``tables/evopress_search.csv``): per pruner and generation."""
    return pd.concat([h.assign(method=m) for m, h in histories.items()], ignore_index=True)[
        ["method", "generation", "fitness", "parent_kept", "moved", "last_stage_windows", "seconds", "parent_key"]
    ]
