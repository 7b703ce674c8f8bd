"""Formatting and writing tables: perplexity style, Markdown, booktabs LaTeX; CSV/Markdown/LaTeX written atomically."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from ..cache import atomic_path
from ..outputs import check_output_file


def format_perplexity(value) -> str:
    """``12.35``; ``4.92e4`` from 1000 up (the DLP README's compact style); ``–`` when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    value = float(value)
    if abs(value) < 1000:
        return f"{value:.2f}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def format_tolerance(percent_value) -> str:
    """``±46%``; ``±0.1%`` below 10%."""
    return f"±{percent_value:.0f}%" if percent_value >= 10 else f"±{percent_value:.1f}%"


def _format_cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(frame: pd.DataFrame, bold: pd.DataFrame | None = None) -> str:
    """A GitHub pipe table of the frame's cells as strings (``bold``: same-shape boolean mask)."""
    cells = frame.map(_format_cell)
    if bold is not None:
        cells = cells.where(~bold.reindex_like(cells).fillna(False).astype(bool), "**" + cells + "**")
    escape = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(escape(c) for c in frame.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in frame.columns) + "|")
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "–": "--"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text)).replace("α", r"$\alpha$").replace("λ", r"$\lambda$")


def _looks_numeric(column: pd.Series) -> bool:
    """Numbers or formatted numbers (``4.92e4``, ``–`` for missing): right-aligned in LaTeX."""
    if pd.api.types.is_numeric_dtype(column):
        return True
    try:
        [float(v) for v in column if str(v) not in ("–", "")]
    except ValueError:
        return False
    return True


def to_latex(frame: pd.DataFrame, bold: pd.DataFrame | None = None, caption: str | None = None) -> str:
    """A booktabs ``tabular`` (numbers right-aligned) of the frame's cells; ``bold`` as in to_markdown."""
    cells = frame.map(lambda v: _latex_escape(_format_cell(v)))
    if bold is not None:
        cells = cells.where(~bold.reindex_like(cells).fillna(False).astype(bool), r"\textbf{" + cells + "}")
    align = "".join("r" if _looks_numeric(frame[c]) else "l" for c in frame.columns)
    lines = [f"% {caption}"] if caption else []
    lines += [
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(_latex_escape(c) for c in frame.columns) + r" \\",
    ]
    lines.append(r"\midrule")
    lines += [" & ".join(row) + r" \\" for row in cells.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(
    frame: pd.DataFrame,
    tables_dir: str | os.PathLike,
    name: str,
    formats=("csv", "md"),
    display: pd.DataFrame | None = None,
    bold: pd.DataFrame | None = None,
    caption: str | None = None,
) -> list[Path]:
    """Write ``frame`` as ``<name>.csv`` (raw numbers) and ``display`` (default: ``frame``; formatted
    strings) as ``<name>.md`` / ``<name>.tex``, each written atomically. Every target is checked first
    (``outputs.check_output_file``: a directory of its name is refused in one line, nothing written);
    a file of its name is replaced, no other file touched. Returns the paths."""

    display = frame if display is None else display
    out = Path(tables_dir)
    paths = []
    for fmt in formats:
        check_output_file(out / f"{name}.{fmt}", "the table")
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        if fmt == "csv":
            text = frame.to_csv(index=False)
        elif fmt == "md":
            text = (f"{caption}\n\n" if caption else "") + to_markdown(display, bold)
        elif fmt == "tex":
            text = to_latex(display, bold, caption)
        else:
            raise ValueError(f"unknown table format {fmt!r}; use csv, md or tex")
        with atomic_path(path, what="the table") as tmp:
            tmp.write_text(text)
        paths.append(path)
    return paths
