"""Chart layouts that a reader would misread if Plotly chose them."""

from __future__ import annotations

from datetime import date, timedelta

from conversations.charts import DAY_MS, conversation_turns_figure, day_axis


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
