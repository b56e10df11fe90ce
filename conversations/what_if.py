"""What-if figures for one stored conversation: the next turns under the manual flow, and
the same calls under other context strategies.

A read path, but not a selector: the figures are computed by the engine on demand from the
stored messages and turns (each message encoded once), never aggregated in the database nor
stored, because they change with the price book and the chosen scenario."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from django.utils import timezone

from pricing.book import PriceBook, rates_for

from . import selectors
from .engine.cache import parse_retention
from .engine.levers import LeverResult, compare_levers
from .engine.projection import Projection, project
from .engine.strategies import StrategyResult, compare_strategies
from .models import Conversation

RETENTION_SCENARIOS = ("5m", "10m", "1h", "24h")
DEFAULT_RETENTION = "10m"
PROJECTED_TURNS = 10


@dataclass(frozen=True)
class WhatIf:
    retention: str
    policy: str  # the model's cache policy name
    strategies: list[StrategyResult]
    levers: list[LeverResult]
    projection: Projection | None
    projected_turns: int


def conversation_what_if(
    conversation: Conversation, *, retention: str = DEFAULT_RETENTION
) -> WhatIf:
    book = PriceBook.for_organization(conversation.organization)
    transcript = selectors.conversation_transcript(conversation)
    now = timezone.now()
    seconds = parse_retention(retention)

    call_rates = partial(book.call_rates, now=now, default_model=conversation.model)

    full = compare_strategies(
        transcript,
        ["full"],
        profile_for=book.profile,
        policy_for=book.policy,
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
        profile_for=book.profile,
        policy_for=book.policy,
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
            policy=book.policy(model),
        )
    levers = compare_levers(
        [transcript],
        profile_for=book.profile,
        policy_for=book.policy,
        rates_for=call_rates,
        retention_seconds=seconds,
        org=str(conversation.organization.code),
    )
    return WhatIf(
        retention=retention,
        policy=book.policy(model).name,
        levers=levers,
        strategies=full + others,
        projection=projection,
        projected_turns=PROJECTED_TURNS,
    )
