"""DSA's allocation expressions: the operators, the grammar ``W:(PRE,...)-(REDUCTION)-(POST,...)`` read
strictly, and an expression's value on one block's scores (docs/methods.md#dsa)."""

from __future__ import annotations

import math
import re

import torch

from .errors import ConfigError


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
