"""EvoPress's level ladder and database: every unit pruned ahead of time at a ladder of sparsities.

A *unit* is what one sparsity is chosen for. EvoPress (IST-DASLab/EvoPress, ``prune.py`` and
``evo_prune_search.py``) uses each linear layer of each decoder block (q, k, v, o, gate, up, down: 7 x 32 =
224 units on LLaMA-7B), so attention and MLP layers of one block may differ; ``granularity="block"``
makes each decoder block one unit instead (the granularity of OWL, DLP and DSA).

Level 0 of every unit is the target sparsity ``s``: each linear prunes ``int(cols * s)`` weights per row,
exactly what a direct prune at ``s`` does, so the all-zero state is the Uniform allocation. One level up
prunes ``step`` more weights of the unit, one level down ``step`` fewer, and ``step`` is the *same number
of weights in every unit* (EvoPress: ``0.5 * min(s, 1 - s) / num_levels * hidden**2``, which we round to a
multiple of each unit's smallest whole-row step). Moving one level from one unit to another therefore
leaves the model's pruned-weight count exactly where it was: the search's constraint holds exactly, in
integers, not to float rounding.

The database holds each unit's weights at every level of its ladder, from the dense model's statistics
(EvoPress prunes every unit on the dense model's activations too): for Wanda one stable per-row order of
the unit's scores, each level's mask being its first ``k`` entries per row (``masks.per_row_mask`` picks the
very same weights); for SparseGPT the solver's weights at each level, from the unit's dense Hessian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from tqdm.auto import tqdm

from ..config import ConfigError, PruneConfig
from ..layers import capture_block_inputs, decoder_blocks, linear_sublayers

GRANULARITIES = ("linear", "block")
DATABASE_METHODS = ("wanda", "sparsegpt")  # magnitude's comparison group is the whole matrix, not a row


@dataclass(frozen=True)
class Unit:
    """One unit of the search: its name (``"3.mlp.up_proj"`` or ``"3"``) and its linears, each named
    ``"<block>.<linear>"`` (as in ``prune.decoder_sparsity``) with its (rows, cols)."""

    name: str
    block: int
    linears: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]

    @property
    def numel(self) -> int:
        return sum(r * c for r, c in self.shapes)

    @property
    def smallest_step(self) -> int:
        """The fewest weights by which the unit's pruned count can change with every linear moving by
        whole weights per row at one common sparsity change: 1/gcd(cols) of the unit."""
        return self.numel // math.gcd(*[c for _, c in self.shapes])


def model_units(model, granularity: str = "linear") -> list[Unit]:
    """The units of ``model``'s decoder blocks in block order (linear order within a block)."""
    if granularity not in GRANULARITIES:
        raise ConfigError(f"unknown granularity {granularity!r}; use one of {', '.join(GRANULARITIES)}")
    units = []
    for index, block in enumerate(decoder_blocks(model)):
        linears = linear_sublayers(block)
        named = [(f"{index}.{name}", tuple(lin.weight.shape)) for name, lin in linears.items()]
        if granularity == "linear":
            units += [Unit(key, index, (key,), (shape,)) for key, shape in named]
        else:
            units.append(Unit(str(index), index, tuple(k for k, _ in named), tuple(s for _, s in named)))
    return units


def exact_sparsity(count: int, cols: int, rows: int) -> float:
    """A float ``s`` with ``int(cols * s) == count`` (Wanda's per-row count) and ``int(rows * cols * s) ==
    rows * count`` (magnitude's whole-matrix count): ``count / cols``, nudged up by ulps where rounding
    would floor one short."""
    s = count / cols
    while int(cols * s) < count or int(rows * cols * s) < rows * count:
        s = math.nextafter(s, 1.0)
    return s


@dataclass(frozen=True)
class Ladder:
    """The levels of every unit: ``low[u] <= level <= high[u]``, ``step`` weights per level."""

    sparsity: float
    step: int
    units: tuple[Unit, ...]
    low: tuple[int, ...]
    high: tuple[int, ...]
    base: tuple[tuple[int, ...], ...]  # per unit, per linear: pruned weights per row at level 0
    per_level: tuple[tuple[int, ...], ...]  # per unit, per linear: pruned weights per row per level

    def row_counts(self, unit: int, level: int) -> tuple[int, ...]:
        if not self.low[unit] <= level <= self.high[unit]:
            raise ValueError(
                f"unit {self.units[unit].name}: level {level} outside [{self.low[unit]}, {self.high[unit]}]"
            )
        return tuple(b + level * a for b, a in zip(self.base[unit], self.per_level[unit]))

    def linear_sparsity(self, unit: int, position: int, level: int) -> float:
        rows, cols = self.units[unit].shapes[position]
        return exact_sparsity(self.row_counts(unit, level)[position], cols, rows)

    def pruned_weights(self, levels) -> int:
        """The number of weights the allocation ``levels`` prunes (an integer: the search keeps it fixed)."""
        total = 0
        for u, level in enumerate(levels):
            counts = self.row_counts(u, level)
            total += sum(rows * k for (rows, _), k in zip(self.units[u].shapes, counts))
        return total

    def linear_sparsities(self, levels) -> dict[str, float]:
        """``{"<block>.<linear>": sparsity}`` of the allocation ``levels`` (what ``prune_model`` takes)."""
        return {
            key: self.linear_sparsity(u, position, level)
            for u, level in enumerate(levels)
            for position, key in enumerate(self.units[u].linears)
        }

    def block_sparsities(self, levels) -> list[float]:
        """Each decoder block's pruned fraction under ``levels`` (weighted by the linears' sizes)."""
        pruned, numel = {}, {}
        for u, level in enumerate(levels):
            unit = self.units[u]
            counts = self.row_counts(u, level)
            pruned[unit.block] = pruned.get(unit.block, 0) + sum(r * k for (r, _), k in zip(unit.shapes, counts))
            numel[unit.block] = numel.get(unit.block, 0) + unit.numel
        return [pruned[b] / numel[b] for b in sorted(numel)]

    def describe(self) -> dict:
        return {
            "step": self.step,
            "low": list(self.low),
            "high": list(self.high),
            "units": [u.name for u in self.units],
        }


def build_ladder(units: list[Unit], sparsity: float, num_levels: int, reference_size: int) -> Ladder:
    """EvoPress's ladder: ``num_levels`` levels each way where the unit allows, ``step`` weights per level:
    EvoPress's ``0.5 * min(s, 1 - s) / num_levels * reference_size`` rounded to the nearest multiple (at
    least one) of the least common multiple of the units' smallest steps, so every unit moves by whole
    weights per row. A unit's levels stop where a linear would keep fewer than one weight per row or
    prune fewer than none."""
    if not 0.0 < sparsity < 1.0:
        raise ConfigError(f"an EvoPress search needs a sparsity in (0, 1); got {sparsity}")
    if num_levels < 1:
        raise ConfigError(f"num_levels must be positive; got {num_levels}")
    common = math.lcm(*[u.smallest_step for u in units])
    target = 0.5 * min(sparsity, 1.0 - sparsity) / num_levels * reference_size
    step = max(1, round(target / common)) * common
    low, high, base, per_level = [], [], [], []
    for unit in units:
        k0 = tuple(int(c * sparsity) for _, c in unit.shapes)
        steps = step // unit.smallest_step
        gcd = math.gcd(*[c for _, c in unit.shapes])
        a = tuple(steps * c // gcd for _, c in unit.shapes)
        down = min(k // ai for k, ai in zip(k0, a))
        up = min((c - 1 - k) // ai for (_, c), k, ai in zip(unit.shapes, k0, a))
        low.append(-min(num_levels, down))
        high.append(min(num_levels, up))
        base.append(k0)
        per_level.append(a)
    check_exchange(units, sparsity, low, high)
    return Ladder(sparsity, step, tuple(units), tuple(low), tuple(high), tuple(base), tuple(per_level))


def check_exchange(units: list[Unit], sparsity: float, low: list[int], high: list[int]) -> None:
    """A search moves weights from one unit to another: it needs a unit that can be pruned less and
    another that can be pruned more, or every offspring is its parent (ConfigError otherwise)."""
    denser = {u for u, level in enumerate(low) if level < 0}
    sparser = {u for u, level in enumerate(high) if level > 0}
    if not denser or not sparser or (len(denser | sparser) < 2):
        side = "less (they prune under one weight per row)" if not denser else "more"
        raise ConfigError(
            f"at sparsity {sparsity:g} no linear of this model's {len(units)} search units can be pruned {side}, "
            "so EvoPress has nothing to exchange; search at a sparsity further from 0 and 1 (e.g. 0.5-0.8)"
        )


def preview_ladder(spec: str, sparsity: float, num_levels: int, granularity: str, trust_remote_code: bool = False):
    """The ladder of model ``spec`` built from its configuration alone (weights on the meta device: only
    config.json is read), so :func:`build_ladder`'s checks run before the model is loaded. None where
    the configuration cannot be read this way (a .gguf file, a broken directory: loading says why)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..models import EMBEDDED_MODELS, package_file

    if spec.endswith(".gguf"):
        return None
    try:
        if spec in EMBEDDED_MODELS:  # the GGUF's metadata: no conversion (that is loading) before the checks
            gguf = package_file(*EMBEDDED_MODELS[spec])
            config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        else:
            config = AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - the real loading reports a bad model in its own words
        return None
    return build_ladder(model_units(model, granularity), sparsity, num_levels, config.hidden_size**2)


# ---------------------------------------------------------------------------------------------- database
class LevelDatabase:
    """Each linear's weights at every level of its unit: ``weight(key, level)``.

    Wanda: the dense weight and one stable per-row order of its scores (int16 where the columns allow, in
    host memory), a level's weight made on demand. SparseGPT: the solver's weight at each level, kept in
    host memory in the model's dtype (LLaMA-2-7B in fp16 at 9 levels: about 120 GB; fewer levels, less)."""

    def __init__(self, ladder: Ladder, method: str):
        self.ladder = ladder
        self.method = method
        self.unit_of = {key: (u, p) for u, unit in enumerate(ladder.units) for p, key in enumerate(unit.linears)}
        self.dense: dict[str, torch.Tensor] = {}
        self.order: dict[str, torch.Tensor] = {}
        self.levels: dict[str, list[torch.Tensor]] = {}

    def weight(self, key: str, level: int) -> torch.Tensor:
        u, position = self.unit_of[key]
        if self.method == "sparsegpt":
            return self.levels[key][level - self.ladder.low[u]]
        k = self.ladder.row_counts(u, level)[position]
        dense = self.dense[key]
        mask = torch.zeros(dense.shape, dtype=torch.bool)
        mask.scatter_(1, self.order[key][:, :k].long(), True)
        return dense.masked_fill(mask.to(dense.device), 0)

    def nbytes(self) -> int:
        tensors = [*self.dense.values(), *self.order.values(), *(t for ts in self.levels.values() for t in ts)]
        return sum(t.numel() * t.element_size() for t in tensors)


def database_bytes(ladder: Ladder, method: str, dtype_bytes: int) -> int:
    """What :func:`build_database` keeps in memory (for a check before building it)."""
    total = 0
    for u, unit in enumerate(ladder.units):
        levels = ladder.high[u] - ladder.low[u] + 1
        for rows, cols in unit.shapes:
            if method == "sparsegpt":
                total += levels * rows * cols * dtype_bytes
            else:
                total += rows * cols * (dtype_bytes + (2 if cols < 2**15 else 4))
    return total


@torch.no_grad()
def build_database(
    model, ladder: Ladder, method: str, calibration: torch.Tensor, norms=None, prune: PruneConfig | None = None,
    batch_size: int = 8, progress: bool = True,
) -> LevelDatabase:  # fmt: skip
    """The level database of ``model`` (dense weights in place) for ``method``: Wanda's from the dense
    input norms ``norms`` (``pipeline.cached_dense_norms``), SparseGPT's from Hessians of the dense
    model's activations on ``calibration`` (block l fed by the dense blocks before it), with
    ``prune``'s blocksize, damping and arithmetic."""
    from ..prune import _run_with_statistics
    from ..scores import wanda_score
    from ..sparsegpt import sparsegpt_prune, sweep_backend
    from ..stats import Hessian

    if method not in DATABASE_METHODS:
        raise ConfigError(f"EvoPress's database is built for {' or '.join(DATABASE_METHODS)}; got {method!r}")
    database = LevelDatabase(ladder, method)
    blocks = decoder_blocks(model)
    wanted = set(database.unit_of)
    inputs = None
    if method == "sparsegpt":
        prune = prune or PruneConfig(method="sparsegpt")
        device = next(blocks[0].parameters()).device
        prune = prune.on_device(device)
        sweep = sweep_backend(device, prune.sparsegpt_sweep, None)
        inputs = capture_block_inputs(model, calibration, batch_size)
    bar = tqdm(list(enumerate(blocks)), desc=f"EvoPress database ({method})", unit="block", disable=not progress)
    for index, block in bar:
        linears = {f"{index}.{name}": lin for name, lin in linear_sublayers(block).items()}
        if method == "wanda":
            for key, linear in linears.items():
                if key not in wanted:
                    continue
                weight = linear.weight.detach()
                score = wanda_score(weight, norms[index][key.split(".", 1)[1]].to(weight.device))
                order = torch.sort(score.cpu(), dim=1, stable=True).indices
                database.order[key] = order.to(torch.int16 if weight.shape[1] < 2**15 else torch.int32)
                database.dense[key] = weight.clone()
            continue
        accumulator = partial(Hessian, half=prune.sparsegpt_hessian == "half")
        by_name = linear_sublayers(block)
        stats, inputs.hidden = _run_with_statistics(block, inputs, by_name, accumulator, keep_outputs=True)
        for name, linear in by_name.items():
            key = f"{index}.{name}"
            u, position = database.unit_of[key]
            weights = []
            for level in range(ladder.low[u], ladder.high[u] + 1):
                s = ladder.linear_sparsity(u, position, level)
                new, _ = sparsegpt_prune(
                    linear.weight.detach(), stats[name].matrix, s, None, prune.blocksize, prune.percdamp, sweep=sweep
                )
                weights.append(new.to("cpu", linear.weight.dtype))  # host memory: a GPU holds one copy
            database.levels[key] = weights
        stats.clear()
    return database
