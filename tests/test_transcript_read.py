"""conversation_transcript reads the turns' columns with a statement compiled once per
process (a live chat reads its whole conversation again every turn). Its calls must be
exactly those built from the Turn rows through the ORM, and so must the analysis of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from conversations.engine.analysis import analyze
from conversations.engine.types import Call
from conversations.models import Conversation, Message, Turn
from conversations.ranges import request_ranges
from conversations.selectors import conversation_transcript
from pricing.book import PriceBook

from .factories import OrganizationFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 30, 9, tzinfo=UTC)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "météo",
            "description": "Le temps qu'il fait à une ville",
            "parameters": {"type": "object", "properties": {"ville": {"type": "string"}}},
        },
    }
]


def _messages() -> list[dict[str, Any]]:
    call = {"id": "c1", "type": "function", "function": {"name": "météo", "arguments": "{}"}}
    return [
        {"role": "system", "content": "Réponds en français. " * 40},
        {"role": "user", "content": "Quel temps fait-il à Zürich ? 🌦"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 3, "ciel": "couvert"}'},
        {"role": "assistant", "content": "3 °C, couvert."},
        {"role": "user", "content": [{"type": "text", "text": "Et demain ?"}]},
        {"role": "assistant", "content": "Pluie."},
        {"role": "user", "content": "Merci"},
    ]


def _conversation(title: str) -> Conversation:
    organization = OrganizationFactory.create()
    conversation = Conversation.objects.create(
        organization=organization, title=title, model="gpt-4o", started_at=START
    )
    stored = [
        Message.objects.create(
            conversation=conversation, index=i, role=str(m["role"]), data=m, sent_at=START
        )
        for i, m in enumerate(_messages())
    ]
    turns: list[dict[str, Any]] = [
        # Written out of index order: the read orders them.
        dict(index=2, request=[0, 1, 2, 3, 4, 5], response=6, model="gpt-4o-mini", batch=True),
        dict(index=0, request=[0, 1], response=2, tools=TOOLS, tool_choice="auto", responses=True),
        dict(
            index=1,
            request=[0, 1, 2, 3],
            response=4,
            response_format={"type": "json_object"},
            cache_retention="24h",
            cache_options={"mode": "explicit"},
            service_tier="flex",
            prompt_cache_key="clé-1",
        ),
        dict(index=3, request=[0, 5, 6, 7], response=None, started_at=None, latency_ms=None),
    ]
    for spec in turns:
        index = int(str(spec["index"]))
        response = spec.get("response")
        Turn.objects.create(
            conversation=conversation,
            index=index,
            request_ranges=request_ranges(list(spec["request"])),
            response=stored[response] if isinstance(response, int) else None,
            model=str(spec.get("model", "")),
            tools=spec.get("tools"),
            response_format=spec.get("response_format"),
            tool_choice=spec.get("tool_choice"),
            prompt_cache_key=str(spec.get("prompt_cache_key", "")),
            cache_retention=str(spec.get("cache_retention", "")),
            cache_options=spec.get("cache_options"),
            service_tier=str(spec.get("service_tier", "")),
            started_at=spec.get("started_at", START + timedelta(minutes=index)),
            latency_ms=spec.get("latency_ms", 400 + index),
            max_output_tokens=300 if index == 1 else None,
            is_batch=bool(spec.get("batch", False)),
            responses_api=bool(spec.get("responses", False)),
        )
    return conversation


def _orm_calls(conversation: Conversation) -> list[Call]:
    """The calls as conversation_transcript built them from Turn instances before."""
    return [
        Call(
            request=turn.request_indexes(),
            response=turn.response.index if turn.response else None,
            model=turn.model or None,
            tools=turn.tools,
            response_format=turn.response_format,
            tool_choice=turn.tool_choice,
            prompt_cache_key=turn.prompt_cache_key or None,
            cache_retention=turn.cache_retention or None,
            cache_options=turn.cache_options,
            service_tier=turn.service_tier or None,
            started_at=turn.started_at,
            latency_ms=turn.latency_ms,
            max_output_tokens=turn.max_output_tokens,
            batch=turn.is_batch,
            responses_api=turn.responses_api,
        )
        for turn in conversation.turns.select_related("response").order_by("index")
    ]


def _figures(calls: list[Call], messages: list[Any]) -> list[tuple[Any, ...]]:
    from conversations.engine.types import Transcript

    book = PriceBook.for_organization(None)
    analysis = analyze(
        [Transcript(messages=messages, calls=calls, model="gpt-4o")],
        profile_for=book.profile,
        policy_for=book.policy,
        rates_for=partial(book.call_rates, now=START),
        retention_seconds=3600,
    )
    return [
        (
            c.estimated_prompt_tokens,
            c.estimated_completion_tokens,
            c.simulated_cached_tokens,
            c.miss_reason.describe() if c.miss_reason else None,
            c.cost.total if c.cost else None,
            tuple(c.warnings),
        )
        for c in analysis.conversations[0].calls
    ]


def test_the_compiled_read_gives_the_calls_and_figures_of_the_orm_read() -> None:
    first, second = _conversation("one"), _conversation("two")
    Turn.objects.filter(conversation=second, index=3).delete()
    for conversation, n_calls in ((first, 4), (second, 3), (first, 4)):
        transcript = conversation_transcript(conversation)
        expected = _orm_calls(conversation)
        assert len(expected) == n_calls
        assert transcript.calls == expected
        # Every column came through: no field left at its default.
        assert [c.response for c in expected] == [2, 4, 6, None][:n_calls]
        assert expected[0].tools == TOOLS and expected[1].cache_options == {"mode": "explicit"}
        assert [c.responses_api for c in expected] == [True, False, False, False][:n_calls]
        assert expected[2].batch and expected[1].max_output_tokens == 300
        messages = list(
            Message.objects.filter(conversation=conversation)
            .order_by("index")
            .values_list("data", flat=True)
        )
        assert transcript.messages == messages
        assert _figures(transcript.calls or [], messages) == _figures(expected, messages)


def test_a_conversation_without_turns_has_no_calls() -> None:
    conversation = _conversation("empty")
    Turn.objects.filter(conversation=conversation).delete()
    assert conversation_transcript(conversation).calls == []
