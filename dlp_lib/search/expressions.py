"""DSA allocation expressions: the grammar's operators, one expression, the space of them and its variation."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from ..allocation import DSA_PREPROCESS, DSA_REDUCTION, DSA_TRANSFORM, parse_dsa_graph
from ..config import (
    ConfigError,
    check_int,
)

log = logging.getLogger(__name__)

# the grammar: every op of allocation.py's tables; NO_OP is the empty list, so it is left out
PRE_OPS = tuple(op for op in DSA_PREPROCESS if op != "NO_OP")
REDUCTIONS = tuple(op for op in DSA_REDUCTION if op != "NO_OP")
POST_OPS = tuple(op for op in DSA_TRANSFORM if op != "NO_OP")
WINDOW_SEED_OFFSET = 1_000_003  # search windows: the calibration seed plus this, so they differ from calibration


# ------------------------------------------------------------------------------------ expressions
@dataclass(frozen=True)
class Expression:
    """One allocation expression: element-wise pre-process ops, one reduction, scalar transforms."""

    pre: tuple[str, ...]
    reduction: str
    post: tuple[str, ...]

    def __str__(self) -> str:
        return f"W:({','.join(self.pre)})-({self.reduction})-({','.join(self.post)})"

    @classmethod
    def parse(cls, text: str) -> Expression:
        """``"W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)"`` -> Expression; the dead ``(K)`` field is dropped and
        NO_OP entries are removed. Exactly one reduction is required."""
        pre, reduction, post = parse_dsa_graph(text)
        reduction = [op for op in reduction if op != "NO_OP"] or ["MEAN"]  # NO_OP reduction = the mean
        if len(reduction) != 1:
            raise ConfigError(f"a searched expression has exactly one reduction; {text!r} has {reduction}")
        drop = lambda ops: tuple(op for op in ops if op != "NO_OP")  # noqa: E731
        return cls(drop(pre), reduction[0], drop(post))


@dataclass(frozen=True)
class ExpressionSpace:
    """Expressions with at most ``max_pre`` pre-process ops and ``max_post`` transforms, and the
    variation operators on them. Every operator returns an expression of this space."""

    max_pre: int = 2
    max_post: int = 2

    def __post_init__(self):
        check_int("max_pre", self.max_pre, 0, 8, hint=" (pre-process ops in an expression)")
        check_int("max_post", self.max_post, 0, 8, hint=" (transforms in an expression)")

    def contains(self, expr: Expression) -> bool:
        return (
            len(expr.pre) <= self.max_pre
            and len(expr.post) <= self.max_post
            and all(op in PRE_OPS for op in expr.pre)
            and expr.reduction in REDUCTIONS
            and all(op in POST_OPS for op in expr.post)
        )

    def size(self) -> int:
        """How many distinct expressions the space holds (op sequences of each length, one reduction)."""
        sequences = lambda ops, most: sum(len(ops) ** k for k in range(most + 1))  # noqa: E731
        return sequences(PRE_OPS, self.max_pre) * len(REDUCTIONS) * sequences(POST_OPS, self.max_post)

    def random(self, rng: random.Random) -> Expression:
        pre = tuple(rng.choice(PRE_OPS) for _ in range(rng.randint(0, self.max_pre)))
        post = tuple(rng.choice(POST_OPS) for _ in range(rng.randint(0, self.max_post)))
        return Expression(pre, rng.choice(REDUCTIONS), post)

    def crossover(self, a: Expression, b: Expression, rng: random.Random) -> Expression:
        """Each of the three fields from one parent or the other."""
        return Expression(
            rng.choice((a.pre, b.pre)), rng.choice((a.reduction, b.reduction)), rng.choice((a.post, b.post))
        )

    def mutate(self, expr: Expression, rng: random.Random) -> Expression:
        """One edit: replace, insert or delete one pre-process op or transform, or replace the reduction.
        The result differs from ``expr``."""
        for _ in range(100):
            kind = rng.choice(("pre", "reduction", "post"))
            if kind == "reduction":
                child = Expression(expr.pre, rng.choice(REDUCTIONS), expr.post)
            else:
                ops, table, limit = (
                    (expr.pre, PRE_OPS, self.max_pre)
                    if kind == "pre"
                    else (
                        expr.post,
                        POST_OPS,
                        self.max_post,
                    )
                )
                ops = list(ops)
                edits = [e for e, ok in (("replace", ops), ("insert", len(ops) < limit), ("delete", ops)) if ok]
                if not edits:
                    continue
                edit = rng.choice(edits)
                if edit == "replace":
                    ops[rng.randrange(len(ops))] = rng.choice(table)
                elif edit == "insert":
                    ops.insert(rng.randint(0, len(ops)), rng.choice(table))
                else:
                    del ops[rng.randrange(len(ops))]
                child = (
                    Expression(tuple(ops), expr.reduction, expr.post)
                    if kind == "pre"
                    else Expression(expr.pre, expr.reduction, tuple(ops))
                )
            if child != expr:
                return child
        return self.random(rng)  # pragma: no cover - a space with one expression
