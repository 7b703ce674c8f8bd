"""EvoPress's search (Sieberling et al., ICML 2025): evolve the per-unit sparsities themselves.

::

    level database (levels.py): every unit pruned at a ladder of sparsities, on the dense model
    parent = all units at level 0 (the Uniform allocation)
    each generation:  offspring = parent with 1-3 level exchanges each (one unit a level denser, another
                      a level sparser: the pruned-weight count stays exactly the same), all distinct
                      for each selection stage (survivors, tokens): score the candidates by KL from the
                      dense model (kl.py) on ``tokens`` tokens of freshly drawn search windows, keep the
                      best ``survivors``; the parent joins before the last stage (elitism)
                      parent = the last stage's best

The search windows come from the calibration side (seed + WINDOW_SEED_OFFSET), never the evaluation
text. All randomness of generation ``g`` comes from ``Random("evopress:<seed>:<g>")``, and the state after
each generation (parent, history) is written atomically to a checkpoint, so a killed search run again with
the same settings resumes after its last finished generation and ends exactly where an unbroken one does.

Example::

    from dlp_lib.search.evopress import EvoPressSettings, EvoPressConfig, evopress_search
    result = evopress_search(EvoPressSettings(method="wanda", sparsity=0.7), EvoPressConfig(generations=20))
    save_evopress(result, "evopress.json")  # then: dlp-prune --allocation evopress --evopress evopress.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ..cache import cache_root, read_cache, stable_hash, write_json_atomic
from ..config import (
    BY_MODEL,
    DEFAULT_MODEL,
    RUN_DEFAULTS,
    ConfigError,
    PruneConfig,
    check_device,
    check_int,
    default_sources,
    hessian_for_device,
    without_reference_arithmetic,
)
from ..evopress_file import FORMAT, allocation_record, read_allocation  # noqa: F401  (the API's names)
from .expressions import WINDOW_SEED_OFFSET
from .levels import DATABASE_METHODS, GRANULARITIES, Ladder, build_ladder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvoPressSettings:
    """The database and the fitness: ``method``'s level database at ``sparsity`` (``num_levels`` each
    way, ``granularity`` "linear" as EvoPress or "block") from ``nsamples`` x ``seqlen`` calibration
    windows of ``calibration`` (seed ``seed``, as a run's), and KL on ``windows`` search windows of
    ``window_seqlen`` tokens from the same source (seed ``seed`` + WINDOW_SEED_OFFSET)."""

    model: str = DEFAULT_MODEL
    method: str = "wanda"
    sparsity: float = 0.7
    granularity: str = "linear"
    num_levels: int = 8
    calibration: str = BY_MODEL  # the embedded extracts for the embedded model, else C4 (config.default_sources)
    nsamples: int = RUN_DEFAULTS["nsamples"]
    seqlen: int = RUN_DEFAULTS["seqlen"]
    windows: int = 32
    window_seqlen: int = RUN_DEFAULTS["seqlen"]
    seed: int = RUN_DEFAULTS["seed"]
    batch_size: int = RUN_DEFAULTS["batch_size"]
    device: str = "cpu"
    dtype: str = RUN_DEFAULTS["dtype"]
    trust_remote_code: bool = False
    sparsegpt_sweep: str = "auto"
    sparsegpt_hessian: str = "auto"

    def __post_init__(self):
        if self.calibration is BY_MODEL:
            object.__setattr__(self, "calibration", default_sources(self.model)[0])
        object.__setattr__(self, "sparsegpt_hessian", hessian_for_device(self.sparsegpt_hessian, self.device))
        if self.method not in DATABASE_METHODS:
            raise ConfigError(
                f"EvoPress's level database is built with {' or '.join(DATABASE_METHODS)}; got {self.method!r} "
                "(the found allocation can then be applied with any pruner)"
            )
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"unknown granularity {self.granularity!r}; use one of {', '.join(GRANULARITIES)}")
        check_int("num_levels", self.num_levels, 1, 64)
        for name in ("nsamples", "windows", "batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("seqlen", self.seqlen, 2)
        check_int("window_seqlen", self.window_seqlen, 2)
        check_int("seed", self.seed, 0)
        check_device(self.device)
        self.prune_config()  # the sparsity's type and range, SparseGPT's arithmetic: checked by PruneConfig
        if not 0.0 < self.sparsity:
            raise ConfigError("an EvoPress search needs a sparsity in (0, 1); got 0 (nothing to allocate)")

    def prune_config(self) -> PruneConfig:
        return PruneConfig(
            method=self.method,
            sparsity=self.sparsity,
            sparsegpt_sweep=self.sparsegpt_sweep,
            sparsegpt_hessian=self.sparsegpt_hessian,
        )

    def to_dict(self) -> dict:
        d = without_reference_arithmetic(dataclasses.asdict(self))
        d.pop("batch_size")  # how many windows per forward: no effect on the result
        return d


@dataclass(frozen=True)
class EvoPressConfig:
    """The evolution (EvoPress's ``run_prune_search.sh``: 400 generations, 64 offspring, survivors 8 -> 2
    -> 1 on 2048 -> 16384 -> 65536 tokens). Each stage's tokens are whole search windows."""

    generations: int = 50
    offspring: int = 16
    survivors: tuple[int, ...] = (4, 1)
    tokens: tuple[int, ...] = (2048, 8192)
    search_seed: int = 0
    max_flips: int = 3

    def __post_init__(self):
        object.__setattr__(self, "survivors", tuple(self.survivors))
        object.__setattr__(self, "tokens", tuple(self.tokens))
        check_int("generations", self.generations, 1, 100_000)
        check_int("offspring", self.offspring, 1, 10_000)
        check_int("search_seed", self.search_seed, 0)
        check_int("max_flips", self.max_flips, 1, 100)
        if not self.survivors or len(self.survivors) != len(self.tokens):
            raise ConfigError(
                f"give one survivor count per selection stage and one token count per stage; got survivors "
                f"{list(self.survivors)} and tokens {list(self.tokens)}"
            )
        for value in (*self.survivors, *self.tokens):
            check_int("survivors and tokens", value, 1)
        if self.survivors[-1] != 1 or list(self.survivors) != sorted(self.survivors, reverse=True):
            raise ConfigError(f"survivors must not grow from stage to stage and end at 1; got {list(self.survivors)}")
        if self.survivors[0] > self.offspring:
            raise ConfigError(f"{self.survivors[0]} survivors of the first stage need at least as many offspring")

    def stage_windows(self, window_seqlen: int, windows: int) -> list[int]:
        """Search windows per stage; a ConfigError if a stage's tokens are not whole windows or too many."""
        counts = []
        for tokens in self.tokens:
            if tokens % window_seqlen or tokens // window_seqlen > windows:
                raise ConfigError(
                    f"a selection stage of {tokens} tokens needs a whole number of search windows of {window_seqlen} "
                    f"tokens, at most the {windows} there are: use multiples of {window_seqlen} up to "
                    f"{windows * window_seqlen}"
                )
            counts.append(tokens // window_seqlen)
        return counts

    def evaluations(self) -> int:
        """Candidate evaluations per generation (each on its stage's windows)."""
        counts = [self.offspring, *self.survivors[:-1]]
        counts[-1] += 1  # the parent joins the last stage
        return sum(counts)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["survivors"], d["tokens"] = list(self.survivors), list(self.tokens)
        return d


# ------------------------------------------------------------------------------------------- mutation
def mutate(parent: list[int], ladder: Ladder, rng: random.Random, max_flips: int = 3) -> list[int]:
    """EvoPress's mutation: ``min(randint(1, m), randint(1, m))`` exchanges (fewer more likely), each one
    unit a level denser and another a level sparser, so the pruned-weight count stays the same."""
    child = list(parent)
    flips = min(rng.randint(1, max_flips), rng.randint(1, max_flips))
    n = len(child)
    for _ in range(flips):
        denser = [u for u in range(n) if child[u] > ladder.low[u]]
        sparser = [u for u in range(n) if child[u] < ladder.high[u]]
        if not denser or not sparser or (len(denser) == 1 and denser == sparser):
            break
        down = rng.choice(denser)
        up = rng.choice([u for u in sparser if u != down])
        child[down] -= 1
        child[up] += 1
    return child


def offspring_of(parent: list[int], ladder: Ladder, rng: random.Random, count: int, max_flips: int) -> list[list[int]]:
    """``count`` distinct children of ``parent`` (fewer if the neighbourhood runs out of new ones)."""
    children, seen = [], set()
    for _ in range(100 * count):
        child = mutate(parent, ladder, rng, max_flips)
        if tuple(child) not in seen and child != parent:
            seen.add(tuple(child))
            children.append(child)
            if len(children) == count:
                break
    return children


# ------------------------------------------------------------------------------------------- the loop
def generation_rng(seed: int, generation: int) -> random.Random:
    return random.Random(f"evopress:{seed}:{generation}")


def evolve(
    score: Callable[[list[int], list[int]], float],
    ladder: Ladder,
    config: EvoPressConfig,
    stage_windows: list[int],
    total_windows: int,
    state: dict | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> dict:
    """The evolution on a ``score(levels, window_ids)`` function (lower is better). ``state`` (from a
    checkpoint) resumes it: ``{"parent", "fitness", "history"}``; ``checkpoint(state)`` is called after
    every generation. Returns the final state."""
    state = state or {"parent": [0] * len(ladder.units), "fitness": None, "history": []}
    parent = list(state["parent"])
    history = list(state["history"])
    start = len(history)
    bar = tqdm(total=config.generations, initial=start, desc="EvoPress", unit="gen", disable=not progress)
    for generation in range(start, config.generations):
        t0 = time.perf_counter()
        rng = generation_rng(config.search_seed, generation)
        candidates = offspring_of(parent, ladder, rng, config.offspring, config.max_flips)
        stages = []
        for stage, (survive, windows) in enumerate(zip(config.survivors, stage_windows)):
            if stage == len(stage_windows) - 1 and parent not in candidates:
                candidates.append(parent)  # elitism: the parent competes in the last stage
            ids = rng.sample(range(total_windows), windows)
            scores = [score(c, ids) for c in candidates]
            order = sorted(range(len(candidates)), key=lambda i: (scores[i], i))[:survive]
            candidates = [candidates[i] for i in order]
            stages.append({"candidates": len(scores), "windows": ids, "best": scores[order[0]]})
        kept = candidates[0] == parent
        parent = candidates[0]
        fitness = stages[-1]["best"]
        history.append(
            {
                "generation": generation,
                "fitness": fitness,
                "parent_kept": kept,
                "moved": sum(abs(v) for v in parent),
                "parent": list(parent),
                "stages": stages,
                "seconds": time.perf_counter() - t0,
            }
        )
        state = {"parent": parent, "fitness": fitness, "history": history}
        if checkpoint is not None:
            checkpoint(state)
        bar.update(1)
        bar.set_postfix(kl=f"{fitness:.4g}", moved=history[-1]["moved"], refresh=False)
        log.info("EvoPress generation %d: KL %.5g (%s), %d levels moved", generation, fitness,
                 "parent kept" if kept else "new parent", history[-1]["moved"])  # fmt: skip
    bar.close()
    return state


# ------------------------------------------------------------------------------- on a model, end to end
class EvoPressProblem:
    """The model, its level database and KL fitness for ``settings`` (everything a search evaluates)."""

    def __init__(self, settings: EvoPressSettings, progress: bool = True):
        from .. import memory, pipeline
        from ..data import calibration_windows, check_source
        from ..models import load_model
        from .kl import KLFitness, StitchedModel
        from .levels import build_database, database_bytes, model_units

        s = settings
        check_source(s.calibration)
        self.settings = settings
        self.model, tokenizer = load_model(s.model, s.dtype, s.device, s.trust_remote_code)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        longest = max(s.seqlen, s.window_seqlen)
        if isinstance(positions, int) and longest > positions:
            raise ConfigError(
                f"windows of {longest} tokens exceed the model's {positions} positions; use {positions} or less"
            )
        units = model_units(self.model, s.granularity)
        self.ladder = build_ladder(units, s.sparsity, s.num_levels, self.model.config.hidden_size**2)
        needed = database_bytes(self.ladder, s.method, next(self.model.parameters()).element_size())
        free = memory.available_memory("cpu")
        if free is not None and needed > free:
            raise ConfigError(
                f"EvoPress's {s.method} database needs about {needed / 2**30:.1f} GiB of host memory, "
                f"{free / 2**30:.1f} GiB are free: use fewer --num_levels (now {s.num_levels})"
            )
        self.calibration = calibration_windows(s.calibration, tokenizer, s.nsamples, s.seqlen, s.seed)
        self.windows = calibration_windows(
            s.calibration, tokenizer, s.windows, s.window_seqlen, s.seed + WINDOW_SEED_OFFSET
        )
        norms = None
        if s.method == "wanda":
            norms, _ = pipeline.cached_dense_norms(self.model, self.calibration, s.batch_size, progress)
        self.fingerprint = pipeline.model_fingerprint(self.model)
        self.fitness = KLFitness(self.model, self.windows, progress)  # before any weight changes
        self.database = build_database(
            self.model, self.ladder, s.method, self.calibration, norms, s.prune_config(), s.batch_size, progress
        )
        self.stitched = StitchedModel(self.model, self.database)

    def score(self, levels: list[int], window_ids: list[int]) -> float:
        self.stitched.set(levels)
        return self.fitness(window_ids)

    def context(self) -> dict:
        digest = lambda t: stable_hash(t.tolist())  # noqa: E731
        return {
            "settings": self.settings.to_dict(),
            "model": self.fingerprint,
            "calibration": digest(self.calibration),
            "windows": digest(self.windows),
        }


def search_key(settings: EvoPressSettings, config: EvoPressConfig) -> str:
    return stable_hash({"settings": settings.to_dict(), "config": config.to_dict()})


def checkpoint_path(settings: EvoPressSettings, config: EvoPressConfig, cache_dir=None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "evopress_search"
    return root / f"{search_key(settings, config)}.json"


def _state_of(path: Path, config: EvoPressConfig, context: dict) -> dict | None:
    stored = read_cache(path, lambda p: json.loads(p.read_text()), "EvoPress checkpoint")
    if not isinstance(stored, dict) or stored.get("context") != context or stored.get("config") != config.to_dict():
        return None
    return {k: stored[k] for k in ("parent", "fitness", "history")}


def evopress_search(
    settings: EvoPressSettings,
    config: EvoPressConfig = EvoPressConfig(),
    progress: bool = True,
    cache_dir=None,
    problem: EvoPressProblem | None = None,
    check: int = 0,
) -> dict:
    """Run (or resume) a search; returns its result (``save_evopress`` writes it for ``dlp-prune``).
    ``check``: that many allocations along the search (the Uniform start, parents evenly spread over the
    generations, the last one) are scored on *every* search window (``result["checked"]``), so their
    fitness can be compared with a full evaluation."""
    stage_windows = config.stage_windows(settings.window_seqlen, settings.windows)  # before the model loads
    start = time.perf_counter()
    problem = problem or EvoPressProblem(settings, progress)
    context = problem.context()
    path = checkpoint_path(settings, config, cache_dir)
    state = _state_of(path, config, context)
    if state is not None:
        log.info("resuming the EvoPress search from %s after generation %d", path, len(state["history"]))
    ladder = problem.ladder

    def checkpoint(new_state: dict) -> None:
        write_json_atomic(path, {"context": context, "config": config.to_dict(), **new_state})

    state = evolve(
        problem.score,
        ladder,
        config,
        stage_windows,
        settings.windows,
        state,
        checkpoint,
        progress,
    )
    levels = state["parent"]
    checked = [
        {
            "generation": generation,
            "levels": picked,
            "kl": problem.score(picked, list(range(settings.windows))),
            "linear_sparsities": ladder.linear_sparsities(picked),
            "block_sparsities": ladder.block_sparsities(picked),
        }
        for generation, picked in check_picks(state["history"], check)
    ]
    return {
        "format": FORMAT,
        "key": search_key(settings, config),
        "settings": settings.to_dict(),
        "config": config.to_dict(),
        "context": context,
        "sparsity": settings.sparsity,
        "ladder": ladder.describe(),
        "levels": levels,
        "fitness": state["fitness"],
        "linear_sparsities": ladder.linear_sparsities(levels),
        "linear_sizes": {k: r * c for u in ladder.units for k, (r, c) in zip(u.linears, u.shapes)},
        "block_sparsities": ladder.block_sparsities(levels),
        "pruned_weights": ladder.pruned_weights(levels),
        "history": state["history"],
        "checked": checked,
        "seconds": time.perf_counter() - start,
    }


def check_picks(history: list[dict], count: int) -> list[tuple[int, list[int]]]:
    """``(generation, levels)`` of ``count`` distinct allocations of a search: the Uniform start (generation
    -1), then parents evenly spread over the generations, the last one included."""
    if count <= 0 or not history:
        return []
    picks = [(-1, [0] * len(history[0]["parent"]))]
    last = len(history) - 1
    for i in range(1, count):
        h = history[round(i * last / (count - 1))]
        if all(h["parent"] != levels for _, levels in picks):
            picks.append((h["generation"], list(h["parent"])))
    return picks


def save_evopress(result: dict, path) -> None:
    write_json_atomic(path, result)
