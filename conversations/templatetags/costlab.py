from __future__ import annotations

import unicodedata
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from uuid import UUID

from django import template
from django.http import QueryDict
from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join, json_script
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from ..forms import FORMAT_NAMES

register = template.Library()

SORT_COLUMNS = [
    ("title", "Conversation"),
    ("turns", "Turns"),
    ("tokens", "Tokens"),
    ("cost", "Cost"),
    ("lost", "Lost to misses"),
    ("created", "Added"),  # imported, chatted live or replayed
]


@register.filter
def format_name(kind: str) -> str:
    """A transcript format's short name ("Chat JSONL")."""
    return FORMAT_NAMES.get(kind, kind.replace("_", " "))


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


@register.simple_tag
def cost_change(row: Any, before: Any) -> str:
    """A group's cost against the same group in the previous period, signed: "new" when it
    cost nothing then, "unpriced" when either side is (a change from an unknown is not a
    change), "—" when its partner is not known (a list cut at its limit)."""
    if before is None:
        return "—"
    now, then = row.cost, before.cost
    if now is None or then is None:
        return "unpriced"
    if now == then:
        return "0.0%"
    if then == 0:
        return "new"
    return f"{(now - then) / then * 100:+.1f}%".replace("-", "\u2212")


@register.filter
def label_by(row: Any, dimension: str) -> str:
    """A breakdown row's label as the page shows it (BreakdownRow.label_by)."""
    return str(row.label_by(dimension))


@register.filter
def intcomma_plain(value: int | None) -> str:
    return "0" if value is None else f"{value:,}"


@register.simple_tag
def ratio(part: int | None, whole: int | None) -> str:
    return f"{(part or 0) / whole * 100:.0f}%" if whole else "n/a"


@register.simple_tag
def figure(fig: dict[str, Any], element_id: str) -> str:
    """A chart placeholder plus its figure as a JSON script (never |safe JSON). A figure
    with no point says so instead: drawn empty, Plotly's default axes read as data (dates
    from 1970, ticks by the thousand) and froze the page for seconds."""
    if not any(_has_points(trace) for trace in fig.get("data", [])):
        return format_html(
            '<p class="hint chart-empty" data-figure-empty="{}">Nothing to draw: no calls '
            "here.</p>",
            element_id,
        )
    return format_html(
        '<div class="chart" data-figure="{}"></div>{}', element_id, json_script(fig, element_id)
    )


def _has_points(trace: dict[str, Any]) -> bool:
    return any(len(trace.get(axis) or ()) for axis in ("x", "y", "values", "z"))


def _added_cell(row: Any) -> SafeString:
    """When the conversation was added, and when its calls began if on another day (an
    import of last year's log was all "added" today)."""
    added = minute(row.created)
    started = row.started_at
    if started is None or minute(started)[:10] == added[:10]:
        return format_html("{}", added)
    return format_html(
        '{}<small class="est" data-started>calls from {}</small>', added, minute(started)[:10]
    )


@register.simple_tag
def get_sort_columns() -> list[tuple[str, str]]:
    return SORT_COLUMNS


# Columns a first click sorts A to Z: names. Figures and dates sort biggest, newest first.
ASCENDING_FIRST = frozenset({"title"})


@register.filter
def sort_toggle(key: str, current: str) -> str:
    """Clicking the current sort column flips its direction; a new column sorts its first
    way (a name from A, a figure from the biggest: a first click on Conversation went Z to A)."""
    first, second = (key, f"-{key}") if key in ASCENDING_FIRST else (f"-{key}", key)
    return second if current == first else first


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


@register.simple_tag
def export_url(slug: str, query: str, **params: str) -> str:
    """The export of the page's filters (`query`, the page's query string) with a table or
    format set: `?table=turns`, never `?&table=turns` when there is no filter."""
    merged = QueryDict(query, mutable=True)
    for key, value in params.items():
        merged[key] = value
    return f"{reverse('usage_export', args=[slug])}?{merged.urlencode()}"


@register.filter
def length_of_ranges(ranges: list[list[int]]) -> int:
    return sum(end - start for start, end in ranges)


# Filters for tables of hundreds of rows (the conversation list, the breakdown by
# conversation): each does what a built-in does, without its per-call cost, which made up
# a third of the table partial's time at 200 rows.

_ZERO = UUID(int=0)


@lru_cache(maxsize=1024)
def _conversation_url_parts(script_prefix: str, slug: str) -> tuple[str, str]:
    url = reverse("conversation_detail", args=[slug, _ZERO])
    head, _, tail = url.partition(str(_ZERO))
    return head, tail


@register.simple_tag
def conversation_url(slug: str, code: UUID | str) -> str:
    """{% url 'conversation_detail' slug code %}, reversed once per organization (and
    script prefix) rather than once per row."""
    head, tail = _conversation_url_parts(get_script_prefix(), slug)
    return f"{head}{code}{tail}"


@register.filter
def minute(value: datetime | None) -> str:
    """|date:"Y-m-d H:i": the moment in the current time zone, to the minute."""
    if value is None:
        return ""
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return f"{value:%Y-%m-%d %H:%M}"


@register.filter
def clip(value: Any, length: int) -> str:
    """|truncatechars: a text that fits is returned as it would (NFC-normalised) without
    walking its characters."""
    text = unicodedata.normalize("NFC", str(value))
    if len(text) <= length:
        return text
    return Truncator(text).chars(length)


_CONVERSATION_ROW = (
    '<tr>\n  <td><a href="{}">{}</a></td>\n  <td class="num">{}</td>\n'
    '  <td class="num">{}</td>\n  <td class="num" data-cost>{}</td>\n'
    '  <td class="num" data-lost>{}</td>\n'
    '  <td class="num">{}</td>\n  <td>{}</td>\n  <td class="num">{}</td>\n</tr>'
)


def _cost_cell(row: Any) -> SafeString:
    if row.unpriced:
        plural = "" if row.unpriced == 1 else "s"
        return format_html(
            '<span class="unpriced" title="{} unpriced call{}">{}*</span>',
            row.unpriced,
            plural,
            usd(row.cost),
        )
    return format_html("{}", usd(row.cost))


@register.simple_tag
def conversation_rows(conversations: list[Any], slug: str) -> SafeString:
    """The conversation table's rows (selectors.ConversationRow), one format string each:
    200 rows through the template language's per-variable lookups took more time than
    the page's queries. Every value is escaped by format_html."""
    head, tail = _conversation_url_parts(get_script_prefix(), slug)
    return format_html_join(
        "\n",
        _CONVERSATION_ROW,
        (
            (
                f"{head}{c.code}{tail}",
                clip(c.title or c.code, 60),
                c.turn_count,
                intcomma_plain(c.tokens),
                _cost_cell(c),
                usd(c.lost),
                _added_cell(c),
                c.model,
                ratio(c.cached, c.prompt),
            )
            for c in conversations
        ),
    )
