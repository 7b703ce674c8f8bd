"""Layer-wise allocation: one scalar statistic per decoder block -> one density per block.

OWL, DLP and DSA are one affine template (methods-spec §3.0)::

    d_l = (1 - s) + 2 * width * direction * (x_l - mean(x)) / (max(x) - min(x))

with ``direction = +1`` for OWL (more outliers -> denser) and ``-1`` for DLP and DSA (larger
statistic -> sparser). The density range is exactly ``2 * width`` and the (parameter-weighted) mean
density is exactly ``1 - s``. Pure functions of per-block statistics: no model, no data.
"""

from __future__ import annotations

import logging
import math
import re

import torch

from .config import ConfigError, PruneConfig

log = logging.getLogger(__name__)

DIRECTION = {"owl": +1.0, "dlp": -1.0, "dsa": -1.0}
MIN_DENSITY = 0.01  # clipping never leaves a block with fewer than 1% of its weights


# ------------------------------------------------------------------------------ block statistics
def owl_outlier_ratio(scores: torch.Tensor, m: float) -> float:
    """Percentage of a block's Wanda scores above ``m`` times their mean (OWL's statistic)."""
    return 100.0 * float((scores > m * scores.mean()).sum()) / scores.numel()


def dlp_unimportance(scores: torch.Tensor, statistic: str = "mean") -> float:
    """|mean| (the reference code) or |median| (the paper) of a block's Wanda scores (DLP's statistic)."""
    value = scores.mean() if statistic == "mean" else scores.median()
    return abs(float(value))


# --- DSA's graph expressions (methods-spec §3.3.1) ---
def _log(x):
    x = x.clone()
    x[x <= 0] = 1
    return torch.log(x + 1e-6)


def _abslog(x):
    x = x.clone()
    x[x == 0] = 1
    return torch.log(x.abs())


def _normalize(x):
    return torch.nan_to_num((x - x.mean()) / x.std())


def _entropy(x):
    p = x.abs() / x.abs().sum()
    p = p[p > 0]
    return -(p * torch.log(p)).sum()


def _geometric_mean(x):
    """prod(x) ** (1/n), computed in log space. A documented departure: the reference multiplies the n
    values first, which underflows to 0 (or overflows to inf) on any block-sized vector, so every
    expression with this op was the uniform allocation in disguise; here it is the same number wherever the
    product is representable. A zero gives 0; a negative product, which has no real n-th root, gives NaN as
    in the reference."""
    if bool((x == 0).any()):
        return x.new_zeros(())
    if int((x < 0).sum()) % 2:
        return x.new_tensor(float("nan"))
    return torch.exp(torch.log(x.abs()).mean())


DSA_PREPROCESS = {
    "NO_OP": lambda x: x,
    "ABS": torch.abs,
    "LOG": _log,
    "ABSLOG": _abslog,
    "POW": lambda x: x * x,
    "EXP": torch.exp,
    "NORMALIZE": _normalize,
    "SIGMOID": torch.sigmoid,
    "TANH": torch.tanh,
    "MMS": lambda x: (x - x.min()) / (x.max() - x.min() + 1e-9),
}
DSA_REDUCTION = {
    "NO_OP": lambda x: x,
    "FROBENIUS_NORM": torch.linalg.vector_norm,
    "L1_NORM": lambda x: x.abs().mean(),
    "GEOMETRIC_MEAN": _geometric_mean,
    "MEAN": torch.mean,
    "VAR": torch.var,
    "STD": torch.std,
    "ENTROPY": _entropy,
}
DSA_MATRIX_ONLY = ("GRAM", "CORREF", "DIAGONAL", "DETERMINANT", "RANK", "SLOGDET")
DSA_TRANSFORM = {
    "NO_OP": lambda v: v,
    "SIN": math.sin,
    "COS": math.cos,
    "TAN": math.tan,
    "ASIN": math.asin,
    "ACOS": math.acos,
    "ATAN": math.atan,
    "EXP": math.exp,
    "LOG": math.log,
    "ABS": abs,
    "SIGMOID": lambda v: 1 / (1 + math.exp(-v)),
    "TANH": math.tanh,
    "SOFTPLUS": lambda v: math.log1p(math.exp(v)),
}


GRAPH_FORM = "'W:(PRE,...)-(REDUCTION)-(POST,...)[-(K)]'"
_OP_NAME = re.compile(r"\s*([A-Za-z0-9_]+)\s*")  # digits too: "(9)" is then refused as an unknown op, by name
_K_FIELD = re.compile(r"\s*\d*\s*")
_BLANK = re.compile(r"\s*")


def _graph_error(graph: str, pos: int, expected: str) -> ConfigError:
    found = repr(graph[pos]) if pos < len(graph) else "the end"
    return ConfigError(
        f"DSA expression {graph!r}: expected {expected} at character {pos + 1}, found {found}; it must look like "
        f"{GRAPH_FORM}"
    )


def _graph_fields(graph: str) -> list[list[str]]:
    """The op names of each field of a DSA expression, read strictly: ``W:``, then 3 or 4 parenthesised
    fields joined by ``-``, and nothing else (a character out of place is an error that points at it)."""
    if not isinstance(graph, str):
        raise ConfigError(f"a DSA expression is a string like {GRAPH_FORM}; got {graph!r}")
    if not graph.startswith("W:"):
        raise _graph_error(graph, 0, "'W:'")
    fields, pos = [], 2
    while True:
        if pos >= len(graph) or graph[pos] != "(":
            raise _graph_error(graph, pos, "'('")
        start, ops = pos + 1, []
        if len(fields) == 3:  # DSA's dead 4th field: a number or nothing
            end = _K_FIELD.match(graph, start).end()
        elif graph[start:].lstrip().startswith(")"):  # an empty field
            end = _BLANK.match(graph, start).end()
        else:
            end = start
            while True:
                match = _OP_NAME.match(graph, end)
                if match is None:
                    raise _graph_error(graph, end, "an op name")
                ops.append(match.group(1).upper())
                end = match.end()
                if end < len(graph) and graph[end] == ",":
                    end += 1
                    continue
                break
        if end >= len(graph) or graph[end] != ")":
            raise _graph_error(graph, end, "a number or ')'" if len(fields) == 3 else "',' or ')'")
        fields.append(ops)
        pos = end + 1
        if pos == len(graph):
            break
        if len(fields) == 4 or graph[pos] != "-":
            raise _graph_error(graph, pos, "the end" if len(fields) == 4 else "'-' or the end")
        pos += 1
    if len(fields) < 3:
        raise ConfigError(f"DSA expression {graph!r} has {len(fields)} fields; it must look like {GRAPH_FORM}")
    return fields[:3]


def parse_dsa_graph(graph: str) -> tuple[list[str], list[str], list[str]]:
    """``"W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)"`` -> (["ABSLOG"], ["VAR"], ["ATAN", "ASIN"]).
    The optional 4th field (a number) is accepted and ignored (it has no effect in the reference code).
    The whole string must follow that form; anything else is an error naming the character."""
    ops = _graph_fields(graph)
    for names, table, kind in zip(
        ops, (DSA_PREPROCESS, DSA_REDUCTION, DSA_TRANSFORM), ("pre-process", "reduction", "transform")
    ):
        for name in names:
            if name in DSA_MATRIX_ONLY:
                raise ConfigError(f"DSA reduction {name} needs a matrix; block scores are a flat vector")
            if name not in table:
                raise ConfigError(f"unknown DSA {kind} op {name!r} in {graph!r}; known: {', '.join(table)}")
    return ops[0], ops[1], ops[2]


def dsa_value(scores: torch.Tensor, graph: str, block: int | None = None) -> float:
    """Evaluate a DSA graph expression on a block's Wanda scores. A NaN or infinite value is an error
    (the reference silently maps it to 0, which gives that block the densest allocation)."""
    pre, reduce, post = parse_dsa_graph(graph)
    x = scores.to(torch.float64)
    for name in pre:
        x = DSA_PREPROCESS[name](x)
    for name in reduce:
        x = DSA_REDUCTION[name](x)
    value = float(x.mean()) if x.numel() != 1 else float(x)
    try:
        for name in post:
            value = DSA_TRANSFORM[name](value)
    except (ValueError, OverflowError):
        value = float("nan")
    if not math.isfinite(value):
        where = f"block {block}" if block is not None else "a block"
        raise ConfigError(f"DSA expression {graph!r} is not finite on {where} ({value}); choose another expression")
    return value


# ------------------------------------------------------------------------------ the template
def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum()


def affine_densities(statistic, sparsity: float, width: float, direction: float, weights=None) -> torch.Tensor:
    """The template of methods-spec §3.0 in float64, mean weighted by ``weights`` (parameter counts)."""
    x = torch.as_tensor(statistic, dtype=torch.float64)
    w = torch.ones_like(x) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    spread = x.max() - x.min()
    if spread == 0:
        return torch.full_like(x, 1.0 - sparsity)  # all blocks alike: nothing to allocate
    z = direction * (x - _weighted_mean(x, w)) / spread
    return (1.0 - sparsity) + 2.0 * width * z


def largest_width(statistic, sparsity: float, direction: float, weights=None) -> float:
    """The largest alpha/Lamda that keeps every block's density inside (0, 1]."""
    z = affine_densities(statistic, sparsity, 0.5, direction, weights) - (1.0 - sparsity)
    limits = [float("inf")]
    if z.max() > 0:
        limits.append(sparsity / float(z.max()) / 2.0)
    if z.min() < 0:
        limits.append((1.0 - sparsity) / float(-z.min()) / 2.0)
    return min(limits)


def clip_and_redistribute(densities, sparsity: float, weights=None, low: float = MIN_DENSITY) -> torch.Tensor:
    """Clip densities to [low, 1] and shift the unclipped blocks so the weighted mean stays 1 - s."""
    d = torch.as_tensor(densities, dtype=torch.float64).clone()
    w = torch.ones_like(d) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    target = 1.0 - sparsity
    for _ in range(len(d) + 1):
        d = d.clamp(low, 1.0)
        gap = target - _weighted_mean(d, w)
        if gap.abs() < 1e-12:
            break
        free = (d < 1.0) if gap > 0 else (d > low)  # blocks that can move in the gap's direction
        if not free.any():
            break
        d[free] += gap * w.sum() / w[free].sum()
    return d


def allocate(statistic, config: PruneConfig, weights=None) -> torch.Tensor:
    """Per-block densities for ``config.allocation`` from per-block statistics.

    Refuses a width that would push a block outside (0, 1] (naming the largest allowed value),
    unless ``config.clip_densities`` asks to clip and redistribute.
    """
    n = len(statistic)
    if config.allocation == "uniform":
        return torch.full((n,), 1.0 - config.sparsity, dtype=torch.float64)
    width = {"owl": config.owl_lambda, "dlp": config.dlp_alpha, "dsa": config.dsa_lambda}[config.allocation]
    name = {"owl": "Lamda (owl_lambda)", "dlp": "alpha (dlp_alpha)", "dsa": "Lamda (dsa_lambda)"}
    direction = DIRECTION[config.allocation]
    densities = affine_densities(statistic, config.sparsity, width, direction, weights)
    if densities.min() <= 0 or densities.max() > 1 + 1e-12:
        if not config.clip_densities:
            limit = largest_width(statistic, config.sparsity, direction, weights)
            raise ConfigError(
                f"{config.allocation}: {name[config.allocation]} = {width} gives block densities in "
                f"[{float(densities.min()):.4f}, {float(densities.max()):.4f}], outside (0, 1]; the largest "
                f"allowed value at sparsity {config.sparsity} is {limit:.4f} (or ask for clipping: --clip_densities)"
            )
        densities = clip_and_redistribute(densities, config.sparsity, weights)
    return densities


def nm_per_block(densities, n: int, m: int) -> list[int]:
    """Integer zeros-per-group for each block so that the average is exactly ``n`` (blocks of equal
    size): each block's ideal ``m * (1 - d_l)`` shifted to mean ``n``, floored, and the leftover units
    given to the largest remainders. Every value stays within [0, m - 1]."""
    d = torch.as_tensor(densities, dtype=torch.float64)
    ideal = m * (1.0 - d)
    ideal = (ideal - ideal.mean() + n).clamp(0, m - 1)
    floor = ideal.floor()
    leftover = int(round(n * len(d) - float(floor.sum())))
    # largest remainders first; ties go by the unclamped ideal so a denser block never gets more zeros
    raw = m * (1.0 - d)
    key = (ideal - floor) + 1e-9 * (raw - raw.min()) / (raw.max() - raw.min() + 1e-12)
    order = torch.argsort(key, descending=leftover > 0, stable=True)
    result = floor.clone()
    step = 1 if leftover > 0 else -1
    i = 0
    while leftover != 0:
        j = int(order[i % len(d)])
        if 0 <= result[j] + step <= m - 1:
            result[j] += step
            leftover -= step
        i += 1
    return [int(v) for v in result]
