"""Bar charts as plain geometry, drawn as inline SVG by ``admin/_chart.html``: no
JavaScript, nothing fetched, every text escaped by the template."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

WIDTH = 720
HEIGHT = 260
#: room for the value axis on the left, the labels and legend below, a value above a bar
LEFT, BOTTOM, TOP = 36, 48, 16


@dataclass(frozen=True)
class Series:
    name: str
    color: str


#: a funnel's bars per day, in the order drawn
FUNNEL = (
    Series("sent", "#3f6b57"),
    Series("clicked", "#4f7fbf"),
    Series("unsubscribed", "#c98a2e"),
    Series("bounced", "#b3261e"),
)
SIGNUPS = (Series("signups", "#3f6b57"),)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    #: what a pointer over the bar shows (the SVG ``<title>``)
    title: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str


@dataclass(frozen=True)
class Chart:
    #: the ``<svg>``'s class (tests and styles find a chart by it)
    css_class: str
    title: str
    width: int
    height: int
    bars: list[Bar]
    labels: list[Label]
    #: the value axis: (y, value) at zero and at the top
    ticks: list[Label]
    legend: list[tuple[Label, str]]


@dataclass(frozen=True)
class Group:
    """The bars drawn side by side over one label: one value per series."""

    label: str
    #: what the label stands for in a bar's title ("Day 3", "2026-11-25")
    name: str
    values: Sequence[int]


def bar_chart(
    *, css_class: str, title: str, series: Sequence[Series], groups: Sequence[Group]
) -> Chart:
    """Grouped bars on one scale; at most about 15 groups labelled, so labels never
    overlap."""
    plot_width = WIDTH - LEFT - 8
    plot_height = HEIGHT - BOTTOM - TOP
    highest = max((v for group in groups for v in group.values), default=0)
    top = highest or 1
    slot = plot_width / max(len(groups), 1)
    bar_width = slot * 0.8 / len(series)
    label_every = max(1, round(len(groups) / 15))
    bars: list[Bar] = []
    labels: list[Label] = []
    for index, group in enumerate(groups):
        left = LEFT + index * slot + slot * 0.1
        for offset, (one, value) in enumerate(zip(series, group.values, strict=True)):
            height = plot_height * value / top
            bars.append(
                Bar(
                    x=round(left + offset * bar_width, 1),
                    y=round(TOP + plot_height - height, 1),
                    width=round(bar_width, 1),
                    height=round(height, 1),
                    color=one.color,
                    title=f"{group.name}: {value} {one.name}",
                )
            )
        if index % label_every == 0:
            labels.append(
                Label(x=round(left + slot * 0.4, 1), y=TOP + plot_height + 14, text=group.label)
            )
    legend_y = HEIGHT - 10
    legend = [
        (Label(x=LEFT + 110 * n, y=legend_y, text=one.name), one.color)
        for n, one in enumerate(series)
    ]
    ticks = [
        Label(x=LEFT - 4, y=TOP + plot_height, text="0"),
        Label(x=LEFT - 4, y=TOP + 8, text=str(highest)),
    ]
    return Chart(css_class, title, WIDTH, HEIGHT, bars, labels, ticks, legend)


def funnel_chart(funnel: dict[str, Any]) -> Chart:
    """A course's funnel (``drip.reporting.stats.funnel``): per day sent, clicked, left, bounced."""
    return bar_chart(
        css_class="funnel-chart",
        title=f"{funnel['course']}: per day sent, clicked, unsubscribed and bounced",
        series=FUNNEL,
        groups=[
            Group(
                label=f"D{day['day']}",
                name=f"Day {day['day']} ({day['id']})",
                values=[day[one.name] for one in FUNNEL],
            )
            for day in funnel["days"]
        ],
    )


def signups_chart(signups: Sequence[tuple[date, int]]) -> Chart:
    """New enrollments per UTC day."""
    return bar_chart(
        css_class="signups-chart",
        title="Signups per day (UTC)",
        series=SIGNUPS,
        groups=[
            Group(label=f"{day:%-d %b}", name=day.isoformat(), values=[count])
            for day, count in signups
        ],
    )
