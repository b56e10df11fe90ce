"""Untrusted content stays text: titles, model names and file names holding markup are
escaped on every page, and reach Plotly figures with < > & escaped (Plotly renders a subset
of HTML in labels, links included)."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from conversations import charts
from conversations.engine.types import Call, Transcript
from conversations.models import Conversation, ImportJob, Organization
from conversations.selectors import ModelCost
from conversations.services.transcripts import transcripts_store

from .factories import MembershipFactory, ModelPriceFactory

TITLE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
MODEL = '<a href="https://evil.example/">gpt</a></script><img src=x onerror=alert(4)>'
FILE_NAME = "<img src=x onerror=alert(5)>.jsonl"
T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
MARKUP = re.compile(r"<\s*/?\s*(script|img|a)\b", re.IGNORECASE)


def strings(value: Any) -> list[str]:
    """Every string anywhere in a figure."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in strings(v)]
    return []


def test_it_escapes_model_names_in_chart_labels() -> None:
    rows = [
        ModelCost(model=MODEL, cost=Decimal("0.5"), calls=2, tokens=10, unpriced=0),
        ModelCost(model="a&b <i>", cost=Decimal("0.1"), calls=1, tokens=5, unpriced=0),
        ModelCost(model="", cost=Decimal("0.1"), calls=1, tokens=5, unpriced=0),
    ]
    figure = charts.cost_by_model_figure(rows)
    assert figure["data"][0]["x"] == [
        MODEL.replace("<", "&lt;").replace(">", "&gt;"),
        "a&amp;b &lt;i&gt;",
        "(no model)",
    ]
    assert [s for s in strings(figure) if MARKUP.search(s)] == []
    # Plotly decodes the entities again, so "&lt;" typed by a user shows as "&lt;".
    assert charts.label("&lt;") == "&amp;lt;"


@pytest.fixture
def hostile(client: Client) -> tuple[Organization, Conversation, ImportJob]:
    membership = MembershipFactory.create()
    org = membership.organization
    ModelPriceFactory.create(model=MODEL)  # priced, so the model is drawn in the cost chart
    hello = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    transcripts_store(
        organization=org,
        transcripts=[
            Transcript(
                messages=hello,
                title=TITLE,
                model=MODEL,
                calls=[Call(request=[0], response=1, model=MODEL, started_at=T0)],
            )
        ],
    )
    job = ImportJob.objects.create(organization=org, original_name=FILE_NAME)
    client.force_login(membership.user)
    return org, org.conversations.get(), job


@pytest.mark.django_db
def test_it_shows_markup_from_the_data_as_text_on_every_page(
    client: Client, hostile: tuple[Organization, Conversation, ImportJob]
) -> None:
    org, conversation, job = hostile
    urls = [
        reverse("org_overview", args=[org.slug]),
        reverse("conversation_table", args=[org.slug]),
        reverse("conversation_detail", args=[org.slug, conversation.code]),
        reverse("conversation_what_if", args=[org.slug, conversation.code]),
        reverse("imports", args=[org.slug]),
        reverse("import_job_detail", args=[org.slug, job.code]),
        reverse("import_job_progress", args=[org.slug, job.code]),
    ]
    shown = set()
    for url in urls:
        page = client.get(url).content.decode()
        for text in (TITLE, MODEL, FILE_NAME):
            assert text not in page
            shown |= {text} if html.escape(text) in page else set()
        assert not re.search(r"<img src=x", page) and '<a href="https://evil' not in page
        # Figures travel as JSON data blocks whose labels are escaped for Plotly as well.
        for block in re.findall(r'<script id="[^"]+" type="application/json">(.*?)</script>', page):
            assert [s for s in strings(json.loads(block)) if MARKUP.search(s)] == []
    assert shown == {TITLE, MODEL, FILE_NAME}
