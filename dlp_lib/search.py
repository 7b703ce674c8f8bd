"""DSA's allocation search: an evolutionary search over allocation expressions (methods-spec §3.3).

An expression ``W:(PRE,...)-(REDUCTION)-(POST,...)`` maps one block's Wanda scores to one number and
the DSA template (``allocation.allocate``) turns the numbers into block densities. DSA's paper finds
the expression by evolution, with the pruned model's perplexity as fitness; its public code only
samples expressions at random. Here::

    population ──► fitness of each new expression: allocate from the dense statistics (computed once),
    prune with the chosen pruner at the target sparsity, perplexity on *search windows* drawn from the
    calibration side (never the evaluation text); cached on disk per expression
    ──► elites + children (tournament selection, crossover of the three fields, mutation of one op,
    no expression evaluated twice) ──► next generation

An expression that is not finite on some block, or that pushes a block's density outside (0, 1], has
fitness +inf and its reason is kept. Two expressions with the same densities (``ABS`` on non-negative
scores, say) share one evaluation. The random generator is seeded and consumed only by the evolution,
so the same seed and cache give the same populations and result, and a killed search re-run with the
same settings reads what it had evaluated from the cache and carries on.

Example::

    from dlp_lib.search import FitnessSettings, ProxyFitness, SearchConfig, search
    fitness = ProxyFitness(FitnessSettings(method="wanda", sparsity=0.7, nsamples=4, seqlen=128, windows=4))
    result = search(fitness, SearchConfig(population=8, generations=5, seed=0))
    print(result.best.expression, result.best.fitness)  # use with: dlp-prune --allocation dsa --dsa_graph ...
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from tqdm.auto import tqdm

from .allocation import DSA_PREPROCESS, DSA_REDUCTION, DSA_TRANSFORM, allocate, dsa_value, parse_dsa_graph
from .cache import cache_root, stable_hash, write_json_atomic
from .config import (
    DSA_README_GRAPH,
    METHODS,
    ConfigError,
    PruneConfig,
    check_device,
    check_int,
    check_number,
    hessian_for_device,
    without_reference_arithmetic,
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


# ------------------------------------------------------------------------------------- candidates
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
# (GEOMETRIC_MEAN: in log space since the product underflowed, allocation._geometric_mean)
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


# ---------------------------------------------------------------------------- the model's fitness
@dataclass(frozen=True)
class FitnessSettings:
    """What a candidate's fitness measures: the pruned model's perplexity on ``windows`` search windows
    of ``seqlen`` tokens drawn from the calibration side of ``calibration`` (seed ``seed`` +
    WINDOW_SEED_OFFSET; they may overlap the calibration windows, never the evaluation text), after
    pruning with ``method`` at ``sparsity`` (calibration: ``nsamples`` windows, seed ``seed``) with the
    DSA template of width ``dsa_lambda``. The dense statistics come from the same calibration windows.
    ``sparsegpt_sweep``/``sparsegpt_hessian``: SparseGPT's arithmetic, as in PruneConfig."""

    model: str = "smollm2-135m"
    method: str = "wanda"
    sparsity: float = 0.7
    dsa_lambda: float = 0.08
    calibration: str = "wiki-extracts"
    nsamples: int = 128
    seqlen: int = 2048
    windows: int = 16
    seed: int = 0
    batch_size: int = 8
    eval_batch_size: int = 4
    device: str = "cpu"
    dtype: str = "auto"
    trust_remote_code: bool = False
    sparsegpt_sweep: str = "auto"
    sparsegpt_hessian: str = "auto"

    def __post_init__(self):
        # the candidates' cache key names the Hessian arithmetic that runs on this device (PruneConfig.on_device)
        object.__setattr__(self, "sparsegpt_hessian", hessian_for_device(self.sparsegpt_hessian, self.device))
        if self.method not in METHODS:
            raise ConfigError(f"unknown prune method {self.method!r}; use one of {', '.join(METHODS)}")
        for name in ("nsamples", "windows", "batch_size", "eval_batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("seqlen", self.seqlen, 2)
        check_int("seed", self.seed, 0)
        check_device(self.device)
        self.prune_config(DSA_README_GRAPH)  # sparsity and lambda checked by PruneConfig

    def prune_config(self, expression: str, allocation: str = "dsa", **hyper) -> PruneConfig:
        """The pruning of a candidate: the DSA ``expression`` (or another ``allocation`` with ``hyper``)."""
        if allocation == "dsa":
            hyper = {"dsa_graph": expression, "dsa_lambda": self.dsa_lambda, **hyper}
        return PruneConfig(
            method=self.method,
            sparsity=self.sparsity,
            allocation=allocation,
            sparsegpt_sweep=self.sparsegpt_sweep,
            sparsegpt_hessian=self.sparsegpt_hessian,
            **hyper,
        )

    def to_dict(self) -> dict:
        """The settings as a dict; SparseGPT's arithmetic by PruneConfig's rule (the sweep never, the Hessian's
        only where a SparseGPT search does not use the reference's), so other searches keep their cache keys."""
        return without_reference_arithmetic(dataclasses.asdict(self))


class ProxyFitness(CachedFitness):
    """The fitness of expressions on a real model: loaded once, its dense linear weights kept to
    restore before each candidate, the dense input norms computed once (pipeline's cache)."""

    def __init__(self, settings: FitnessSettings, progress: bool = True, cache_dir: str | Path | None = None):
        from . import pipeline
        from .data import calibration_windows, check_source
        from .layers import decoder_blocks, linear_sublayers
        from .models import load_model

        check_source(settings.calibration)
        self.settings = settings
        self.progress = progress
        self.model, tokenizer = load_model(settings.model, settings.dtype, settings.device, settings.trust_remote_code)
        s = settings
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and s.seqlen > positions:
            raise ConfigError(
                f"--seqlen {s.seqlen} is longer than the model's {positions} positions; use {positions} or less"
            )
        pipeline.check_memory(self.model, max(s.nsamples, s.windows), s.seqlen, s.batch_size, s.method, s.device)
        self.calibration = calibration_windows(s.calibration, tokenizer, s.nsamples, s.seqlen, s.seed)
        self.windows = calibration_windows(s.calibration, tokenizer, s.windows, s.seqlen, s.seed + WINDOW_SEED_OFFSET)
        self.norms, _ = pipeline.cached_dense_norms(self.model, self.calibration, s.batch_size, progress)
        self.linears = [linear_sublayers(block) for block in decoder_blocks(self.model)]
        # the dense weights in CPU memory (not a second copy on the GPU); restored before every candidate
        self.dense = [
            {n: lin.weight.detach().to("cpu", copy=True) for n, lin in linears.items()} for linears in self.linears
        ]
        self.sizes = [sum(w.numel() for w in weights.values()) for weights in self.dense]
        digest = lambda t: hashlib.sha256(t.numpy().tobytes()).hexdigest()  # noqa: E731
        self.context = {
            "settings": {k: v for k, v in settings.to_dict().items() if k not in ("batch_size", "eval_batch_size")},
            "model": pipeline.model_fingerprint(self.model),
            "calibration": digest(self.calibration),
            "windows": digest(self.windows),
        }
        root = Path(cache_dir) if cache_dir is not None else cache_root() / "dsa_search"
        super().__init__(root / stable_hash(self.context))

    @torch.no_grad()
    def _statistics(self, expressions: list[str]) -> dict[str, list[float] | str]:
        """Every expression on every block, block by block: one block's Wanda scores at a time."""
        from .scores import block_wanda_scores

        values: dict[str, list[float] | str] = {e: [] for e in expressions}
        for index, (weights, norms) in enumerate(zip(self.dense, self.norms)):
            scores = block_wanda_scores(weights, norms).to(torch.float64)
            for expression in expressions:
                if isinstance(values[expression], str):
                    continue
                try:
                    values[expression].append(dsa_value(scores, expression, block=index))
                except ConfigError as err:
                    values[expression] = str(err)
        return values

    def _densities(self, expression: str, statistic: list[float]) -> list[float]:
        prune = self.settings.prune_config(expression)
        return [float(d) for d in allocate(statistic, prune, weights=self.sizes)]

    def restore(self) -> None:
        """Put the dense weights back (pruning works in place)."""
        for linears, weights in zip(self.linears, self.dense):
            for name, linear in linears.items():
                linear.weight.data.copy_(weights[name])

    @torch.no_grad()
    def _run(self, densities: list[float]) -> float:
        from .evaluation import perplexity
        from .prune import prune_model

        s = self.settings
        self.restore()
        prune = s.prune_config("", allocation="uniform")  # the per-block targets carry the allocation
        calibration = self.calibration if s.method != "magnitude" else None
        targets = [1.0 - d for d in densities]
        prune_log = logging.getLogger("dlp_lib.prune")
        level = prune_log.level
        prune_log.setLevel(logging.WARNING)  # one "pruned ..." line per candidate would drown the search's log
        try:
            prune_model(self.model, prune, calibration, targets, None, s.batch_size, progress=False)
        finally:
            prune_log.setLevel(level)
        return perplexity(self.model, self.windows, s.eval_batch_size, progress=False)["perplexity"]

    def allocation_fitness(self, allocation: str, **hyper) -> Candidate:
        """The same fitness for a named allocation (``uniform``, ``owl``, ``dlp``; hyper-parameters as
        PruneConfig fields), for comparison with the searched expressions; cached like them."""
        from .scores import block_statistics

        prune = self.settings.prune_config("", allocation=allocation, **hyper)
        label = f"{allocation}:{json.dumps(hyper, sort_keys=True)}"
        cached = self.cached(label)
        if cached is not None:
            return cached
        statistic = block_statistics(self.dense, self.norms, prune)
        densities = [float(d) for d in allocate(statistic, prune, weights=self.sizes)]
        start = time.perf_counter()
        candidate = Candidate(label, self._run(densities), None, densities, statistic, time.perf_counter() - start)
        write_json_atomic(self._path(label), candidate.to_dict())
        return candidate


# ----------------------------------------------------------------------------------- the evolution
# DSA ran a population of 100 for 2000 iterations; beyond these a count is a typo, not a plan (each
# candidate is a pruning run and an evaluation: seconds on a small model, a minute on a 7B one)
MAX_POPULATION = 1000
MAX_GENERATIONS = 10_000


@dataclass(frozen=True)
class SearchConfig:
    """The evolutionary loop. DSA's released code has population 100 and mutation probability 0.2
    (methods-spec §3.3.3); ``initial`` expressions start the first population, random ones fill it."""

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


__all__ = [
    "DSA_README_GRAPH",
    "Candidate",
    "CachedFitness",
    "Expression",
    "ExpressionSpace",
    "FitnessSettings",
    "ProxyFitness",
    "SearchConfig",
    "SearchResult",
    "search",
]
