"""The what-if is computed once per (conversation, scenario, price book), kept in the cache
within bounds, and refused with a message for a conversation above the configured size."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import Settings

from conversations import what_if
from conversations.models import Conversation, Membership, Role
from pricing.models import ModelPrice

from .factories import MembershipFactory, ModelPriceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer(client: Client) -> Membership:
    membership = MembershipFactory.create(role=Role.VIEWER)
    client.force_login(membership.user)
    return membership


@pytest.fixture
def conversation(viewer: Membership, tmp_path: Path) -> Conversation:
    messages: list[dict[str, str]] = [{"role": "system", "content": "Rules. " * 300}]
    for i in range(6):
        messages += [
            {"role": "user", "content": f"Question {i}: " + "detail " * 100},
            {"role": "assistant", "content": f"Answer {i}: " + "because " * 100},
        ]
    path = tmp_path / "chat.json"
    path.write_text(json.dumps({"model": "gpt-4o", "title": "six turns", "messages": messages}))
    call_command("import_transcripts", str(path), "--org", viewer.organization.slug)
    found = Conversation.objects.get(organization=viewer.organization)
    what_if.forget(found)  # a cache entry from an earlier run of the suite
    return found


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The retention of every what-if actually computed (not served from the cache)."""
    calls: list[str] = []
    real: Callable[..., what_if.WhatIf] = what_if._compute

    def counting(conversation: Conversation, **kwargs: Any) -> what_if.WhatIf:
        calls.append(kwargs["retention"])
        return real(conversation, **kwargs)

    monkeypatch.setattr(what_if, "_compute", counting)
    return calls


def page(client: Client, conversation: Conversation, retention: str = "10m") -> str:
    url = reverse("conversation_what_if", args=[conversation.organization.slug, conversation.code])
    response = client.get(url, {"retention": retention}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    return response.content.decode()


def test_it_computes_the_what_if_once_per_scenario(
    client: Client, conversation: Conversation, computed: list[str]
) -> None:
    first = page(client, conversation)
    assert 'data-strategy="window:8"' in first
    assert "the system prompt and the last 8 messages" in first  # what it sends, in words
    assert page(client, conversation) == first
    assert computed == ["10m"]
    page(client, conversation, "1h")
    page(client, conversation, "1h")
    assert computed == ["10m", "1h"]


def test_it_computes_again_when_the_price_book_changes(
    client: Client, conversation: Conversation, computed: list[str]
) -> None:
    page(client, conversation)
    # A new row in force now for the conversation's model: the figures change.
    row = ModelPriceFactory.create(
        model="gpt-4o",
        organization=conversation.organization,
        effective_from=timezone.now() - timedelta(minutes=1),
        input_per_1m=Decimal("100"),
    )
    page(client, conversation)
    assert len(computed) == 2
    # An edit in place, too.
    ModelPrice.objects.filter(pk=row.pk).update(output_per_1m=Decimal("300"))
    page(client, conversation)
    assert len(computed) == 3
    # A row that starts tomorrow changes nothing today.
    ModelPriceFactory.create(
        model="gpt-4o",
        organization=conversation.organization,
        effective_from=timezone.now() + timedelta(days=1),
    )
    page(client, conversation)
    assert len(computed) == 3


def test_it_keeps_a_bounded_number_of_scenarios_per_conversation(
    client: Client, conversation: Conversation, computed: list[str]
) -> None:
    for price in ("1", "2", "3"):
        ModelPriceFactory.create(
            model="gpt-4o",
            organization=conversation.organization,
            effective_from=timezone.now() - timedelta(minutes=int(price)),
            input_per_1m=Decimal(price),
        )
        for retention in what_if.RETENTION_SCENARIOS:
            page(client, conversation, retention)
    assert len(computed) == 3 * len(what_if.RETENTION_SCENARIOS)
    kept = cache.get(what_if.cache_key(conversation))
    assert len(kept) == what_if.VARIANTS_KEPT


def test_it_forgets_the_figures_after_the_configured_time(
    client: Client,
    conversation: Conversation,
    computed: list[str],
    settings: Settings,
) -> None:
    settings.COSTLAB_WHAT_IF_CACHE_SECONDS = 1
    page(client, conversation)
    page(client, conversation)
    time.sleep(1.5)
    page(client, conversation)
    assert computed == ["10m", "10m"]


def test_it_refuses_a_conversation_above_the_character_bound(
    client: Client, conversation: Conversation, computed: list[str], settings: Settings
) -> None:
    settings.COSTLAB_WHAT_IF_MAX_CHARS = 1000
    html = page(client, conversation)
    assert "data-what-if-refused" in html and "COSTLAB_WHAT_IF_MAX_CHARS" in html
    assert "data-strategy" not in html
    assert computed == []


def test_it_refuses_a_conversation_whose_calls_send_too_much(
    client: Client, conversation: Conversation, computed: list[str], settings: Settings
) -> None:
    # Six calls, sending 2, 4, ... 12 messages (the system prompt included): 42 in all.
    settings.COSTLAB_WHAT_IF_MAX_SENT = 41
    html = page(client, conversation)
    assert "send 42 messages in all" in html and "COSTLAB_WHAT_IF_MAX_SENT" in html
    assert computed == []
    settings.COSTLAB_WHAT_IF_MAX_SENT = 42
    assert "data-strategy" in page(client, conversation)


def test_it_lets_one_request_at_a_time_compute_a_conversation(
    client: Client, conversation: Conversation, computed: list[str]
) -> None:
    cache.set(f"{what_if.cache_key(conversation)}:computing", True, timeout=60)
    try:
        html = page(client, conversation, "1h")
    finally:
        cache.delete(f"{what_if.cache_key(conversation)}:computing")
    assert "data-what-if-busy" in html and 'hx-trigger="load delay:2s"' in html
    assert "retention=1h" in html
    assert computed == []
    assert "data-strategy" in page(client, conversation, "1h")


def test_its_strategies_keep_each_replys_reported_output() -> None:
    """A reasoning model's reply bills far more output than its text (o4-mini: 2,589 tokens
    for a short answer). The what-if simulates the requests and keeps the replies' reported
    output: with prompts below the caching minimum, "full" and "as recorded" are then the
    conversation's cost as billed, to the digit (estimated from the text, about a tenth)."""
    from conversations import selectors
    from conversations.engine.profiles import default_profile
    from conversations.engine.render import count_request
    from conversations.engine.types import Call, Transcript, Usage
    from conversations.services.transcripts import transcripts_store

    membership = MembershipFactory.create()
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Answer briefly."}]
    calls = []
    for turn in range(3):
        messages.append({"role": "user", "content": f"Question {turn}?"})
        # The prompt as reported is the one costlab counts (exact on gpt-4o): only the
        # output differs from what the text would give.
        prompt = count_request(messages, profile=default_profile("gpt-4o"))
        calls.append(
            Call(
                request=list(range(len(messages))),
                response=len(messages),
                model="gpt-4o",
                started_at=timezone.now() - timedelta(minutes=10 - turn),
                usage=Usage(
                    prompt_tokens=prompt,
                    completion_tokens=2_589,
                    total_tokens=prompt + 2_589,
                    reasoning_tokens=2_560,
                ),
            )
        )
        messages.append({"role": "assistant", "content": f"Answer {turn}."})
    transcripts_store(
        organization=membership.organization,
        transcripts=[Transcript(messages=messages, calls=calls, model="gpt-4o", external_id="o")],
    )
    conversation = Conversation.objects.get(organization=membership.organization)
    billed = selectors.conversation_summary(selectors.conversation_turns(conversation)).cost
    figures = what_if.conversation_what_if(conversation)
    assert isinstance(figures, what_if.WhatIf) and billed is not None
    full = next(s for s in figures.strategies if s.label == "full")
    assert full.cost == billed
    recorded = next(lever for lever in figures.levers if lever.lever.name == "as recorded")
    assert recorded.cost == billed


def test_each_strategy_says_what_it_sends() -> None:
    from conversations.engine.strategies import parse_strategy

    assert parse_strategy("full").description == "every message, as recorded"
    assert parse_strategy("window:8").description == "the system prompt and the last 8 messages"
    assert "under 1,803 tokens" in parse_strategy("trim:1803").description
    assert "summary past 1,803 tokens" in parse_strategy("summarize:1803").description


def test_it_says_when_every_lever_comes_to_the_same() -> None:
    from conversations.engine.levers import LEVERS, LeverResult

    def result(lever: Any, cost: str, cached: int) -> LeverResult:
        return LeverResult(lever, 3, 9_000, cached, 0, Decimal(cost), Decimal("1"), 0.5, 0.6)

    def figures(results: list[LeverResult]) -> what_if.WhatIf:
        return what_if.WhatIf("5m", "prefix_128", [], results, None, 0)

    alike = [result(lever, "0.0607", 6_000) for lever in LEVERS[:4]]
    assert figures(alike).levers_alike
    apart = [*alike[:3], result(LEVERS[3], "0.0500", 7_024)]
    assert not figures(apart).levers_alike
    assert not figures(alike[:1]).levers_alike  # one row: nothing to compare
