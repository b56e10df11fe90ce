"""What-if figures for one stored conversation: the next turns under the manual flow, and
the same calls under other context strategies. Derived on demand from stored messages and
turns (each message encoded once), never stored: they change with the price book."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from .engine.cache import parse_retention
from .engine.pricing import Rates
from .engine.profiles import ModelProfile
from .engine.projection import Projection, project
from .engine.strategies import StrategyResult, compare_strategies
from .engine.types import Call, Transcript
from .models import Conversation
from .pricebook import PriceBook, rates_for

RETENTION_SCENARIOS = ("5m", "10m", "1h", "24h")
DEFAULT_RETENTION = "10m"
PROJECTED_TURNS = 10


def conversation_transcript(conversation: Conversation) -> Transcript:
    """Rebuild the engine's view of a stored conversation: messages once, calls by index."""
    messages = list(conversation.messages.order_by("index").values_list("data", flat=True))
    calls = [
        Call(
            request=turn.request_indexes(),
            response=turn.response.index if turn.response else None,
            model=turn.model or None,
            tools=turn.tools,
            response_format=turn.response_format,
            prompt_cache_key=turn.prompt_cache_key or None,
            service_tier=turn.service_tier or None,
            started_at=turn.started_at,
            latency_ms=turn.latency_ms,
            max_output_tokens=turn.max_output_tokens,
            batch=turn.is_batch,
        )
        for turn in conversation.turns.select_related("response").order_by("index")
    ]
    return Transcript(
        messages=messages, calls=calls, title=conversation.title, model=conversation.model or None
    )


@dataclass(frozen=True)
class WhatIf:
    retention: str
    strategies: list[StrategyResult]
    projection: Projection | None
    projected_turns: int


def conversation_what_if(
    conversation: Conversation, *, retention: str = DEFAULT_RETENTION
) -> WhatIf:
    book = PriceBook.for_organization(conversation.organization)
    transcript = conversation_transcript(conversation)
    now = timezone.now()
    seconds = parse_retention(retention)

    def profile_for(model: str | None) -> ModelProfile:
        return book.profile(model)

    def call_rates(call: Call, prompt_tokens: int) -> Rates | None:
        at: datetime = call.started_at or now
        row = book.resolve(call.model or conversation.model, at)
        if row is None:
            return None
        return rates_for(
            row, service_tier=call.service_tier, batch=call.batch, prompt_tokens=prompt_tokens
        )

    full = compare_strategies(
        transcript,
        ["full"],
        profile_for=profile_for,
        rates_for=call_rates,
        retention_seconds=seconds,
        org=str(conversation.organization.code),
    )
    peak = full[0].peak_prompt_tokens
    # Budgets relative to this conversation, so each strategy actually changes something.
    budget = max(1024, peak // 2)
    others = compare_strategies(
        transcript,
        ["window:8", f"trim:{budget}", f"summarize:{budget}"],
        profile_for=profile_for,
        rates_for=call_rates,
        retention_seconds=seconds,
        org=str(conversation.organization.code),
    )
    projection = None
    model = conversation.model or (transcript.calls[-1].model if transcript.calls else None)
    if transcript.calls and model:
        row = book.resolve(model, now)
        projection = project(
            transcript,
            PROJECTED_TURNS,
            profile=book.profile(model),
            rates=rates_for(row, service_tier=None, batch=False, prompt_tokens=peak)
            if row
            else None,
            retention_seconds=seconds,
        )
    return WhatIf(
        retention=retention,
        strategies=full + others,
        projection=projection,
        projected_turns=PROJECTED_TURNS,
    )
