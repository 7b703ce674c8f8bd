"""The figure checker (dlp_lib.plots.readability) on hand-built figures: each problem it names is found where it
is and only there. tests/test_render.py runs it on every committed figure."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dlp_lib.plots import readability, save_figure  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _clean(labelled=True):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([0, 1, 2], [3, 1, 2], marker="o", label="series")
    if labelled:
        ax.set_xlabel("x things")
        ax.set_ylabel("y things")
    return fig, ax


def test_a_labelled_panel_with_a_legend_beside_it_reads_well():
    fig, ax = _clean()
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    assert readability.figure_problems(fig) == []


def test_overlapping_texts_are_named_both():
    fig, ax = _clean()
    ax.text(1.0, 2.0, "first label", fontsize=10)
    ax.text(1.05, 2.0, "second label", fontsize=10)
    problems = readability.figure_problems(fig)
    assert problems == ["text 'first label' overlaps text 'second label'"]


def test_rotated_tick_labels_side_by_side_do_not_count_as_overlapping():
    # at 45 degrees the upright envelopes of these labels meet, the labels themselves do not
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.bar(range(8), [1, 2, 3, 2, 1, 2, 3, 2])
    ax.set_xticks(range(8), [f"a long label {i}" for i in range(8)], rotation=45, ha="right")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.get_xticklabels()]
    assert boxes[0].x1 > boxes[1].x0  # the envelopes do meet
    assert readability.figure_problems(fig) == []
    # unrotated, the same labels overlap
    ax.set_xticks(range(8), [f"a long label {i}" for i in range(8)], rotation=0, ha="center")
    assert any("overlaps x tick" in p for p in readability.figure_problems(fig))


def test_a_legend_over_data_points_is_found():
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.linspace(0, 1, 50), np.linspace(0, 1, 50), marker="o", label="diagonal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="center", fontsize=14)
    problems = readability.figure_problems(fig)
    assert len(problems) == 1 and problems[0].startswith("the legend of panel 'y' covers")


def test_a_label_over_an_error_bar_is_found():
    fig, ax = _clean()
    ax.errorbar([1.0], [2.0], yerr=[[0.1], [0.1]], capsize=3, color="black")
    ax.annotate("2.00", (1.0, 2.1), ha="center", va="center", fontsize=10)
    problems = readability.figure_problems(fig)
    assert problems and all("'2.00' lies over" in p for p in problems)


def test_a_colour_bar_needs_a_label():
    fig, ax = plt.subplots()
    image = ax.imshow(np.eye(4))
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    bar = fig.colorbar(image, ax=ax)
    assert readability.figure_problems(fig) == ["a colour bar has no label"]
    bar.set_label("value")
    assert readability.figure_problems(fig) == []


def test_small_type_is_found_with_its_size():
    fig, ax = _clean()
    ax.set_title("tiny title", fontsize=7)
    assert readability.figure_problems(fig) == ["title 'tiny title' is 7.0 pt (under 8)"]


def test_axes_need_labels_unless_a_panel_sharing_the_axis_has_them():
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True)
    for ax in (top, bottom):
        ax.plot([0, 1], [0, 1])
        ax.set_ylabel("y")
    bottom.set_xlabel("shared x")  # the top panel's x axis is the bottom one's
    assert readability.figure_problems(fig) == []
    fig, ax = _clean(labelled=False)
    ax.set_title("a panel")
    problems = readability.figure_problems(fig)
    assert problems == ["panel 'a panel' has no x axis label", "panel 'a panel' has no y axis label"]


def test_a_panel_without_tick_labels_is_found():
    fig, ax = _clean()
    ax.tick_params(axis="y", labelleft=False)
    assert readability.figure_problems(fig) == ["panel 'y things' has no y tick labels"]


def test_save_figure_writes_the_audit_only_when_asked(tmp_path, monkeypatch):
    fig, ax = _clean()
    ax.set_title("tiny", fontsize=6)
    save_figure(fig, tmp_path, "plain")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.pdf", "plain.png"]
    monkeypatch.setenv(readability.AUDIT_ENV, str(tmp_path / "audit"))
    save_figure(fig, tmp_path, "audited")
    assert json.loads((tmp_path / "audit" / "audited.readability.json").read_text()) == [
        "title 'tiny' is 6.0 pt (under 8)"
    ]


def test_labels_of_one_kind_must_keep_a_gap():
    fig, ax = _clean()
    fig.canvas.draw()
    first = ax.text(0.2, 2.5, "HellaSwag", fontsize=10)
    fig.canvas.draw()
    box = first.get_window_extent()
    # a second label starting 1 px after the first ends: they do not overlap, they run into each other
    x = ax.transData.inverted().transform((box.x1 + 1, box.y0))[0]
    ax.text(x, 2.5, "WinoGrande", fontsize=10)
    assert readability.figure_problems(fig) == ["text 'HellaSwag' overlaps text 'WinoGrande'"]


def test_log_axes_of_one_to_three_decades_print_plain_numbers():
    from dlp_lib.plots.style import _finish_axes, _two_or_five

    values = (20, 30, 50, 200, 400, 500, 0.05, 7)
    assert [_two_or_five(v) for v in values] == ["20", "", "50", "200", "", "500", "0.05", ""]
    fig, ax = _clean()
    ax.set_yscale("log")
    ax.set_ylim(14, 520)  # the N:M figure's span: 1.6 decades
    _finish_axes(fig)
    fig.canvas.draw()
    ticks = ax.yaxis.get_major_ticks() + ax.yaxis.get_minor_ticks()
    shown = {t.label1.get_text() for t in ticks if 14 <= t.get_loc() <= 520 and t.label1.get_text()}
    assert shown == {"20", "50", "100", "200", "500"}
