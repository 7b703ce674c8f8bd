"""What makes a saved figure hard to read, found on the figure itself: text over other text, text cut off,
legends over data points, axes and colour bars without labels, type under 8 pt.

``figure_problems(fig)`` draws the figure once and returns one line per problem (empty when it reads well).
:func:`dlp_lib.plots.save_figure` writes that list beside the figure when ``DLP_FIGURE_AUDIT`` names a
directory, so a render of every notebook can be checked at once (tests/test_render.py).
"""

from __future__ import annotations

import itertools

import numpy as np

AUDIT_ENV = "DLP_FIGURE_AUDIT"
MIN_POINTS = 8.0
_SLACK_PX = 1.0  # boxes touching by a pixel (antialiasing) do not count as cut off
_GAP_PX = 2.0  # two texts closer than this (at 100 dpi) run into each other ("HellaSwagWinoGrande")


def _drawn_tick_labels(axis) -> list:
    """The tick labels ``axis`` draws (ticks outside its view are kept but not drawn)."""
    labels = []
    for tick in axis._update_ticks():  # the ticks matplotlib draws this time (no public equivalent)
        labels += [t for t in (tick.label1, tick.label2) if t.get_visible() and t.get_text().strip()]
    return labels


def _axes_texts(ax) -> list[tuple[str, object]]:
    found = [("title", t) for t in (ax.title, ax._left_title, ax._right_title)]
    found += [("x label", ax.xaxis.label), ("y label", ax.yaxis.label)]
    found += [("text", t) for t in ax.texts]
    found += [("x tick", t) for t in _drawn_tick_labels(ax.xaxis)]
    found += [("y tick", t) for t in _drawn_tick_labels(ax.yaxis)]
    found += [("offset", ax.xaxis.get_offset_text()), ("offset", ax.yaxis.get_offset_text())]
    legend = ax.get_legend()
    if legend is not None:
        found += [("legend", t) for t in legend.get_texts()] + [("legend title", legend.get_title())]
    return found


def _visible_texts(fig) -> list[tuple[str, object]]:
    found = [("figure text", t) for t in fig.texts]
    for legend in fig.legends:
        found += [("legend", t) for t in legend.get_texts()] + [("legend title", legend.get_title())]
    for ax in fig.axes:
        if ax.get_visible():
            found += _axes_texts(ax)
    return [(kind, t) for kind, t in found if t.get_visible() and t.get_text().strip()]


def _corners(text, renderer) -> np.ndarray:
    """The four corners of ``text``'s box in display coordinates, turned with the text (a rotated label's
    upright envelope would meet its neighbours' when the labels themselves do not)."""
    box = text.get_window_extent(renderer)
    angle = text.get_rotation() % 180
    if angle in (0.0, 90.0):
        return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])
    text.set_rotation(0)
    upright = text.get_window_extent(renderer)
    text.set_rotation(angle)
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [upright.width / 2, upright.height / 2]
    turn = np.deg2rad(angle)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    return half @ rotation.T + [(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2]


def _overlap(a: np.ndarray, b: np.ndarray, gap: float) -> bool:
    """Whether two convex quadrilaterals come closer than ``gap`` pixels (separating axis test)."""
    for quad in (a, b):
        for i in range(4):
            edge = quad[(i + 1) % 4] - quad[i]
            normal = np.array([-edge[1], edge[0]]) / (np.hypot(*edge) or 1.0)
            pa, pb = a @ normal, b @ normal
            if min(pa.max(), pb.max()) - max(pa.min(), pb.min()) <= -gap:
                return False
    return True


def _inside(inner, outer) -> bool:
    return (
        inner.x0 >= outer.x0 - _SLACK_PX
        and inner.y0 >= outer.y0 - _SLACK_PX
        and inner.x1 <= outer.x1 + _SLACK_PX
        and inner.y1 <= outer.y1 + _SLACK_PX
    )


def _name(kind: str, text) -> str:
    words = " ".join(text.get_text().split())
    return f"{kind} {words[:40]!r}"


def _is_colorbar(ax) -> bool:
    return getattr(ax, "_colorbar", None) is not None


def _data_points(ax) -> np.ndarray:
    """Display coordinates of the axes' data: line vertices, marker and error-bar positions, bar corners."""
    points = []
    for line in ax.lines:
        if line.get_visible() and len(line.get_xydata()):
            points.append(line.get_transform().transform(line.get_xydata()))
    for coll in ax.collections:
        if not coll.get_visible():
            continue
        offsets = coll.get_offsets()
        if len(offsets) > 1 or (len(offsets) == 1 and np.any(offsets)):
            points.append(coll.get_offset_transform().transform(offsets))
        else:
            for path in coll.get_paths():
                if len(path.vertices) <= 64:  # segments (error bars); a shaded band is not data
                    points.append(coll.get_transform().transform(path.vertices))
    for patch in ax.patches:
        if patch.get_visible():
            box = patch.get_window_extent()
            points.append(np.array([[box.x0, box.y0], [box.x1, box.y1], [box.x0, box.y1], [box.x1, box.y0]]))
    points = [p for p in points if p.size]
    return np.concatenate(points) if points else np.zeros((0, 2))


def _points_inside(points: np.ndarray, box) -> int:
    """How many finite points lie strictly inside ``box`` (display coordinates)."""
    x, y = points[:, 0], points[:, 1]
    inside = (x > box.x0) & (x < box.x1) & (y > box.y0) & (y < box.y1) & np.isfinite(points).all(axis=1)
    return int(inside.sum())


def _legend_problems(fig, renderer) -> list[str]:
    problems = []
    legends = [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend() is not None]
    legends += [(None, legend) for legend in fig.legends]
    for owner, legend in legends:
        if not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        for ax in [owner] if owner is not None else fig.axes:
            count = _points_inside(_data_points(ax), box)
            if count:
                problems.append(f"the legend of {_axes_name(ax)} covers {count} data point(s)")
    return problems


def _text_problems(fig, renderer) -> list[str]:
    """Labels written in a panel (annotations, bar values) with another series' data points under them."""
    problems = []
    for ax in fig.axes:
        if not ax.get_visible() or not ax.texts:
            continue
        points = _data_points(ax)
        for text in ax.texts:
            if not (text.get_visible() and text.get_text().strip()):
                continue
            box = text.get_window_extent(renderer).shrunk(0.9, 0.8)  # glyph boxes have margins
            count = _points_inside(points, box)
            if count:
                problems.append(f"{_name('text', text)} lies over {count} data point(s)")
    return problems


def _axes_name(ax) -> str:
    title = ax.get_title() or ax.get_title(loc="left") or ax.get_ylabel() or "an untitled panel"
    return f"panel {' '.join(title.split())[:40]!r}"


def _has_data(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.patches or ax.images)


def _label_problems(fig) -> list[str]:
    problems = []
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        if _is_colorbar(ax):
            if not (ax.get_ylabel().strip() or ax.get_xlabel().strip()):
                problems.append("a colour bar has no label")
            continue
        if not _has_data(ax):
            continue
        for which, siblings in (("x", ax.get_shared_x_axes()), ("y", ax.get_shared_y_axes())):
            axes = [getattr(a, f"{which}axis") for a in siblings.get_siblings(ax) if a.get_visible()]
            if not any(axis.label.get_text().strip() for axis in axes):
                problems.append(f"{_axes_name(ax)} has no {which} axis label")
            if not any(_drawn_tick_labels(axis) for axis in axes):
                problems.append(f"{_axes_name(ax)} has no {which} tick labels")
    return problems


def figure_problems(fig, min_points: float = MIN_POINTS) -> list[str]:
    """One line per readability problem of ``fig`` as saved (``bbox_inches="tight"``), or an empty list.

    Checks: visible texts overlapping each other, or touching when they are of one kind (two tick labels, two
    axis labels: boxes closer than 2 px at 100 dpi; rotated texts by their turned boxes); texts cut off by
    their clip box; a legend or a label in a panel with data points (line vertices, markers, error bars, bar
    corners) inside its box; a data panel whose x or y axis (or every panel sharing it) lacks a label or tick
    labels; a colour bar without a label; type smaller than ``min_points``.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [(kind, t, t.get_window_extent(renderer)) for kind, t in _visible_texts(fig)]
    corners = {id(t): _corners(t, renderer) for _, t, _ in texts}
    problems = [
        f"{_name(kind, t)} is {t.get_fontsize():.1f} pt (under {min_points:g})"
        for kind, t, _ in texts
        if t.get_fontsize() < min_points
    ]
    for (kind_a, a, _), (kind_b, b, _) in itertools.combinations(texts, 2):
        # labels of one kind side by side must keep a gap; an x and a y tick label may meet at a corner
        if _overlap(corners[id(a)], corners[id(b)], _GAP_PX if kind_a == kind_b else -_SLACK_PX):
            problems.append(f"{_name(kind_a, a)} overlaps {_name(kind_b, b)}")
    for kind, t, box in texts:
        clip = t.get_clip_box() if t.get_clip_on() else None
        if clip is not None and not _inside(box, clip):
            problems.append(f"{_name(kind, t)} is cut off at the edge of its panel")
    return problems + _legend_problems(fig, renderer) + _text_problems(fig, renderer) + _label_problems(fig)
