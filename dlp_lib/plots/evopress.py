"""Notebook 11's figures: EvoPress's search progress, its allocation beside the others, fitness against evaluation."""

from __future__ import annotations

import pandas as pd

from ..experiments import ALLOCATION_COLORS, METHOD_NAMES, TABLE_NAMES, data_tag, percent
from .style import _style

MARKERS = {"wanda": "o", "sparsegpt": "s"}
COLORS = {"wanda": "#9467bd", "sparsegpt": "#17becf"}


def plot_evopress(histories: dict, blocks: dict, checks: dict, prof: dict):
    """EvoPress in panels: (a) the surviving parent's KL per generation (its last stage's windows), with
    the checked allocations' KL on every window; (b) KL against the perplexity with the table's settings;
    then one panel per pruner: per-block sparsity of the EvoPress allocation beside Uniform, OWL, DLP and
    DSA (the table's runs, profile seed). ``histories``, ``blocks``, ``checks``: ``{pruner: frame}`` of
    ``evopress_history``, ``table_block_sparsity`` and ``evopress_check``."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    _style()
    methods = list(histories)
    rows = (len(methods) + 3) // 2
    fig, grid = plt.subplots(rows, 2, figsize=(14, 4.8 * rows), squeeze=False)
    axes = list(grid.flat)
    for unused in axes[2 + len(methods) :]:
        unused.set_visible(False)
    a, c = axes[0], axes[1]
    for method in methods:
        history, check = histories[method], checks[method]
        marker, color = MARKERS.get(method, "o"), COLORS.get(method, "#9467bd")
        a.plot(history["generation"], history["fitness"], color=color, marker=marker, markersize=3,
               linewidth=1, label=f"{METHOD_NAMES[method]}: parent, last stage's windows")  # fmt: skip
        a.scatter(check["generation"], check["kl"], color=color, edgecolor="black", marker=marker, s=60, zorder=3,
                  label=f"{METHOD_NAMES[method]}: checked, every window")  # fmt: skip
        c.plot(check["kl"], check["perplexity"], color=color, marker=marker, label=METHOD_NAMES[method])
        for _, row in check.iterrows():
            label = "Uniform" if row["generation"] == 0 else f"g{int(row['generation'])}"
            c.annotate(label, (row["kl"], row["perplexity"]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    a.set_xlabel("generation (0: the Uniform start)")
    a.set_ylabel("KL from the dense model (nats per token)")
    a.set_title("(a) search progress", fontsize=10)
    a.legend(fontsize=8)
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    values = pd.concat([check["perplexity"] for check in checks.values()])
    wide = values.max() > 3 * values.min()  # a log axis only where the perplexities span a factor 3
    if wide:
        c.set_yscale("log")
    c.set_xlabel("KL on every search window")
    c.set_ylabel("perplexity, table settings" + (" (log)" if wide else ""))
    c.set_title("(b) fitness vs the table's evaluation", fontsize=10)
    c.legend(fontsize=8)
    for ax, method in zip(axes[2:], methods):
        frame = blocks[method]
        for allocation in [x for x in ("uniform", "owl", "dlp", "dsa", "evopress") if x in frame]:
            style = dict(linestyle="--") if allocation == "uniform" else dict(marker="o", markersize=3)
            if allocation == "evopress":
                style = dict(marker="D", markersize=4, linewidth=2)
            ax.plot(frame.index, 100 * frame[allocation], color=ALLOCATION_COLORS[allocation],
                    label=TABLE_NAMES[allocation], **style)  # fmt: skip
        ax.set_xlabel("decoder block index")
        ax.set_ylabel("block sparsity (%)")
        ax.set_title(f"({chr(ord('c') + methods.index(method))}) {METHOD_NAMES[method]}: per-block sparsity at "
                     f"{percent(prof['main_sparsity'])} (seed {prof['seed']})", fontsize=10)  # fmt: skip
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"EvoPress allocation search — {data_tag(prof)}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_evopress_linears(linears: dict, prof: dict):
    """The found sparsity of every linear (rows: the block's linears, columns: blocks), one heat map per
    pruner (``linears``: ``{pruner: evopress_linear_sparsity frame}``), centred on the target sparsity."""
    import matplotlib.pyplot as plt

    _style()
    methods = list(linears)
    fig, axes = plt.subplots(len(methods), 1, figsize=(12, 2.6 * len(methods) + 0.6), squeeze=False)
    target = prof["main_sparsity"]
    spread = max(float((f - target).abs().max().max()) for f in linears.values()) or 0.01
    for ax, method in zip(axes[:, 0], methods):
        frame: pd.DataFrame = linears[method].T
        image = ax.imshow(100 * frame.values, aspect="auto", cmap="RdBu_r", vmin=100 * (target - spread),
                          vmax=100 * (target + spread))  # fmt: skip
        ax.grid(False)
        ax.set_yticks(range(len(frame.index)), frame.index, fontsize=8)
        ax.set_xticks(range(len(frame.columns)), frame.columns, fontsize=8)
        ax.set_xlabel("decoder block")
        ax.set_ylabel("linear")
        ax.set_title(f"{METHOD_NAMES[method]}: sparsity of each linear (%; red sparser than {percent(target)})",
                     fontsize=10)  # fmt: skip
        fig.colorbar(image, ax=ax, fraction=0.03).set_label("sparsity (%)")
    fig.suptitle(f"EvoPress per-linear sparsities — {data_tag(prof)}", fontsize=11)
    fig.tight_layout()
    return fig
