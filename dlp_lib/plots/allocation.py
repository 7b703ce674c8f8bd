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


def plot_allocation_profiles(profiles: pd.DataFrame, correlations: pd.DataFrame, atp: pd.DataFrame, prof: dict):
    """(a) each allocation's per-block sparsity, (b) how alike their rankings of the blocks are, (c) ATP's
    beta against held-out perplexity per pruner (notebook 12)."""
    import matplotlib.pyplot as plt

    _style()
    fig = plt.figure(figsize=(13, 8.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.1, 1], hspace=0.45, wspace=0.35)
    top = fig.add_subplot(grid[0, :])
    for allocation in profiles.columns:
        style = dict(linestyle="--") if allocation == "uniform" else dict(marker="o", markersize=3)
        top.plot(profiles.index, 100 * profiles[allocation], color=ALLOCATION_COLORS[allocation],
                 label=ALLOCATION_NAMES[allocation], **style)  # fmt: skip
    top.set_xlabel("decoder block index")
    top.set_ylabel("block sparsity (%)")
    top.set_title(f"(a) What each allocation asks of every block, {percent(prof['main_sparsity'])} overall (Wanda)")
    top.legend(title="allocation", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    heat = fig.add_subplot(grid[1, 0])
    names = [ALLOCATION_NAMES[a] for a in correlations.columns]
    image = heat.imshow(correlations.to_numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
    heat.grid(False)
    heat.set_xticks(range(len(names)), names, rotation=35, ha="right")
    heat.set_yticks(range(len(names)), names)
    heat.set_xlabel("allocation")
    heat.set_ylabel("allocation")
    for i in range(len(names)):
        for j in range(len(names)):
            value = correlations.iloc[i, j]
            heat.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                      color="white" if abs(value) > 0.6 else "black")  # fmt: skip
    fig.colorbar(image, ax=heat, label="Spearman rank correlation")
    heat.set_title("(b) How alike the block rankings are")
    line = fig.add_subplot(grid[1, 1])
    for method, sub in atp.groupby("method", sort=False):
        color = {"wanda": "#1f77b4", "sparsegpt": "#d62728"}.get(method, "black")
        line.plot(sub["beta"], sub["perplexity"], marker="o", color=color, label=method)
        chosen = sub[sub["chosen"]]
        line.scatter(chosen["beta"], chosen["perplexity"], s=90, facecolors="none", edgecolors=color)
    line.set_yscale("log")
    line.set_xlabel("ATP β (sparsity step per block)")
    line.set_ylabel("perplexity on held-out\ncalibration text")
    line.set_title("(c) ATP's β, chosen on held-out text (circled)")
    line.legend(title="pruner", loc="best")
    fig.suptitle(data_tag(prof), fontsize=10)
    _finish_axes(fig, block_axes=[top])
    return fig
