"""Run specs: the runs each notebook asks for (main table, sweep, hyper-parameters, N:M, recovery, zero-shot)."""

from __future__ import annotations

import logging

from ..results import config_key
from .labels import HYPER_ALLOCATION
from .runs import run_config, uses_calibration

log = logging.getLogger(__name__)


def dense_spec(prof: dict) -> dict:
    return {"method": None}


def main_specs(
    prof: dict,
    methods: list[str] | None = None,
    dsa_graph: str | None = None,
    allocations: list[str] | None = None,
    evopress: dict[str, str] | None = None,
    recent: bool = False,
    atp_betas: dict[str, float] | None = None,
) -> list[dict]:
    """Dense, then every pruner (default: the profile's main methods) x allocation (default: the
    profile's) at the main sparsity (unstructured); with ``dsa_graph`` (the searched expression,
    ``dsa_search``) each pruner also gets a DSA row, and with ``evopress`` (``{pruner: search result
    file}``, ``evopress_allocations``) each pruner searched gets an EvoPress row with its own search.
    With ``recent``, the pruners of ``prof["recent"]`` get AlphaPruning and LSA rows, and an ATP row
    where ``atp_betas`` (``{pruner: beta}``, ``atp_choices``) has their beta."""
    s = prof["main_sparsity"]
    methods = prof["main_methods"] if methods is None else methods
    allocations = prof["allocations"] if allocations is None else allocations
    specs = [dense_spec(prof)]
    for m in methods:
        specs += [{"method": m, "sparsity": s, "allocation": a} for a in allocations]
        if dsa_graph is not None:
            specs.append({"method": m, "sparsity": s, "allocation": "dsa", "dsa_graph": dsa_graph})
        if evopress and m in evopress:
            specs.append({"method": m, "sparsity": s, "allocation": "evopress", "evopress": evopress[m]})
        if recent and m in prof["recent"]["methods"]:
            specs += recent_specs(prof, m, atp_betas or {})
    return specs


def recent_specs(prof: dict, method: str, atp_betas: dict[str, float]) -> list[dict]:
    """``method``'s AlphaPruning and LSA rows at the main sparsity, and its ATP row if its beta is known."""
    s, specs = prof["main_sparsity"], []
    for allocation in prof["recent"]["allocations"]:
        if allocation != "atp":
            specs.append({"method": method, "sparsity": s, "allocation": allocation})
        elif method in atp_betas:
            specs.append({"method": method, "sparsity": s, "allocation": "atp", "atp_beta": float(atp_betas[method])})
    return specs


def ria_specs(prof: dict) -> list[dict]:
    """RIA at the main sparsity with each of ``prof["recent"]["ria"]``'s allocations (notebook 12)."""
    return [{"method": "ria", "sparsity": prof["main_sparsity"], "allocation": a} for a in prof["recent"]["ria"]]


def table_allocations(prof: dict) -> list[str]:
    """The allocations of the main table, in order: the profile's, then DSA (the searched expression),
    EvoPress (the searched per-linear sparsities), then the newer AlphaPruning, ATP and LSA."""
    return [*prof["allocations"], "dsa", "evopress", *prof["recent"]["allocations"]]


def other_seeds(prof: dict) -> list[int]:
    """The seeds of the searched and newer rows and RIA (``prof["other_seeds"]``, default ``prof["seeds"]``)."""
    return list(prof.get("other_seeds", prof["seeds"]))


def zero_shot_seeds(prof: dict) -> list[int]:
    """The seeds of the zero-shot runs (``prof["zero_shot"]["seeds"]``, default ``prof["seeds"]``)."""
    return list(prof["zero_shot"].get("seeds", prof["seeds"]))


def spec_seeds(prof: dict, spec: dict) -> list[int]:
    """The calibration seeds ``spec`` runs on: ``prof["seeds"]`` for the profile's own allocations (Uniform,
    OWL, DLP: the claims the papers make), ``prof["other_seeds"]`` (default the same) for the searched and
    newer rows and RIA."""
    if spec.get("allocation", "uniform") in prof["allocations"] and spec.get("method") != "ria":
        return list(prof["seeds"])
    return other_seeds(prof)


def seeded(prof: dict, specs: list[dict]) -> list[dict]:
    """Each spec once per calibration seed it runs on (:func:`spec_seeds`); specs that read no
    calibration data once, on the profile's seed (another seed would give the very same run)."""
    out = []
    for spec in specs:
        if uses_calibration(spec.get("method"), spec.get("allocation", "uniform")):
            out += [{**spec, "seed": seed} for seed in spec_seeds(prof, spec)]
        else:
            out.append(spec)
    return out


def float_sensitivity_specs(prof: dict) -> list[dict]:
    """For each cell of ``prof["float_sensitivity"]``: the normal run (profile seed) and ``draws`` runs
    with the pruning statistics perturbed at float-rounding level (``PruneConfig.perturb``)."""
    setting = prof["float_sensitivity"]
    specs = []
    for cell in setting["cells"]:
        specs.append(dict(cell))
        specs += [{**cell, "perturb": setting["scale"], "perturb_seed": d} for d in range(1, setting["draws"] + 1)]
    return specs


def sweep_specs(prof: dict) -> list[dict]:
    """Each sweep pruner x sweep allocation x sparsity (single runs on the profile seed)."""
    return [
        {"method": m, "sparsity": s, "allocation": a}
        for m, sparsities in prof["sweep"].items()
        for a in prof.get("sweep_allocations", prof["allocations"])
        for s in sparsities
    ]


def hyper_specs(prof: dict) -> list[dict]:
    """Pruned runs of the sensitivity study: one hyper-parameter varied, the others at the defaults."""
    grid = prof["hyper_pruned"]
    specs = [
        {"method": grid["method"], "sparsity": prof["main_sparsity"], "allocation": HYPER_ALLOCATION[name], name: v}
        for name in HYPER_ALLOCATION
        for v in grid.get(name, [])
    ]
    return _unique(prof, specs)


def _unique(prof: dict, specs: list[dict]) -> list[dict]:
    """Specs without repeats of the same run (e.g. OWL at the default λ and at the default M)."""
    seen, unique = set(), []
    for spec in specs:
        key = config_key(run_config(prof, **spec).to_dict())
        if key not in seen:
            seen.add(key)
            unique.append(spec)
    return unique


def nm_specs(prof: dict) -> list[dict]:
    return [
        {"method": m, "sparsity_type": pattern, "allocation": a}
        for m, grid in prof["nm"].items()
        for pattern in grid["patterns"]
        for a in grid["allocations"]
    ]


def recovery_specs(prof: dict) -> list[dict]:
    """Each recovery pruner x allocation at the main sparsity, with LoRA recovery (profile seed)."""
    setting = prof["recovery"]
    return [
        {"method": m, "sparsity": prof["main_sparsity"], "allocation": a, "recovery": True}
        for m in setting["methods"]
        for a in setting["allocations"]
    ]


def recovery_profile(prof: dict) -> dict:
    """The profile notebook 08 runs with: perplexity always, zero-shot accuracy (measured after recovery)
    too where ``prof["recovery"]["zero_shot"]``: one run per cell gives both."""
    if not prof["recovery"].get("zero_shot"):
        return prof
    return {**zero_shot_profile(prof), "eval": prof["eval"]}


def zero_shot_profile(prof: dict) -> dict:
    """``prof`` with zero-shot evaluation switched on (``prof["zero_shot"]``) and perplexity off, for
    ``run_config``/``run_specs``: its records are separate from the perplexity runs'."""
    zs, seeds = prof["zero_shot"], zero_shot_seeds(prof)
    return {
        **prof,
        "seeds": seeds,  # `seeded` runs the zero-shot cells on these
        "other_seeds": seeds,
        "eval": None,
        "zero_shot_tasks": tuple(zs["tasks"]),
        "zero_shot_limit": zs["limit"],
        "zero_shot_batch_size": zs["batch_size"],
        "zero_shot_bos": zs["add_bos_token"],
        "zero_shot_source": zs["source"],
    }


def zero_shot_specs(prof: dict) -> list[dict]:
    """Dense, then each zero-shot pruner x allocation at the main sparsity (run with zero_shot_profile)."""
    zs = prof["zero_shot"]
    return main_specs(prof, zs["methods"], allocations=zs.get("allocations", prof["allocations"]))


def notebook_specs(prof: dict, hyper: list[dict] | None = None) -> list[tuple[dict, dict]]:
    """``(profile, spec)`` of every run notebooks 01-08 and 12 ask for (ATP's rows, which wait for their beta,
    aside), in notebook order: the one list both the
    cost estimate (:func:`dlp_lib.experiments.cost.planned_runs`) and the grid (``grid.jobs.plan``) read.
    ``hyper`` replaces notebook 05's hyper-parameter specs (the grid passes the feasible ones). Zero-shot
    and recovery runs carry their own profiles; repeats are left in (callers skip a configuration seen)."""
    hyper = hyper_specs(prof) if hyper is None else hyper
    pairs = [(prof, dense_spec(prof))]
    pairs += [(prof, spec) for spec in seeded(prof, main_specs(prof, recent=True) + ria_specs(prof))]
    pairs += [(prof, spec) for spec in float_sensitivity_specs(prof) + sweep_specs(prof) + hyper + nm_specs(prof)]
    zs = zero_shot_profile(prof)
    pairs += [(zs, spec) for spec in seeded(zs, zero_shot_specs(prof))]
    rp = recovery_profile(prof)
    return pairs + [(rp, spec) for spec in recovery_specs(prof)]
