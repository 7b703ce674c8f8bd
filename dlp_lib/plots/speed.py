"""Figures of what sparsity buys at inference (notebook 09): sparse products, CPU engines."""

from __future__ import annotations

import textwrap

import pandas as pd

from .style import _finish_axes, _style


def plot_speedup(cpu: pd.DataFrame, gpu: pd.DataFrame | None, cpu_label: str, gpu_label: str | None):
    """What sparsity buys: (a) dense time / sparse time of ``y = x W^T`` on this CPU per sparse format and
    pattern against the token count (one line per shape and format); (b) the same for 2:4 on a GPU from
    committed results (``gpu``; a panel saying none is committed otherwise). A dashed line marks 1x: below
    it the sparse product is slower."""
    import matplotlib.pyplot as plt

    _style()
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 6.4))
    palette = {"csr": "#1f77b4", "csc": "#ff7f0e", "coo": "#2ca02c", "cusparselt": "#d62728", "cutlass": "#9467bd"}
    markers = ["o", "s", "^", "D", "v", "P", "X", "*", "h"]
    for ax, frame, label in ((a, cpu, cpu_label), (b, gpu, gpu_label)):
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="1x (dense speed)")
        if frame is None or not len(frame):
            ax.text(0.5, 0.5, "no GPU measurement committed yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_title("(b) 2:4 on a GPU", fontsize=10)
            ax.set_xlabel("tokens per product")
            ax.set_ylabel("dense time / sparse time (log; > 1 is faster)")
            continue
        shapes = list(dict.fromkeys(frame["shape"]))
        for (shape, pattern, fmt, dtype), rows in frame.groupby(["shape", "pattern", "format", "dtype"], sort=False):
            linestyle = "-" if pattern != "2:4" or fmt in ("cusparselt", "cutlass") else ":"
            ax.plot(
                rows["tokens"],
                rows["speedup"],
                marker=markers[shapes.index(shape) % len(markers)],
                linestyle=linestyle if dtype != "float16" else "-.",
                color=palette.get(fmt, "black"),
                label=f"{shape}, {pattern} {fmt}" + ("" if dtype == "float32" else f" {dtype}"),
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens per product")
        ax.set_ylabel("dense time / sparse time (log; > 1 is faster)")
        ax.set_title("\n".join(textwrap.wrap(label, 70)), fontsize=10)
        # below the panel: with 6-9 lines, a legend inside would cover some of them
        ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16), borderaxespad=0)
    fig.suptitle("What sparse weights buy at inference (measured; below 1x is a slow-down)", fontsize=11)
    _finish_axes(fig)
    fig.tight_layout()
    return fig


def plot_engine_speedups(frame: pd.DataFrame, machine: str):
    """Each CPU engine's prefill and decode speed-up of each pruned variant over its own dense run
    (``dlp_lib.engines.speedups`` rows), as bars from 1x (up: faster); the noise all engines share (the
    smallest ``<graph>_noise``: the control engines' stray from 1, at least 5%) is shaded around 1x, where a
    bar says nothing."""
    import matplotlib.pyplot as plt

    _style()
    engines = list(dict.fromkeys(frame["engine"]))
    variants = list(dict.fromkeys(frame["variant"]))
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.4), sharey=True)
    width = 0.8 / max(len(engines), 1)
    colours = plt.get_cmap("tab10")
    for ax, graph in zip(axes, ("prefill", "decode")):
        # the noise every engine shares (the controls' stray; an engine's own dense spread may add to it)
        spread = frame[f"{graph}_noise"].min()
        ax.axhspan(1 / (1 + spread), 1 + spread, color="grey", alpha=0.2, label="noise band")
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        for i, engine in enumerate(engines):
            rows = frame[frame["engine"] == engine].set_index("variant").reindex(variants)
            positions = [v + (i - (len(engines) - 1) / 2) * width for v in range(len(variants))]
            ratios = rows[f"{graph}_speedup"]
            ax.bar(positions, ratios - 1, width, bottom=1, color=colours(i), label=engine)  # up: faster
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels(variants, rotation=30, ha="right", fontsize=8)
        ax.set_xlabel("pruned variant")
        ax.set_yscale("log")
        ax.tick_params(axis="y", labelleft=True)  # each panel its own numbers, though the scale is shared
        ax.set_title(f"{graph} (grey: noise, ±{spread:.0%})", fontsize=10)
    axes[0].set_ylabel("dense time / pruned time (log; > 1 is faster)")
    axes[1].legend(fontsize=8, title="engine", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle(f"Pruned models in CPU inference engines, each against its own dense run ({machine})", fontsize=11)
    _finish_axes(fig)
    fig.tight_layout()
    return fig
