"""EvoPress's fitness: the KL divergence of a stitched model's next-token distributions from the dense model's.

The dense model's log-probabilities on the search windows are computed once and kept; a candidate (one
level per unit) is stitched from the level database by swapping in only the linears whose level differs
from the model's current state, then scored on a subset of the windows::

    KL = (1 / tokens) * sum over windows and positions of sum_v p_dense(v) * (log p_dense(v) - log p(v))

over every position but the last of each window (EvoPress's ``compute_kl_div``). Every window runs on its
own (batch of one), for the reference and for candidates alike, so the dense model's fitness is exactly 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..layers import decoder_blocks, linear_sublayers
from .levels import LevelDatabase


class StitchedModel:
    """A model whose linears take the database's weights for a state (one level per unit)."""

    def __init__(self, model, database: LevelDatabase):
        self.model = model
        self.database = database
        self.linears = {
            f"{index}.{name}": linear
            for index, block in enumerate(decoder_blocks(model))
            for name, linear in linear_sublayers(block).items()
        }
        self.state: list[int | None] = [None] * len(database.ladder.units)  # None: the dense weights

    def set(self, levels) -> None:
        """Load ``levels`` (only the units whose level changed)."""
        for u, (new, old) in enumerate(zip(levels, self.state)):
            if new == old:
                continue
            for key in self.database.ladder.units[u].linears:
                linear = self.linears[key]
                linear.weight.data = self.database.weight(key, new).to(linear.weight.device)
            self.state[u] = new


def _log_probs(model, window: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    logits = model(window.unsqueeze(0).to(device), use_cache=False).logits[0, :-1]
    return F.log_softmax(logits.float(), dim=-1)


class KLFitness:
    """The dense model's log-probabilities on ``windows`` (windows x tokens), and the KL of a model from
    them on any subset of the windows. Build it while the model holds its dense weights."""

    def __init__(self, model, windows: torch.Tensor, progress: bool = True):
        self.model = model
        self.windows = windows
        with torch.no_grad():
            bar = tqdm(windows, desc="dense logits", unit="window", disable=not progress, leave=False)
            self.reference = [_log_probs(model, w).cpu() for w in bar]

    @property
    def tokens_per_window(self) -> int:
        return self.windows.shape[1] - 1

    @torch.no_grad()
    def __call__(self, window_ids) -> float:
        """Mean KL per position over the windows ``window_ids``, of the model as it is now."""
        total, positions = 0.0, 0
        for i in window_ids:
            log_q = _log_probs(self.model, self.windows[i])
            log_p = self.reference[i].to(log_q.device)
            total += float(F.kl_div(log_q, log_p, log_target=True, reduction="sum"))
            positions += log_q.shape[0]
        return total / positions
