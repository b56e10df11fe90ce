"""The conversation table's rows rendered in Python (templatetags/costlab.py) say what the
template's per-row tags and filters said: the same links, text, escaping and time zone."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.template import Context, Template
from django.urls import reverse
from django.utils import timezone

from conversations.selectors import ConversationRow
from conversations.templatetags.costlab import clip, conversation_url, minute

# The rows as overview.html rendered them before conversation_rows (and the "lost to misses"
# cell added since).
TEMPLATE_ROWS = """{% load costlab %}{% for c in conversations %}
        <tr>
          {% url 'conversation_detail' slug c.code as conversation_url %}
          <td><a href="{{ conversation_url }}">{{ c.title|default:c.code|truncatechars:60 }}</a></td>
          <td class="num">{{ c.turn_count }}</td>
          <td class="num">{{ c.tokens|intcomma_plain }}</td>
          <td class="num" data-cost>
            {% if c.unpriced %}
              <span class="unpriced"
                    title="{{ c.unpriced }} unpriced call{{ c.unpriced|pluralize }}">{{ c.cost|usd }}*</span>
            {% else %}
              {{ c.cost|usd }}
            {% endif %}
          </td>
          <td class="num" data-lost>{{ c.lost|usd }}</td>
          <td class="num">{{ c.created|date:"Y-m-d H:i" }}{% if c.started_at and c.started_at|date:"Y-m-d" != c.created|date:"Y-m-d" %}<small class="est" data-started>calls from {{ c.started_at|date:"Y-m-d" }}</small>{% endif %}</td>
          <td>{{ c.model }}</td>
          <td class="num">{% ratio c.cached c.prompt %}</td>
        </tr>
      {% endfor %}"""


def _row(title: str, **changes: object) -> ConversationRow:
    values: dict[str, object] = {
        "code": uuid.uuid4(),
        "title": title,
        "model": "gpt-4o",
        "created": datetime(2026, 10, 3, 23, 59, 30, tzinfo=UTC),
        "started_at": None,
        "cost": Decimal("12.345678"),
        "lost": Decimal("0.5"),
        "tokens": 1234567,
        "turn_count": 12,
        "cached": 300,
        "prompt": 1000,
        "unpriced": 0,
    }
    values.update(changes)
    return ConversationRow(**values)  # type: ignore[arg-type]


ROWS = [
    _row("A plain title"),
    _row(""),  # no title: the code stands in
    _row("x" * 61),  # one over the limit: cut with an ellipsis
    _row("é" * 60),  # exactly the limit, precomposed
    _row("e\u0301" * 59),  # decomposed accents: counted and normalised as the filter does
    _row("<script>alert('x')</script> & \"quotes\"", model="<b>m</b>"),
    _row("One unpriced call", unpriced=1),
    _row("All unpriced", unpriced=3, cost=None, lost=None),
    _row("Nothing cached", cached=0, prompt=0, cost=Decimal(0), tokens=0),
    _row("Small cost", cost=Decimal("0.000123"), created=datetime(2026, 3, 8, 9, 1, tzinfo=UTC)),
    # Calls from another day than the import: said; from the same day (in the zone): not.
    _row("Last year's log", started_at=datetime(2025, 5, 27, 14, 0, tzinfo=UTC)),
    _row("Same day", started_at=datetime(2026, 10, 3, 23, 30, tzinfo=UTC)),
]


def _normal(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r">\s+", ">", re.sub(r"\s+<", "<", html))).strip()


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_the_rows_in_python_render_as_the_template_did(zone: str) -> None:
    slug = "some-org"
    context = {"conversations": ROWS, "slug": slug}
    with timezone.override(zone):
        before = Template(TEMPLATE_ROWS).render(Context(context))
        after = Template("{% load costlab %}{% conversation_rows conversations slug %}").render(
            Context(context)
        )
    assert _normal(after) == _normal(before)
    assert after.count("<tr>") == len(ROWS)
    assert "<script>" not in after and "&lt;script&gt;" in after and "&lt;b&gt;m&lt;/b&gt;" in after
    assert after.count("data-started") == 1 and "calls from 2025-05-27" in after


def test_the_small_filters_match_the_built_ins() -> None:
    code = uuid.uuid4()
    assert conversation_url("an-org", code) == reverse("conversation_detail", args=["an-org", code])
    assert conversation_url("other", code) == reverse("conversation_detail", args=["other", code])
    assert minute(None) == ""
    with timezone.override("Asia/Tokyo"):
        assert minute(datetime(2026, 10, 3, 23, 59, tzinfo=UTC)) == "2026-10-04 08:59"
    assert clip("short", 60) == "short"
    assert clip("y" * 70, 10) == "y" * 9 + "…"
    assert clip("e\u0301", 60) == "é"
