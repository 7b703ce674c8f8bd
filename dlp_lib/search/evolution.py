"""The evolutionary loop: tournament selection, crossover, mutation, elites; the result saved as JSON."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..cache import write_json_atomic
from ..config import (
    DSA_README_GRAPH,
    ConfigError,
    check_int,
    check_number,
)
from .candidates import CachedFitness, Candidate
from .expressions import Expression, ExpressionSpace

log = logging.getLogger(__name__)


# DSA ran a population of 100 for 2000 iterations; beyond these a count is a typo, not a plan (each
# candidate is a pruning run and an evaluation: seconds on a small model, a minute on a 7B one)
MAX_POPULATION = 1000
MAX_GENERATIONS = 10_000


@dataclass(frozen=True)
class SearchConfig:
    """The evolutionary loop. DSA's released code has population 100 and mutation probability 0.2
    (docs/methods.md#dsa); ``initial`` expressions start the first population, random ones fill it."""

    population: int = 16
    generations: int = 10
    seed: int = 0
    elite: int = 2
    tournament: int = 3
    crossover: float = 0.5
    mutation: float = 0.2
    max_pre: int = 2
    max_post: int = 2
    initial: tuple[str, ...] = (DSA_README_GRAPH,)

    def __post_init__(self):
        object.__setattr__(self, "initial", tuple(self.initial))
        check_int("population", self.population, 2, MAX_POPULATION)
        check_int("generations", self.generations, 1, MAX_GENERATIONS)
        check_int("seed", self.seed, 0)
        check_int("elite", self.elite, 0, self.population - 1, hint=f" (below the population, {self.population})")
        check_int("tournament size", self.tournament, 1, self.population, hint=f" (population {self.population})")
        for name in ("crossover", "mutation"):
            check_number(name, getattr(self, name), 0.0, 1.0, hint=" (a probability)")
        if len(self.initial) > self.population:
            raise ConfigError(f"{len(self.initial)} initial expressions do not fit a population of {self.population}")
        space = self.space()  # also checks max_pre / max_post
        if self.population > space.size():
            raise ConfigError(
                f"the search space holds {space.size()} expressions (max_pre {self.max_pre}, max_post "
                f"{self.max_post}), too few for a population of {self.population}: use a population of at most "
                f"{space.size()} or allow more ops (--max_pre, --max_post)"
            )
        for text in self.initial:
            expr = Expression.parse(text)
            if not space.contains(expr):
                raise ConfigError(
                    f"initial expression {text!r} is outside the search space (at most {self.max_pre} pre-process "
                    f"ops and {self.max_post} transforms)"
                )

    def space(self) -> ExpressionSpace:
        return ExpressionSpace(self.max_pre, self.max_post)

    def evaluations(self) -> int:
        """The most candidates a search evaluates (fewer when some share densities or are cached)."""
        return self.population + (self.generations - 1) * (self.population - self.elite)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["initial"] = list(self.initial)
        return d


@dataclass
class SearchResult:
    best: Candidate
    candidates: list[dict]  # every evaluated candidate with the generation it was born in
    history: list[dict]  # per generation: best so far, median of the population, invalid, new
    config: dict
    fitness: dict  # the fitness settings (and model/data fingerprints)
    seconds: float = 0.0
    computed: int = 0  # candidates evaluated in this process (the rest came from the cache)

    def to_dict(self) -> dict:
        return {
            "best": self.best.to_dict(),
            "candidates": self.candidates,
            "history": self.history,
            "config": self.config,
            "fitness": self.fitness,
            "seconds": self.seconds,
            "computed": self.computed,
        }


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan  # inf sorts last: a median of inf = mostly invalid


def search(fitness: CachedFitness, config: SearchConfig = SearchConfig(), progress: bool = True) -> SearchResult:
    """Evolve ``config.generations`` generations and return the best expression found."""
    start = time.perf_counter()
    rng = random.Random(config.seed)
    space = config.space()
    population = list(dict.fromkeys(Expression.parse(e) for e in config.initial))
    seen = {str(e) for e in population}
    while len(population) < config.population:
        expr = space.random(rng)
        if str(expr) not in seen:
            seen.add(str(expr))
            population.append(expr)

    evaluated: dict[str, Candidate] = {}
    order: dict[str, int] = {}
    born: dict[str, int] = {}
    history = []
    bar = tqdm(total=config.evaluations(), desc="DSA search", unit="expr", disable=not progress)
    computed_before = fitness.computed
    for generation in range(config.generations):
        bar.set_description(f"DSA search, generation {generation + 1}/{config.generations}")
        new = [str(e) for e in population if str(e) not in evaluated]
        from_cache = 0
        for candidate, cached in fitness.evaluate_iter(new):
            evaluated[candidate.expression] = candidate
            order[candidate.expression] = len(order)
            born[candidate.expression] = generation
            from_cache += cached
            bar.update(1)
            best = min(evaluated.values(), key=lambda c: (c.fitness, order[c.expression]))
            bar.set_postfix(best=f"{best.fitness:.4g}", expr=best.expression, refresh=False)
        rank = lambda e: (evaluated[str(e)].fitness, order[str(e)])  # noqa: E731 - ties: first evaluated first
        ranked = sorted(population, key=rank)
        best = min(evaluated.values(), key=lambda c: (c.fitness, order[c.expression]))
        scores = [evaluated[str(e)].fitness for e in population]
        history.append(
            {
                "generation": generation,
                "best": best.fitness,
                "best_expression": best.expression,
                "generation_best": scores and min(scores),
                "median": _median(scores),
                "invalid": sum(not math.isfinite(s) for s in scores),
                "new": len(new),
                "from_cache": from_cache,
            }
        )
        log.info(
            "generation %d: best %.4g (%s), median %.4g, %d invalid, %d new (%d from cache)",
            generation,
            best.fitness,
            best.expression,
            history[-1]["median"],
            history[-1]["invalid"],
            len(new),
            from_cache,
        )
        if generation == config.generations - 1:
            break
        if space.size() - len(seen) < config.population - config.elite:  # every child must be new
            log.warning(
                "the search space's %d expressions leave %d untried, too few for another generation of %d new ones: "
                "stopping after generation %d of %d",
                space.size(), space.size() - len(seen), config.population - config.elite, generation + 1,
                config.generations,
            )  # fmt: skip
            break
        population = _next_generation(ranked, config, space, rng, seen)
    bar.close()

    best = min(evaluated.values(), key=lambda c: (c.fitness, order[c.expression]))
    candidates = [
        {**evaluated[e].to_dict(), "generation": born[e], "rank": i}
        for i, e in enumerate(sorted(evaluated, key=lambda e: (evaluated[e].fitness, order[e])))
    ]
    fitness_settings = getattr(fitness, "context", {})
    return SearchResult(
        best=best,
        candidates=candidates,
        history=[
            {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in h.items()} for h in history
        ],
        config=config.to_dict(),
        fitness=fitness_settings,
        seconds=time.perf_counter() - start,
        computed=fitness.computed - computed_before,
    )


def _next_generation(ranked: list[Expression], config: SearchConfig, space, rng, seen: set[str]) -> list[Expression]:
    """The elites, then children of tournament-selected parents; every child is new to the search."""

    def pick() -> Expression:
        return ranked[min(rng.sample(range(len(ranked)), config.tournament))]  # ranked: lower index is better

    children = list(ranked[: config.elite])
    while len(children) < config.population:
        child = pick()
        if rng.random() < config.crossover:
            child = space.crossover(child, pick(), rng)
        if rng.random() < config.mutation or str(child) in seen:
            child = space.mutate(child, rng)
        for _ in range(20):
            if str(child) not in seen:
                break
            child = space.mutate(child, rng)
        while str(child) in seen:  # a crowded corner: a fresh random expression
            child = space.random(rng)
        seen.add(str(child))
        children.append(child)
    return children


def save_result(result: SearchResult, path: str | Path) -> None:
    write_json_atomic(path, result.to_dict())


def load_result(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
