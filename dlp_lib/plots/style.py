"""The figures' look and saving: one style, shared axis finishing, PNG and PDF written atomically."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..cache import atomic_path
from ..outputs import check_output_file


def _style():
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")


def save_figure(fig, figures_dir: str | os.PathLike, name: str, formats=("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``<name>.png`` (150 dpi) and ``<name>.pdf``, atomically. Every target is checked
    first (``outputs.check_output_file``: a directory of its name is refused in one line, nothing
    written); a file of its name is replaced, no other file touched."""

    paths = []
    _audit(fig, name)
    for fmt in formats:
        check_output_file(Path(figures_dir) / f"{name}.{fmt}", "the figure")
    for fmt in formats:
        path = Path(figures_dir) / f"{name}.{fmt}"
        with atomic_path(path, what="the figure") as tmp:
            # no creation date in PDFs, so an unchanged figure gives an unchanged file
            metadata = {"CreationDate": None} if fmt == "pdf" else None
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    return paths


def _audit(fig, name: str):
    """With DLP_FIGURE_AUDIT set to a directory, write ``<name>.readability.json`` there: the figure's
    readability problems (``readability.figure_problems``), an empty list when it reads well."""
    import json

    from .readability import AUDIT_ENV, figure_problems

    audit_dir = os.environ.get(AUDIT_ENV)
    if audit_dir:
        Path(audit_dir).mkdir(parents=True, exist_ok=True)
        (Path(audit_dir) / f"{name}.readability.json").write_text(json.dumps(figure_problems(fig), indent=1) + "\n")


def _ppl_axis(ax, dense: float | None = None):
    ax.set_yscale("log")
    ax.set_ylabel("perplexity (log scale, lower is better)")
    if dense is not None:
        ax.axhline(dense, color="black", linestyle="--", linewidth=1, label=f"dense ({dense:.2f})")


def _two_or_five(value: float, _position=None) -> str:
    """A log axis's minor label: the plain number at 2 and 5 times a power of ten, else none."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if min(abs(mantissa - 2), abs(mantissa - 5)) < 1e-6 else ""


def _finish_axes(fig, block_axes=()):
    """Readable ticks: integer block indices; plain numbers on log axes spanning less than three decades
    (instead of 1.07x10^2 or 4x10^2 style labels): up to ~a decade evenly spaced ticks, beyond it the
    powers of ten with 2x and 5x between them."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    for ax in block_axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in fig.axes:
        if ax.get_yscale() != "log":
            continue
        low, high = ax.get_ylim()
        if low > 0 and high / low < 20:
            ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        elif low > 0 and high / low < 1000:
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(_two_or_five))


def _headroom(ax, values, factor: float = 4.0):
    """Room above the tallest bar of a log axis for its label."""
    values = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if values:
        ax.set_ylim(top=max(values) * factor)


def _legend_outside(ax, title: str):
    ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _finish_panel_row(fig, axes, title: str):
    """A row of per-pruner panels sharing the y axis: one allocation legend on the right, the y label on
    the first panel only, a figure title."""
    _legend_outside(axes[-1], "allocation")
    for ax in axes[1:]:
        ax.set_ylabel("")
    fig.suptitle(title, fontsize=11)
    _finish_axes(fig)
    fig.tight_layout()
    return fig
