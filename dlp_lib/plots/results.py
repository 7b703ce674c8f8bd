"""Figures of the results: main table, sweep, N:M, zero-shot, LoRA recovery, DSA search."""

from __future__ import annotations

import math

import pandas as pd

from ..experiments import (
    ALLOCATION_COLORS,
    ALLOCATION_NAMES,
    HYPER_ALLOCATION,
    HYPER_NAMES,
    METHOD_NAMES,
    TABLE_NAMES,
    data_tag,
    model_name,
    percent,
    table_allocations,
)
from ..reports import CHANCE, TASK_NAMES, format_perplexity
from .style import _finish_axes, _finish_panel_row, _headroom, _legend_outside, _ppl_axis, _style


def plot_main_table(numbers: pd.DataFrame, prof: dict):
    """Grouped bars: mean perplexity per pruner (groups) and allocation (colours), log scale, the
    min–max range over seeds as error bars (none for a row of one run), dense line."""
    import matplotlib.pyplot as plt

    _style()
    data = numbers[numbers["method"] != "dense"]
    methods = [m for m in prof["main_methods"] if m in set(data["method"])]
    allocations = [a for a in table_allocations(prof) if a in set(data["allocation"])]
    dense = numbers.loc[numbers["method"] == "dense", "perplexity"]
    fig, ax = plt.subplots(figsize=(max(9.0, 0.5 * len(allocations) * len(methods)), 5.5))
    width = 0.8 / len(allocations)
    for i, allocation in enumerate(allocations):
        rows = [data[(data["method"] == m) & (data["allocation"] == allocation)] for m in methods]
        x = [j + (i - (len(allocations) - 1) / 2) * width for j, r in enumerate(rows) if len(r)]
        rows = [r.iloc[0] for r in rows if len(r)]
        means = [r["perplexity"] for r in rows]
        errors = [
            [m - r["perplexity_min"] for m, r in zip(means, rows)],
            [r["perplexity_max"] - m for m, r in zip(means, rows)],
        ]
        bars = ax.bar(x, means, width, color=ALLOCATION_COLORS[allocation], label=TABLE_NAMES[allocation])
        ranged = [k for k, r in enumerate(rows) if r["n"] > 1]  # a single run has no range to draw
        if ranged:
            pick = lambda values: [values[k] for k in ranged]  # noqa: E731
            ax.errorbar(pick(x), pick(means), yerr=[pick(errors[0]), pick(errors[1])], fmt="none", ecolor="black",
                        elinewidth=1, capsize=3)  # fmt: skip
        # upright labels in the bars: side by side they overlap as soon as a group has more than a few bars
        labels = [format_perplexity(v) for v in means]
        ax.bar_label(bars, labels=labels, fontsize=8, padding=2, label_type="center", rotation=90)
    ax.set_xticks(range(len(methods)), [METHOD_NAMES[m] for m in methods])
    ax.set_xlabel("pruner")
    _ppl_axis(ax, float(dense.iloc[0]) if len(dense) else None)
    _headroom(ax, data["perplexity_max"].tolist(), factor=2.0)
    counts = sorted({int(v) for v in data["n"] if v > 1}) or [1]
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    single = bool(((data["n"] <= 1) & data["uses_calibration"].astype(bool)).any())
    ax.set_title(
        f"Perplexity at {percent(prof['main_sparsity'])} unstructured sparsity, mean and min–max over {n} seeds"
        f"{' (no range: a single run)' if single else ''} — {data_tag(prof)}",
        fontsize=10,
    )
    _legend_outside(ax, "allocation")
    _finish_axes(fig)
    fig.tight_layout()
    return fig


def plot_sparsity_sweep(table: pd.DataFrame, prof: dict, dense: float | None = None):
    """Perplexity vs target sparsity, one panel per pruner, one line per allocation, log y; with the
    columns of ``reports.with_noise``: min-max over seeds as error bars, noise-dominated points hollow."""
    import matplotlib.pyplot as plt

    _style()
    methods = [m for m in prof["sweep"] if m in set(table["method"])]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods), 4.5), sharey=True, squeeze=False)
    ticks = sorted({100 * s for s in table["sparsity"]})
    for ax, method in zip(axes[0], methods):
        ax.set_xticks(ticks)
        ax.set_xlim(min(ticks) - 5, max(ticks) + 5)
        for allocation in prof["allocations"]:
            sub = table[(table["method"] == method) & (table["allocation"] == allocation)].sort_values("sparsity")
            if not len(sub):
                continue
            color = ALLOCATION_COLORS[allocation]
            x = 100 * sub["sparsity"]
            ax.plot(x, sub["perplexity"], marker="o", color=color, label=ALLOCATION_NAMES[allocation])
            if "seed_min" in sub:  # min-max over seeds where the main table has them
                ranged = sub[sub["seed_min"].notna()]
                low, high = ranged["perplexity"] - ranged["seed_min"], ranged["seed_max"] - ranged["perplexity"]
                ax.errorbar(
                    100 * ranged["sparsity"],
                    ranged["perplexity"],
                    yerr=[low, high],
                    fmt="none",
                    ecolor=color,
                    elinewidth=1.2,
                    capsize=4,
                )
            if "noise_dominated" in sub:  # hollow: beyond the reproduction tolerance's factor 2
                noisy = sub[sub["noise_dominated"].astype(bool)]
                ax.scatter(
                    100 * noisy["sparsity"], noisy["perplexity"], s=60, facecolors="white", edgecolors=color, zorder=5
                )
        if "noise_dominated" in table and table["noise_dominated"].astype(bool).any():
            ax.scatter([], [], s=60, facecolors="white", edgecolors="black", label="noise-dominated")
        _ppl_axis(ax, dense)
        ax.set_title(METHOD_NAMES[method])
        ax.set_xlabel("target sparsity (%)")
    return _finish_panel_row(fig, axes[0], f"Perplexity vs sparsity — {data_tag(prof)}")


def _default_band(ax, pruned: pd.DataFrame, default: float):
    """The default's perplexity with its reproduction tolerance shaded, and the values beyond it ringed
    (``vs_default``), so a reader sees which differences are more than noise."""
    base = pruned[[math.isclose(v, default) for v in pruned["value"]]]
    if base.empty or "tolerance_pct" not in pruned:
        return
    ppl, factor = float(base["perplexity"].iloc[0]), 1 + float(base["tolerance_pct"].iloc[0]) / 100
    ax.axhspan(ppl / factor, ppl * factor, color="grey", alpha=0.15, label=f"default ± tolerance ({factor - 1:.0%})")
    beyond = pruned[pruned.get("vs_default", pd.Series("", index=pruned.index)).str.contains("beyond")]
    if len(beyond):
        ax.scatter(beyond["value"], beyond["perplexity"], s=160, facecolors="none", edgecolors="black",
                   zorder=4, label="beyond the tolerance")  # fmt: skip
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.3), ncol=2, borderaxespad=0)


def plot_hyperparameters(summary: pd.DataFrame, blocks: pd.DataFrame, table: pd.DataFrame, prof: dict):
    """Top row: per-block sparsity for each value of DLP α, OWL λ and OWL M (allocation only).
    Bottom row: perplexity of the pruned runs against the same value."""
    import matplotlib.pyplot as plt
    from matplotlib import cm

    _style()
    names = [n for n in HYPER_ALLOCATION if n in prof["hyper_grid"]]
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 8.8), squeeze=False)
    method = prof["hyper_pruned"].get("method", "wanda")
    for col, name in enumerate(names):
        top, bottom = axes[0][col], axes[1][col]
        sub = blocks[blocks["parameter"] == name] if len(blocks) else blocks
        values = sorted(set(sub["value"])) if len(sub) else []
        colors = cm.viridis([i / max(1, len(values) - 1) for i in range(len(values))])
        for color, value in zip(colors, values):
            curve = sub[sub["value"] == value]
            width = 2.5 if math.isclose(value, prof[name]) else 1.2
            top.plot(curve["block"], 100 * curve["sparsity"], color=color, linewidth=width, label=f"{value:g}")
        infeasible = summary[(summary["parameter"] == name) & ~summary["feasible"].astype(bool)]["value"]
        title = f"{HYPER_NAMES[name]} (thick line: default {prof[name]:g})"
        if len(infeasible):
            title += f"\nimpossible (a block outside (0, 1]): {', '.join(f'{v:g}' for v in infeasible)}"
        top.set_title(title, fontsize=10)
        top.set_xlabel("decoder block index")
        top.set_ylabel("block sparsity (%)")
        top.legend(title=HYPER_NAMES[name].split(" (")[0], fontsize=8, ncol=2)
        pruned = table[(table["parameter"] == name) & table["perplexity"].notna()].sort_values("value")
        grid = prof["hyper_grid"][name]
        pad = 0.05 * (max(grid) - min(grid) or 1.0)
        bottom.set_xlim(min(grid) - pad, max(grid) + pad)
        for value, ppl in zip(pruned["value"], pruned["perplexity"]):
            bottom.annotate(
                format_perplexity(ppl), (value, ppl), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8
            )
        if len(pruned):
            bottom.plot(
                pruned["value"], pruned["perplexity"], marker="o", color=ALLOCATION_COLORS[HYPER_ALLOCATION[name]]
            )
            _default_band(bottom, pruned, prof[name])
            bottom.set_yscale("log")
        else:
            bottom.text(
                0.5, 0.5, "no pruned runs in this profile", ha="center", va="center", transform=bottom.transAxes
            )
        bottom.set_xlabel(HYPER_NAMES[name])
        bottom.set_ylabel(f"{METHOD_NAMES.get(method, method)} perplexity (log)")
        bottom.set_title(f"{METHOD_NAMES.get(method, method)} at {percent(prof['main_sparsity'])}", fontsize=10)
    fig.suptitle(f"Hyper-parameter sensitivity at {percent(prof['main_sparsity'])} — {data_tag(prof)}", fontsize=11)
    _finish_axes(fig, block_axes=axes[0])
    fig.tight_layout()
    return fig


def plot_nm(table: pd.DataFrame, prof: dict, dense: float | None = None):
    """Grouped bars: N:M perplexity per pruner (panels), pattern (groups) and allocation (colours)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    _style()
    methods = [m for m in prof["nm"] if m in set(table["method"])]
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods) + 2, 4.5), sharey=True, squeeze=False)
    allocations = [a for a in ALLOCATION_NAMES if a in set(table["allocation"])]
    palette = {ALLOCATION_NAMES[a]: ALLOCATION_COLORS[a] for a in allocations}
    for ax, method in zip(axes[0], methods):
        sub = table[table["method"] == method].assign(Allocation=lambda d: d["allocation"].map(ALLOCATION_NAMES))
        sns.barplot(
            data=sub,
            x="sparsity_type",
            y="perplexity",
            hue="Allocation",
            palette=palette,
            ax=ax,
            hue_order=[ALLOCATION_NAMES[a] for a in allocations],
        )
        for container in ax.containers:
            ax.bar_label(container, labels=[format_perplexity(b.get_height()) for b in container], fontsize=8)
        _ppl_axis(ax, dense)
        _headroom(ax, table["perplexity"].tolist())
        ax.set_title(METHOD_NAMES[method])
        ax.set_xlabel("N:M pattern (N zeros in every M weights)")
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    return _finish_panel_row(fig, axes[0], f"N:M semi-structured sparsity — {data_tag(prof)}")


# accuracy of guessing: two choices for BoolQ, RTE, WinoGrande, PIQA; four for the others


def plot_zero_shot(numbers: pd.DataFrame, prof: dict):
    """Grouped bars: accuracy per task (groups) of the dense model and each allocation (colours), one
    panel per pruner, each bar with ±1 standard error of its examples, each task's chance level, and the
    mean over the tasks as the last group (its value in the legend)."""
    import matplotlib.pyplot as plt

    _style()
    tasks = list(prof["zero_shot"]["tasks"])
    columns = tasks + ["mean_acc"]
    labels = [TASK_NAMES.get(t, t) for t in tasks] + ["Mean"]
    dense = numbers[numbers["method"] == "dense"]
    methods = [m for m in prof["zero_shot"]["methods"] if m in set(numbers["method"])]
    fig, axes = plt.subplots(len(methods), 1, figsize=(13, 3.8 * len(methods)), squeeze=False, sharey=True)
    for ax, method in zip(axes[:, 0], methods):
        sub = numbers[numbers["method"] == method]
        bars = [("Dense", "#333333", dense.iloc[0])] if len(dense) else []
        bars += [(ALLOCATION_NAMES[r["allocation"]], ALLOCATION_COLORS[r["allocation"]], r) for _, r in sub.iterrows()]
        width = 0.8 / max(len(bars), 1)
        for i, (name, color, row) in enumerate(bars):
            x = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(columns))]
            heights = [100 * row[c] for c in columns]
            errors = [100 * row.get(f"{c}_se", float("nan")) for c in columns]
            ax.bar(x, heights, width, color=color, label=f"{name} (mean {heights[-1]:.1f} ± {errors[-1]:.1f})")
            ax.errorbar(x, heights, yerr=errors, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
        for j, task in enumerate(tasks):
            if task in CHANCE:
                ax.hlines(100 * CHANCE[task], j - 0.45, j + 0.45, color="black", linestyle=":", linewidth=1.2, zorder=5)
        ax.plot([], [], color="black", linestyle=":", label="chance")
        ax.errorbar([], [], yerr=[], fmt="none", ecolor="black", elinewidth=0.8, capsize=2, label="± 1 standard error")
        ax.axvline(len(tasks) - 0.5, color="#bbbbbb", linewidth=1)
        ax.set_xticks(range(len(columns)), labels)
        ax.set_xlabel("task (right: the mean over the tasks)")
        ax.set_ylabel("accuracy (%, higher is better)")
        ax.set_title(f"{METHOD_NAMES[method]} at {percent(prof['main_sparsity'])} unstructured sparsity")
        _legend_outside(ax, "model")
    limit = prof["zero_shot"]["limit"]
    scope = "full splits" if limit is None else f"first {limit} examples per task"
    fig.suptitle(f"Zero-shot accuracy ({scope}) — {model_name(prof)} · lm-eval tasks · profile {prof.get('name')}",
                 fontsize=11)  # fmt: skip
    fig.tight_layout()
    return fig


def plot_recovery(curves: pd.DataFrame, runs: pd.DataFrame, prof: dict, dense: float | None = None):
    """Left: held-out perplexity against LoRA training steps, one line per allocation (per pruner:
    line style). Right: evaluation perplexity before recovery, with the adapter and merged with the
    mask applied again, per allocation."""
    import matplotlib.pyplot as plt

    _style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = ["-", "--", ":"]
    methods = list(dict.fromkeys(runs["method"]))
    for (method, allocation), sub in curves.dropna(subset=["heldout_perplexity"]).groupby(
        ["method", "allocation"], sort=False
    ):
        label = ALLOCATION_NAMES[allocation]
        if len(methods) > 1:
            label = f"{METHOD_NAMES[method]} {label}"
        left.plot(
            sub["step"],
            sub["heldout_perplexity"],
            marker="o",
            linestyle=styles[methods.index(method) % len(styles)],
            color=ALLOCATION_COLORS[allocation],
            label=label,
        )
    _ppl_axis(left)
    left.set_xlabel("LoRA training step")
    left.set_title("held-out training windows")
    left.legend(title="allocation")

    labels = [
        ALLOCATION_NAMES[a] if len(methods) == 1 else f"{METHOD_NAMES[m]}\n{ALLOCATION_NAMES[a]}"
        for m, a in zip(runs["method"], runs["allocation"])
    ]
    x = range(len(runs))
    colors = [ALLOCATION_COLORS[a] for a in runs["allocation"]]
    width = 0.27
    before = right.bar([i - width for i in x], runs["perplexity_before"], width=width, color=colors, alpha=0.35)
    adapter = right.bar(list(x), runs["perplexity_adapter"], width=width, color=colors)
    merged = right.bar(
        [i + width for i in x], runs["perplexity_merged"], width=width, color=colors, alpha=0.6, hatch="//"
    )
    for bars in (before, adapter, merged):
        right.bar_label(bars, labels=[format_perplexity(b.get_height()) for b in bars], fontsize=8)
    right.set_xticks(list(x), labels)
    right.set_xlabel("pruned run" if len(methods) > 1 else f"{METHOD_NAMES[methods[0]]}, allocation")
    _ppl_axis(right, dense)
    _headroom(right, runs["perplexity_before"].tolist())
    right.set_title("evaluation windows: before (pale), adapter (solid), merged + mask (hatched)", fontsize=10)
    if dense is not None:
        right.legend(loc="upper right")
    fig.suptitle(f"LoRA recovery at {percent(prof['main_sparsity'])} sparsity — {data_tag(prof)}", fontsize=11)
    _finish_axes(fig)
    fig.tight_layout()
    return fig


def plot_dsa_search(history: pd.DataFrame, references: dict, blocks: pd.DataFrame, check: pd.DataFrame, prof: dict):
    """DSA's search in three panels: (a) proxy fitness per generation (best so far, the generation's
    best and median) with the profile's allocations' proxy fitness as lines; (b) per-block sparsity of
    the searched expression beside OWL and DLP (the table's runs, ``blocks``: block x allocation); (c)
    proxy fitness against the perplexity with the table's settings (``dsa_proxy_check``)."""
    import matplotlib.pyplot as plt

    _style()
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1.1, 1.3, 1.0]})
    generations = history["generation"]  # as in tables/dsa_search.md: 0 is the random first population
    a.plot(generations, history["best"], marker="o", color=ALLOCATION_COLORS["dsa"], label="best so far")
    # markers only, drawn on top: where a generation's best is the best so far, a line would hide under it
    a.plot(generations, history["generation_best"], linestyle="none", marker="x", markersize=9, zorder=3,
           color="black", label="generation best")  # fmt: skip
    a.plot(generations, history["median"], marker="s", color="#8c8c8c", label="generation median")
    for allocation, candidate in references.items():
        if candidate.get("fitness") is not None:
            a.axhline(
                candidate["fitness"],
                color=ALLOCATION_COLORS[allocation],
                linestyle="--",
                linewidth=1,
                label=f"{ALLOCATION_NAMES[allocation]} (same proxy)",
            )
    a.set_yscale("log")
    a.set_xlabel("generation (0: the random first population)")
    a.set_ylabel("proxy perplexity (search windows, log)")
    a.set_title("(a) search progress", fontsize=10)
    a.legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator

    a.xaxis.set_major_locator(MaxNLocator(integer=True))

    for allocation in [x for x in ("uniform", "owl", "dlp", "dsa") if x in blocks]:
        style = dict(marker="o", markersize=3.5) if allocation != "uniform" else dict(linestyle="--")
        b.plot(
            blocks.index,
            100 * blocks[allocation],
            color=ALLOCATION_COLORS[allocation],
            label=TABLE_NAMES[allocation],
            **style,
        )
    b.set_xlabel("decoder block index")
    b.set_ylabel("block sparsity (%)")
    b.set_title(f"(b) per-block sparsity at {percent(prof['main_sparsity'])} (seed {prof['seed']})", fontsize=10)
    b.legend(fontsize=8)
    b.xaxis.set_major_locator(MaxNLocator(integer=True))

    searched = check[check["kind"] == "searched"]
    c.scatter(searched["proxy"], searched["perplexity"], color=ALLOCATION_COLORS["dsa"], label="searched expressions")
    refs = check[check["kind"] == "reference"]
    names = {v: k for k, v in ALLOCATION_NAMES.items()}
    for _, row in refs.iterrows():
        color = ALLOCATION_COLORS.get(names.get(row["allocation"]), "black")
        c.scatter([row["proxy"]], [row["perplexity"]], color=color, marker="D", label=row["allocation"])
    c.set_xscale("log")
    c.set_yscale("log")
    c.set_xlabel("proxy perplexity (search windows)")
    c.set_ylabel("perplexity, table settings")
    c.set_title("(c) proxy vs the table's evaluation", fontsize=10)
    c.legend(fontsize=8)
    fig.suptitle(f"DSA allocation search — {data_tag(prof)}", fontsize=11)
    fig.tight_layout()
    return fig
