"""Candidates and their fitness cache: each expression's densities and score, on disk so a killed search resumes."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..cache import stable_hash, write_json_atomic
from ..config import (
    ConfigError,
)

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """An evaluated expression. ``fitness`` is the perplexity on the search windows (lower is better),
    +inf when the expression is invalid on this model (``reason`` says why)."""

    expression: str
    fitness: float
    reason: str | None = None
    densities: list[float] | None = None
    statistic: list[float] | None = None
    seconds: float = 0.0
    shared_with: str | None = None  # an earlier expression with the same densities: its fitness, no new run

    @property
    def valid(self) -> bool:
        return math.isfinite(self.fitness)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["fitness"] = self.fitness if self.valid else None  # strict JSON has no Infinity
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        d = dict(d)
        d["fitness"] = math.inf if d.get("fitness") is None else float(d["fitness"])
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls) if f.name in d})


# ops whose arithmetic changed after candidates were cached: an expression with one gets a new cache entry
# (GEOMETRIC_MEAN: in log space since the product underflowed, dsa_ops._geometric_mean)
OP_REVISIONS = {"GEOMETRIC_MEAN": 2}


def _densities_key(densities) -> str:
    return json.dumps([round(float(d), 12) for d in densities])


class CachedFitness:
    """Fitness with a disk cache: one JSON file per expression in ``directory`` (a hash of the
    settings names it), written atomically as soon as the candidate is evaluated, so a killed search
    loses at most the candidate in progress. Subclasses implement ``_statistics`` and ``_run``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.computed = 0  # candidates evaluated in this process (not read from the cache)
        self._by_densities: dict[str, str] = {}
        for path in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []:
            candidate = self._read(path)
            if candidate is not None and candidate.densities is not None and candidate.shared_with is None:
                self._by_densities.setdefault(_densities_key(candidate.densities), candidate.expression)

    def _path(self, expression: str) -> Path:
        changed = {op: v for op, v in OP_REVISIONS.items() if op in expression}
        return self.directory / f"{stable_hash([expression, changed] if changed else expression)}.json"

    def _read(self, path: Path) -> Candidate | None:
        try:
            return Candidate.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, KeyError) as err:
            log.warning("ignoring unreadable search candidate %s (%s); it is evaluated again", path, err)
            return None

    def cached(self, expression: str) -> Candidate | None:
        path = self._path(expression)
        if not path.is_file():
            return None
        candidate = self._read(path)
        return candidate if candidate is not None and candidate.expression == expression else None

    def evaluate(self, expressions: Iterable[str]) -> list[Candidate]:
        return [candidate for candidate, _ in self.evaluate_iter(expressions)]

    def evaluate_iter(self, expressions: Iterable[str]) -> Iterator[tuple[Candidate, bool]]:
        """``(candidate, from_cache)`` for each expression, in order."""
        expressions = list(expressions)
        missing = [e for e in expressions if self.cached(e) is None]
        values = self._statistics(missing) if missing else {}
        for expression in expressions:
            candidate = self.cached(expression)
            if candidate is not None:
                yield candidate, True
                continue
            candidate = self._candidate(expression, values[expression])
            write_json_atomic(self._path(expression), candidate.to_dict())
            self.computed += 1
            yield candidate, False

    def _candidate(self, expression: str, statistic) -> Candidate:
        start = time.perf_counter()
        if isinstance(statistic, str):  # the reason it is not finite
            return Candidate(expression, math.inf, statistic)
        try:
            densities = self._densities(expression, statistic)
        except ConfigError as err:
            return Candidate(expression, math.inf, str(err), statistic=list(statistic))
        key = _densities_key(densities)
        twin = self._by_densities.get(key)
        if twin is not None:
            earlier = self.cached(twin)
            if earlier is not None and earlier.valid:
                return Candidate(expression, earlier.fitness, None, densities, list(statistic), 0.0, twin)
        fitness = self._run(densities)
        self._by_densities[key] = expression
        return Candidate(expression, fitness, None, densities, list(statistic), time.perf_counter() - start)

    # to implement
    def _statistics(self, expressions: list[str]) -> dict[str, list[float] | str]:
        """Per expression: its per-block values, or the reason it cannot be evaluated."""
        raise NotImplementedError

    def _densities(self, expression: str, statistic: list[float]) -> list[float]:
        raise NotImplementedError

    def _run(self, densities: list[float]) -> float:
        raise NotImplementedError
