from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template
from django.http import QueryDict
from django.utils.html import format_html, json_script

register = template.Library()

SORT_COLUMNS = [
    ("title", "Conversation"),
    ("turns", "Turns"),
    ("tokens", "Tokens"),
    ("cost", "Cost"),
    ("created", "Imported"),
]


@register.filter
def usd(value: Decimal | str | None) -> str:
    """Money for people: unknown stays unknown, small amounts keep their digits. A string is
    a Decimal kept as text in JSON (an experiment's prediction)."""
    if value is None:
        return "unpriced"
    if isinstance(value, str):
        value = Decimal(value)
    if value == 0:
        return "$0.00"
    if abs(value) < Decimal("0.01"):
        return f"${value:.6f}"
    return f"${value:,.2f}" if abs(value) >= 100 else f"${value:,.4f}"


@register.filter
def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


@register.filter
def intcomma_plain(value: int | None) -> str:
    return "0" if value is None else f"{value:,}"


@register.simple_tag
def ratio(part: int | None, whole: int | None) -> str:
    return f"{(part or 0) / whole * 100:.0f}%" if whole else "n/a"


@register.simple_tag
def figure(fig: dict[str, Any], element_id: str) -> str:
    """A chart placeholder plus its figure as a JSON script (never |safe JSON)."""
    return format_html(
        '<div class="chart" data-figure="{}"></div>{}', element_id, json_script(fig, element_id)
    )


@register.simple_tag
def get_sort_columns() -> list[tuple[str, str]]:
    return SORT_COLUMNS


@register.filter
def sort_toggle(key: str, current: str) -> str:
    """Clicking the current sort column flips its direction; a new column sorts descending."""
    if current == f"-{key}":
        return key
    return f"-{key}"


@register.simple_tag
def sort_arrow(key: str, current: str) -> str:
    if current == key:
        return " ▲"
    if current == f"-{key}":
        return " ▼"
    return ""


@register.simple_tag
def query_with(form: Any, **overrides: Any) -> str:
    """The current filters as a query string, with some values replaced: URLs stay shareable."""
    query = QueryDict(mutable=True)
    data = getattr(form, "data", {}) or {}
    for key in ("date_from", "date_to", "model", "sort"):
        value = data.get(key)
        if value:
            query[key] = value
    for key, value in overrides.items():
        query[key] = value
    return query.urlencode()


@register.filter
def length_of_ranges(ranges: list[list[int]]) -> int:
    return sum(end - start for start, end in ranges)
