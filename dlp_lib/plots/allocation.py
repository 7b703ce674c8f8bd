"""Figures of the dense statistics and the allocations they give (notebooks 02 and 05)."""

from __future__ import annotations

import pandas as pd

from ..experiments import (
    ALLOCATION_COLORS,
    ALLOCATION_NAMES,
    DenseStatistics,
    data_tag,
    owl_column,
    percent,
)
from .style import _finish_axes, _style


def plot_dense_block_statistics(stats: DenseStatistics, prof: dict):
    """Per-block OWL outlier ratio and DLP |mean Wanda score| of the dense model."""
    import matplotlib.pyplot as plt

    _style()
    blocks = stats.blocks
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    column = owl_column(prof["owl_m"])
    axes[0].bar(blocks["block"], blocks[column], color=ALLOCATION_COLORS["owl"])
    axes[0].set_ylabel(f"outlier ratio (%)\nscores > {prof['owl_m']:g}× block mean")
    axes[0].set_title("OWL statistic (more outliers → denser block)")
    stat = prof["dlp_statistic"]
    axes[1].bar(blocks["block"], blocks[f"dlp_abs_{stat}"], color=ALLOCATION_COLORS["dlp"])
    axes[1].set_ylabel(f"|{stat}| Wanda score")
    axes[1].set_title("DLP statistic (larger → less important → sparser block)")
    axes[1].set_xlabel("decoder block index")
    fig.suptitle(f"Dense per-block allocation statistics — {data_tag(prof)}", fontsize=11)
    _finish_axes(fig, block_axes=axes)
    fig.tight_layout()
    return fig


def plot_allocation(frame: pd.DataFrame, prof: dict, sparsity: float | None = None):
    """Per-block sparsity of each allocation (lines) above the per-block outlier ratio (bars)."""
    import matplotlib.pyplot as plt

    _style()
    sparsity = prof["main_sparsity"] if sparsity is None else sparsity
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for allocation in ["uniform", "owl", "dlp", "dsa"]:
        column = f"sparsity_{allocation}"
        if column in frame:
            style = dict(marker="o", markersize=3.5) if allocation != "uniform" else dict(linestyle="--")
            top.plot(
                frame["block"],
                100 * frame[column],
                color=ALLOCATION_COLORS[allocation],
                label=ALLOCATION_NAMES[allocation],
                **style,
            )
    top.set_ylabel("block sparsity (%)")
    top.set_title(f"Layer-wise sparsity at {percent(sparsity)} overall")
    top.legend(title="allocation", ncol=4, loc="best")
    bottom.bar(frame["block"], frame["owl_outlier_ratio"], color="#9ecae1")
    bottom.set_ylabel(f"outlier ratio (%)\n(M = {prof['owl_m']:g})")
    bottom.set_xlabel("decoder block index")
    fig.suptitle(data_tag(prof), fontsize=10)
    _finish_axes(fig, block_axes=[top, bottom])
    fig.tight_layout()
    return fig
