"""Selector rows -> Plotly figure dicts. The template carries them with json_script and
static/js/charts.js draws every [data-figure] element, swapped partials included."""

from __future__ import annotations

import math
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from .breakdowns import BreakdownRow, Dimension
from .cache_report import LostRow, reason_label
from .engine.metrics import COST_REDUCTION_TARGET, HIT_RATE_TARGET
from .selectors import DayCost, ModelCost, TurnRow

Figure = dict[str, Any]

# One colour per miss reason, the same in every chart of the cache page.
REASON_COLORS = {
    "cold": "#8ab17d",
    "prefix_changed": "#e76f51",
    "expired": "#f4a261",
    "overflow": "#9b5de5",
    "partial": "#bbbbbb",
}
COLORS = {"cached": "#2a9d8f", "uncached": "#e76f51", "output": "#264653", "cost": "#f4a261"}
BASE_LAYOUT: dict[str, Any] = {
    "margin": {"l": 60, "r": 60, "t": 40, "b": 40},
    # Above the plot: below it, the x axis's title ran into it on a narrow chart.
    "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
    "hovermode": "x unified",
    "height": 320,
}


# Dollars as decimals: Plotly's default SI suffixes print a few cents' worth of calls as
# "$298.6µ" (micro-dollars) on a small chat's cumulative-cost axis.
# automargin: such decimals are wide ("$0.0000313"); in BASE_LAYOUT's fixed margin a
# right-hand money axis had its labels cut at the chart's edge and its title over them.
MONEY_AXIS: dict[str, Any] = {"tickprefix": "$", "exponentformat": "none", "automargin": True}
DAY_MS = 86_400_000
MAX_DAY_TICKS = 12


# A bar a day stays readable over about three months; over a longer span each is a pixel
# or two wide (a walk's import of calls from May 2025 to December 2026 drew hairlines), so
# the overview's days are summed by week past this span, and by month past about two years.
DAILY_SPAN_DAYS = 92
WEEKLY_SPAN_DAYS = 731
# Where a bin starts in the next one's absence: a day, a week, a month later (at most).
BIN_STEP_DAYS = {"day": 1, "week": 7, "month": 31}


def _bin_start(day: date, unit: str) -> date:
    if unit == "week":
        return day - timedelta(days=day.weekday())  # from Monday, as the breakdowns' weeks
    if unit == "month":
        return day.replace(day=1)
    return day


def _sum_known(values: list[Decimal | None]) -> Decimal | None:
    """Money summed over days: unknown only where every day's is (as the days' own sums)."""
    known = [v for v in values if v is not None]
    return sum(known, Decimal(0)) if known else None


def day_bins(rows: list[DayCost]) -> tuple[str, list[DayCost]]:
    """The overview's days as drawn: a bin ("day", "week" or "month") readable over their
    span, and the rows summed into it (each bin dated by its first day)."""
    span = (rows[-1].day - rows[0].day).days + 1 if rows else 0
    unit = "day" if span <= DAILY_SPAN_DAYS else "week" if span <= WEEKLY_SPAN_DAYS else "month"
    if unit == "day":
        return unit, rows
    groups: dict[date, list[DayCost]] = {}
    for row in rows:
        groups.setdefault(_bin_start(row.day, unit), []).append(row)
    return unit, [
        DayCost(
            day=start,
            cost=_sum_known([r.cost for r in group]),
            cached=_sum_known([r.cached for r in group]),
            uncached=sum((r.uncached for r in group), Decimal(0)),
            output=_sum_known([r.output for r in group]),
            calls=sum(r.calls for r in group),
            prompt=sum(r.prompt for r in group),
            cached_tokens=sum(r.cached_tokens for r in group),
            eligible=sum(r.eligible for r in group),
            hits=sum(r.hits for r in group),
        )
        for start, group in groups.items()
    ]


_BIN_HOVER = {"day": "%a %b %-d, %Y", "week": "week of %b %-d, %Y", "month": "%B %Y"}


def day_axis(days: list[str], unit: str = "day") -> dict[str, Any]:
    """An x axis of whole days (or of weeks or months, each at its first day): left to
    itself, Plotly puts 12-hour ticks ("00:00, 12:00") under a few days of daily points,
    which reads as if the figures were per hour."""
    try:
        parsed = sorted(date.fromisoformat(d) for d in days)
    except ValueError:
        return {"type": "category"}  # not ISO dates (a week or month label): as they are
    span = (parsed[-1] - parsed[0]).days + 1 if parsed else 1
    # The year on the ticks once the days span more than one ("May 27, Sep 15, Jan 4" hid a
    # turn of the year in a log of 2023 to 2026).
    years = parsed and parsed[0].year != parsed[-1].year
    step = BIN_STEP_DAYS[unit]
    ticks = max(1, math.ceil(span / step / MAX_DAY_TICKS))
    return {
        "type": "date",
        "tickformat": ("%b %Y" if unit == "month" else "%b %-d, %Y") if years else "%b %-d",
        "hoverformat": _BIN_HOVER[unit],
        # Months are not a fixed number of days: Plotly's "M<n>" steps whole months.
        "dtick": f"M{ticks}" if unit == "month" else DAY_MS * step * ticks,
        "automargin": True,
    }


def broken_at_gaps(
    days: list[str], *series: list[Any], step_days: int = 1
) -> tuple[list[str], list[list[Any]]]:
    """Days and their values with a gap (None) after each day not followed by the next one
    (`step_days` later at most: a week's or a month's bins): a line then breaks where there
    were no calls, where it ran straight across months."""
    if not days:
        return days, [list(values) for values in series]
    out_days: list[str] = []
    out: list[list[Any]] = [[] for _ in series]
    previous: date | None = None
    for at, day in enumerate(days):
        try:
            current = date.fromisoformat(day)
        except ValueError:
            return days, [list(values) for values in series]  # not days: as they are
        if previous is not None and (current - previous).days > step_days:
            out_days.append((previous + timedelta(days=1)).isoformat())
            for values in out:
                values.append(None)
        out_days.append(day)
        for values, source in zip(out, series, strict=True):
            values.append(source[at])
        previous = current
    return out_days, out


def label(text: str) -> str:
    """A string from the data, made plain text for Plotly, which renders a subset of HTML
    (links, <b>, <br>) in axis labels, legends and hovers but decodes entities back to text.
    Every data-derived string goes through here before it reaches a figure."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _money(value: Decimal | None) -> float | None:
    # Plotly wants numbers; the exact Decimal stays in tables and exports.
    return float(value) if value is not None else None


# Models past which the overview's cost-by-model bars lie down: 30 model names slanted
# under upright bars squashed the bars to a strip (a walk's reading).
UPRIGHT_MODELS = 8


def cost_by_model_figure(rows: list[ModelCost]) -> Figure:
    """Cost per model: upright bars, or past UPRIGHT_MODELS horizontal ones, a row per model
    and the costliest on top, so that their names read level."""
    priced = [r for r in rows if r.cost is not None]
    lying = len(priced) > UPRIGHT_MODELS
    if lying:
        priced = sorted(priced, key=lambda r: r.cost or 0)
    names = [label(r.model or "(no model)") for r in priced]
    costs = [_money(r.cost) for r in priced]
    # Names on the category axis, money on the value one: x and y swap when the bars lie.
    names_axis, money_axis = ("y", "x") if lying else ("x", "y")
    bars: Figure = {
        "type": "bar",
        names_axis: names,
        money_axis: costs,
        "customdata": [r.calls for r in priced],
        "hovertemplate": (
            f"%{{{names_axis}}}: $%{{{money_axis}:.4f}} over %{{customdata}} calls<extra></extra>"
        ),
        "marker": {"color": COLORS["output"]},
    }
    layout: Figure = {
        **BASE_LAYOUT,
        # automargin: long model names whole, not cut at the edge
        f"{names_axis}axis": {"automargin": True},
        f"{money_axis}axis": {"title": {"text": "USD"}, **MONEY_AXIS},
    }
    if lying:
        bars["orientation"] = "h"
        layout["yaxis"]["type"] = "category"
        layout |= {"height": max(320, 60 + 22 * len(priced)), "hovermode": "closest"}
    return {"data": [bars], "layout": layout}


def cost_by_day_figure(rows: list[DayCost], unit: str = "day") -> Figure:
    """Cost per day (or per week or month: day_bins), stacked by bucket."""
    days = [r.day.isoformat() for r in rows]
    parts = (
        ("uncached", "Uncached input", [r.uncached for r in rows]),
        ("cached", "Cached input", [r.cached for r in rows]),
        ("output", "Output", [r.output for r in rows]),
    )
    return {
        "data": [
            {
                "type": "bar",
                "name": label,
                "x": days,
                "y": [_money(cost) for cost in costs],
                "marker": {"color": COLORS[key]},
            }
            for key, label, costs in parts
        ],
        "layout": {
            **BASE_LAYOUT,
            "barmode": "stack",
            "xaxis": day_axis(days, unit),
            "yaxis": {"title": {"text": "USD"}, **MONEY_AXIS},
        },
    }


def conversation_turns_figure(turns: list[TurnRow]) -> Figure:
    """Per-turn stacked tokens (cached, uncached, output) and the cumulative cost line."""
    x = [t.turn.index + 1 for t in turns]
    # What was billed: a request that got no reply has costlab's estimate of its prompt, but
    # drawn as a bar it read as tokens paid for, beside a header that counts none.
    shown = [t.billing for t in turns]
    cumulative: list[float | None] = []
    running = Decimal(0)
    unpriced_seen = False
    for row in turns:
        record = row.billing
        if record is None:
            pass  # a request that got no reply was not billed: the total stays
        elif record.cost_total is None:
            unpriced_seen = True
        else:
            running += record.cost_total
        # Once a turn is unpriced the running total is unknown: say so with a gap.
        cumulative.append(None if unpriced_seen else float(running))
    figure: Figure = {
        "data": [
            {
                "type": "bar",
                "name": "Cached input",
                "x": x,
                "y": [r.input_cached if r else 0 for r in shown],
                "marker": {"color": COLORS["cached"]},
            },
            {
                "type": "bar",
                "name": "Uncached input",
                "x": x,
                "y": [(r.input_uncached + r.input_cache_write) if r else 0 for r in shown],
                "marker": {"color": COLORS["uncached"]},
            },
            {
                "type": "bar",
                "name": "Output",
                "x": x,
                "y": [r.output if r else 0 for r in shown],
                "marker": {"color": COLORS["output"]},
            },
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "Cumulative cost",
                "x": x,
                "y": cumulative,
                "yaxis": "y2",
                "line": {"color": COLORS["cost"], "width": 3},
            },
        ],
        "layout": {
            **BASE_LAYOUT,
            "height": 380,
            "barmode": "stack",
            "xaxis": {"title": {"text": "Turn (API call)"}, "dtick": 1 if len(x) <= 40 else None},
            "yaxis": {"title": {"text": "Tokens"}},
            "yaxis2": {
                "title": {"text": "Cumulative USD"},
                "overlaying": "y",
                "side": "right",
                **MONEY_AXIS,
                "rangemode": "tozero",
                # Its own round ticks (and no grid of its own): ticks aligned with the token
                # axis's gridlines read as "$0.00269, $0.00537".
                "tickmode": "auto",
                "showgrid": False,
            },
        },
    }
    if shown and all(value is None for value in cumulative):
        # Unknown from the first turn: no line to draw, and an empty dollar axis read as
        # "costs nothing". The chart says why instead.
        figure["data"].pop()
        del figure["layout"]["yaxis2"]
        figure["layout"]["annotations"] = [
            {
                "text": "No cost line: the first call's model has no price",
                "xref": "paper",
                "yref": "paper",
                "x": 1,
                "y": 1,
                "xanchor": "right",
                "yanchor": "bottom",
                "showarrow": False,
            }
        ]
    return figure


def cache_hits_by_day_figure(rows: list[DayCost], unit: str = "day") -> Figure:
    """Request- and token-weighted hit rates per day (or week or month: day_bins), against
    the seed's 70 % target."""
    days = [r.day.isoformat() for r in rows]
    requests = [r.hits / r.eligible if r.eligible else None for r in rows]
    tokens = [r.cached_tokens / r.prompt if r.prompt else None for r in rows]
    lines, (requests, tokens) = broken_at_gaps(
        days, requests, tokens, step_days=BIN_STEP_DAYS[unit]
    )
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "Eligible calls that hit",
                "x": lines,
                "y": requests,
                "line": {"color": COLORS["cached"]},
            },
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "Prompt tokens cached",
                "x": lines,
                "y": tokens,
                "line": {"color": COLORS["output"], "dash": "dot"},
            },
        ],
        "layout": {
            **BASE_LAYOUT,
            "xaxis": day_axis(days, unit),
            "yaxis": {"tickformat": ".0%", "range": [0, 1.05]},
            "shapes": [
                {
                    "type": "line",
                    "xref": "paper",
                    "x0": 0,
                    "x1": 1,
                    "y0": HIT_RATE_TARGET,
                    "y1": HIT_RATE_TARGET,
                    "line": {"color": "#999", "dash": "dash"},
                }
            ],
            "annotations": [
                {
                    "xref": "paper",
                    "x": 1,
                    "y": HIT_RATE_TARGET,
                    "xanchor": "right",
                    "yanchor": "bottom",
                    "text": f"target {HIT_RATE_TARGET:.0%}",
                    "showarrow": False,
                }
            ],
        },
    }


def _lost_stack(
    rows: list[LostRow], x_of: Any, categories: list[str], xaxis: dict[str, Any] | None = None
) -> Figure:
    reasons = sorted({r.reason for r in rows})
    traces = []
    for reason in reasons:
        lost = {x_of(r): r.lost for r in rows if r.reason == reason}
        traces.append(
            {
                "type": "bar",
                "name": label(reason_label(reason)),
                "x": categories,
                "y": [_money(lost.get(c)) for c in categories],
                "marker": {"color": REASON_COLORS.get(reason, "#999")},
            }
        )
    return {
        "data": traces,
        "layout": {
            **BASE_LAYOUT,
            "barmode": "stack",
            "xaxis": xaxis or {"type": "category", "automargin": True},
            "yaxis": {"title": {"text": "USD lost"}, **MONEY_AXIS},
        },
    }


def lost_by_day_figure(rows: list[LostRow]) -> Figure:
    """Money lost to misses per day, stacked by reason."""
    days = sorted({r.day.isoformat() for r in rows if r.day is not None})
    return _lost_stack(rows, lambda r: r.day.isoformat() if r.day else "", days, day_axis(days))


def lost_by_model_figure(rows: list[LostRow]) -> Figure:
    """Money lost to misses per model, stacked by reason."""
    models = sorted({label(r.model or "(no model)") for r in rows})
    return _lost_stack(rows, lambda r: label(r.model or "(no model)"), models)


# A bar's label at most this long: conversation titles (a first message) laid the labels
# slanting under the bars and left the bars a strip of the chart (seen in a browser walk).
BAR_LABEL_CHARS = 24


CHART_GROUPS = 30  # bars a breakdown's chart draws for groups that are not periods


def bar_labels(names: list[str], width: int = BAR_LABEL_CHARS) -> list[str]:
    """Each name cut to `width` characters with an ellipsis, and numbered when two come out
    the same: a category axis draws equal labels as one bar."""
    shown: list[str] = []
    taken: set[str] = set()
    for name in names:
        short = name if len(name) <= width else name[: width - 1].rstrip() + "…"
        label, number = short, 1
        while label in taken:  # the next free number ("Hello (2)" may be a name itself)
            number += 1
            label = f"{short} ({number})"
        taken.add(label)
        shown.append(label)
    return shown


def breakdown_figure(
    rows: list[BreakdownRow],
    dimension: Dimension,
    before: dict[Any, BreakdownRow | None] | None = None,
) -> Figure:
    """Cost per group: bars over time for a period dimension, else the groups by cost; a
    long name cut on the axis, whole in the bar's hover. `before` (a row's key to the same
    group in the previous period) adds that period's bars beside each group."""
    priced = [r for r in rows if r.cost is not None]
    dated = dimension.period is not None
    title = None
    if not dated and len(priced) > CHART_GROUPS:
        # Hundreds of hairline bars under unreadable labels: the costliest, and say so.
        title = f"The {CHART_GROUPS} costliest of {len(priced):,} (all in the table)"
        priced = sorted(priced, key=lambda r: -(r.cost or 0))[:CHART_GROUPS]
    names = [r.title or r.label_by(dimension.name) for r in priced]
    # Days, weeks and months on a date axis: on a category one, days weeks apart sat side
    # by side as if in a row.
    x = [r.key.date().isoformat() for r in priced] if dated else [
        label(name) for name in bar_labels(names)
    ]  # fmt: skip
    previous: list[Figure] = []
    if before is not None:
        partners = [before.get(r.key) for r in priced]
        previous.append(
            {
                "type": "bar",
                "name": "Previous period",
                "x": x,
                "y": [_money(p.cost) if p is not None else None for p in partners],
                "hovertemplate": "previous period: $%{y:.4f}<extra></extra>",
                "marker": {"color": "#bbbbbb"},
            }
        )
    return {
        "data": [
            *previous,
            {
                "name": "This period",
                "type": "bar",
                "x": x,
                "y": [_money(r.cost) for r in priced],
                "customdata": [
                    [label(name), r.calls] for name, r in zip(names, priced, strict=True)
                ],
                "hovertemplate": (
                    "%{customdata[0]}: $%{y:.4f} over %{customdata[1]} calls<extra></extra>"
                ),
                "marker": {"color": COLORS["output"]},
            },
        ],
        "layout": {
            **BASE_LAYOUT,
            **({"title": {"text": title, "font": {"size": 13}}} if title else {}),
            # automargin: the axis title below the tick labels, not over them
            "xaxis": {
                "title": {"text": label(dimension.label)},
                "type": "date" if dated else "category",
                **(
                    {"tickformat": "%b %Y" if dimension.name == "month" else "%b %-d, %Y"}
                    if dated
                    else {}
                ),
                "automargin": True,
            },
            "yaxis": {"title": {"text": "USD"}, **MONEY_AXIS},
        },
    }


def cache_targets_figure(rows: list[BreakdownRow]) -> Figure:
    """Per day: hit rate by request and by token against the hit-rate target's line, and cost
    reduction against its band (engine.metrics); lines broken over days with no calls."""
    days = [r.label for r in rows]
    low, high = COST_REDUCTION_TARGET
    shown, (requests, tokens, reduction) = broken_at_gaps(
        days,
        [r.hit_rate_requests for r in rows],
        [r.hit_rate_tokens for r in rows],
        [r.cost_reduction for r in rows],
    )
    lines = (
        ("Eligible calls that hit", requests, COLORS["cached"], "solid"),
        ("Prompt tokens cached", tokens, COLORS["output"], "dot"),
        ("Cost reduction", reduction, COLORS["cost"], "dash"),
    )
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": name,
                "x": shown,
                "y": values,
                "line": {"color": color, "dash": dash},
            }
            for name, values, color, dash in lines
        ],
        "layout": {
            **BASE_LAYOUT,
            "xaxis": day_axis(days),
            "yaxis": {"tickformat": ".0%", "range": [0, 1.05]},
            "shapes": [
                {
                    "type": "line",
                    "xref": "paper",
                    "x0": 0,
                    "x1": 1,
                    "y0": HIT_RATE_TARGET,
                    "y1": HIT_RATE_TARGET,
                    "line": {"color": "#999", "dash": "dash"},
                },
                {
                    "type": "rect",
                    "xref": "paper",
                    "x0": 0,
                    "x1": 1,
                    "y0": low,
                    "y1": high,
                    "fillcolor": COLORS["cost"],
                    "opacity": 0.12,
                    "line": {"width": 0},
                },
            ],
            "annotations": [
                {
                    "xref": "paper",
                    "x": 1,
                    "y": HIT_RATE_TARGET,
                    "xanchor": "right",
                    "yanchor": "bottom",
                    "text": f"hit rate target {HIT_RATE_TARGET:.0%}",
                    "showarrow": False,
                },
                {
                    "xref": "paper",
                    "x": 0,
                    "y": low,
                    "xanchor": "left",
                    "yanchor": "bottom",
                    "text": f"cost reduction {low:.0%}-{high:.0%}",
                    "showarrow": False,
                },
            ],
        },
    }
