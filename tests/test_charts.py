"""Chart layouts that a reader would misread if Plotly chose them."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, timedelta
from decimal import Decimal

from conversations.breakdowns import DIMENSIONS, BreakdownRow
from conversations.charts import (
    BAR_LABEL_CHARS,
    DAY_MS,
    bar_labels,
    breakdown_figure,
    broken_at_gaps,
    conversation_turns_figure,
    cost_by_day_figure,
    day_axis,
    day_bins,
)
from conversations.selectors import DayCost


def test_a_few_days_get_one_tick_per_day_not_twelve_hour_ticks() -> None:
    axis = day_axis(["2026-11-27", "2026-11-28", "2026-11-30"])
    assert axis["type"] == "date"
    assert axis["dtick"] == DAY_MS
    assert "%H" not in axis["tickformat"]


def test_a_quarter_of_days_gets_about_a_dozen_ticks() -> None:
    start = date(2026, 9, 1)
    days = [(start + timedelta(days=n)).isoformat() for n in range(90)]
    axis = day_axis(days)
    assert axis["dtick"] == 8 * DAY_MS  # ceil(90 / 12) days per tick
    assert 90 / (axis["dtick"] / DAY_MS) <= 12


def test_labels_that_are_not_iso_days_stay_categories() -> None:
    assert day_axis(["Nov 2026", "gpt-4o"]) == {"type": "category"}
    assert day_axis([])["dtick"] == DAY_MS


def test_money_axes_print_decimals_not_si_suffixes() -> None:
    turns_layout = conversation_turns_figure([])["layout"]
    assert turns_layout["yaxis2"]["exponentformat"] == "none"
    assert turns_layout["yaxis2"]["tickprefix"] == "$"
    assert turns_layout["yaxis2"]["automargin"] is True  # wide labels widen the margin


def test_days_spanning_years_show_the_year_and_lines_break_over_gaps() -> None:
    from conversations.charts import broken_at_gaps, day_axis

    assert day_axis(["2023-05-27", "2026-01-04"])["tickformat"] == "%b %-d, %Y"
    assert day_axis(["2026-01-01", "2026-03-04"])["tickformat"] == "%b %-d"
    days, (values,) = broken_at_gaps(["2026-01-01", "2026-01-02", "2026-03-01"], [0.5, 0.6, 0.7])
    assert days == ["2026-01-01", "2026-01-02", "2026-01-03", "2026-03-01"]
    assert values == [0.5, 0.6, None, 0.7]  # no line drawn across the two months
    assert broken_at_gaps(["W1", "W2"], [1, 2]) == (["W1", "W2"], [[1, 2]])


def _row(title: str, cost: str) -> BreakdownRow:
    return BreakdownRow(
        key=uuid.uuid4(),
        title=title,
        calls=3,
        cost=Decimal(cost),
        cost_uncached=Decimal(cost),
        prompt=10,
        cached_tokens=0,
        completion_tokens=5,
        eligible=0,
        hits=0,
        unpriced=0,
        lost=None,
    )


def test_it_cuts_long_bar_labels_and_keeps_equal_ones_apart() -> None:
    assert bar_labels(["gpt-4o", "x" * 30, "x" * 40, "gpt-4o"], width=10) == [
        "gpt-4o",
        "xxxxxxxxx…",
        "xxxxxxxxx… (2)",
        "gpt-4o (2)",
    ]
    assert bar_labels(["Hello", "Hello", "Hello (2)"]) == ["Hello", "Hello (2)", "Hello (2) (2)"]


def test_a_breakdown_by_conversation_names_each_bar_whole_in_its_hover() -> None:
    """Titles are first messages: whole on the axis they left the bars a strip of the chart."""
    long = "Can you help me <find> the invoice for order 4411, please?"
    rows = [_row(long, "0.5"), _row("Hello", "0.2")]
    bars = breakdown_figure(rows, DIMENSIONS["conversation"])["data"][0]
    assert bars["x"] == ["Can you help me &lt;find&gt;…", "Hello"]
    assert all(len(x) <= BAR_LABEL_CHARS + 6 for x in bars["x"])  # ("&lt;", "&gt;": +6)
    assert bars["customdata"][0] == [long.replace("<", "&lt;").replace(">", "&gt;"), 3]
    assert "%{customdata[0]}" in bars["hovertemplate"]


def _day(day: date, cost: str | None, calls: int = 1) -> DayCost:
    money = Decimal(cost) if cost is not None else None
    return DayCost(
        day=day,
        cost=money,
        cached=money,
        uncached=Decimal(0),
        output=None,
        calls=calls,
        prompt=100 * calls,
        cached_tokens=50 * calls,
        eligible=calls,
        hits=calls,
    )


def test_a_long_span_of_days_is_drawn_by_week_then_by_month() -> None:
    start = date(2025, 5, 7)  # a Wednesday
    quarter = [_day(start + timedelta(days=n), "0.5") for n in range(0, 92, 3)]
    assert day_bins(quarter) == ("day", quarter)
    # Calls on a few days over most of a year (a walk's import): a bar a week.
    sparse = [
        _day(start, "1.25", calls=2),
        _day(start + timedelta(days=4), None),  # Sunday: the same week, unpriced
        _day(start + timedelta(days=5), "2"),  # Monday: the next week
        _day(start + timedelta(days=300), "3"),
    ]
    unit, weeks = day_bins(sparse)
    assert unit == "week"
    assert [w.day for w in weeks] == [date(2025, 5, 5), date(2025, 5, 12), date(2026, 3, 2)]
    assert all(w.day.weekday() == 0 for w in weeks)
    assert [w.cost for w in weeks] == [Decimal("1.25"), Decimal("2"), Decimal("3")]
    assert [w.calls for w in weeks] == [3, 1, 1] and weeks[0].prompt == 300
    assert sum(w.calls for w in weeks) == sum(d.calls for d in sparse)
    unpriced = day_bins([_day(start, None), _day(start + timedelta(days=200), None)])[1]
    assert [w.cost for w in unpriced] == [None, None]  # unknown stays unknown, never 0
    # Over two years: a bar a month, each at its first day.
    unit, months = day_bins([_day(start, "1"), _day(start + timedelta(days=800), "2")])
    assert unit == "month" and [m.day for m in months] == [date(2025, 5, 1), date(2027, 7, 1)]


def test_weeks_and_months_get_their_own_ticks_and_lines() -> None:
    weeks = [(date(2025, 5, 5) + timedelta(weeks=n)).isoformat() for n in range(40)]
    axis = day_axis(weeks, "week")
    assert axis["dtick"] == 7 * DAY_MS * 4  # ceil(40 weeks / 12) weeks a tick
    assert axis["hoverformat"].startswith("week of")
    assert day_axis(["2025-05-01", "2027-07-01"], "month")["dtick"] == "M3"
    assert day_axis(["2025-05-01", "2027-07-01"], "month")["tickformat"] == "%b %Y"
    # Consecutive weeks make one line; a week without calls breaks it.
    days, (values,) = broken_at_gaps(
        ["2025-05-05", "2025-05-12", "2025-05-26"], [0.1, 0.2, 0.3], step_days=7
    )
    assert values == [0.1, 0.2, None, 0.3] and days[2] == "2025-05-13"
    figure = cost_by_day_figure(
        day_bins([_day(date(2025, 5, 7), "1"), _day(date(2026, 1, 7), "1")])[1], "week"
    )
    assert figure["layout"]["xaxis"]["hoverformat"].startswith("week of")


def test_a_breakdown_chart_draws_the_costliest_30_groups_and_dates_on_a_date_axis() -> None:
    """200 conversations drew 200 hairline bars; days weeks apart sat side by side on a
    category axis."""
    rows = [_row(f"conversation {n}", f"0.{n:03d}") for n in range(1, 201)]
    figure = breakdown_figure(rows, DIMENSIONS["conversation"])
    bars = figure["data"][0]
    assert len(bars["x"]) == 30 and bars["x"][0] == "conversation 200"
    assert figure["layout"]["title"]["text"] == "The 30 costliest of 200 (all in the table)"
    assert "title" not in breakdown_figure(rows[:30], DIMENSIONS["conversation"])["layout"]

    from datetime import UTC, datetime

    days = [
        dataclasses.replace(_row("", "0.5"), key=datetime(2026, 11, d, tzinfo=UTC)) for d in (1, 20)
    ]
    by_day = breakdown_figure(days, DIMENSIONS["day"])
    assert by_day["data"][0]["x"] == ["2026-11-01", "2026-11-20"]
    assert by_day["layout"]["xaxis"]["type"] == "date"


def test_many_models_lie_down_costliest_on_top() -> None:
    from conversations.charts import UPRIGHT_MODELS, cost_by_model_figure
    from conversations.selectors import ModelCost

    def model(name: str, cost: str) -> ModelCost:
        return ModelCost(model=name, cost=Decimal(cost), calls=1, tokens=10, unpriced=0)

    few = cost_by_model_figure([model("a", "1"), model("b", "2")])
    assert "orientation" not in few["data"][0]
    many = [model(f"model-{n}", f"{n}.5") for n in range(UPRIGHT_MODELS + 22)]
    figure = cost_by_model_figure(many)
    bars = figure["data"][0]
    assert bars["orientation"] == "h" and len(bars["y"]) == 30
    assert bars["y"][-1] == "model-29" and bars["x"][-1] == 29.5  # on top: the costliest
    assert figure["layout"]["height"] >= 22 * 30
