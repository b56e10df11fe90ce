"""What-if figures for one stored conversation: the next turns under the manual flow, and
the same calls under other context strategies.

A read path, but not a selector: the figures are computed by the engine from the stored
messages and turns (each message encoded once), never aggregated in the database nor stored.
Any member may open them, a viewer included, so the work is bounded by configuration: a
conversation above COSTLAB_WHAT_IF_MAX_CHARS of messages, or whose calls send more than
COSTLAB_WHAT_IF_MAX_SENT messages in all (the replay's work grows with that), is refused with
a message; the figures are computed once per (conversation, scenario, price book) and kept in
the cache for COSTLAB_WHAT_IF_CACHE_SECONDS; and one conversation is computed by one request
at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import ClassVar

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Max, Sum, TextField
from django.db.models.functions import Cast, Length
from django.utils import timezone

from pricing.book import PriceBook, rates_for

from . import selectors
from .engine.cache import parse_retention
from .engine.levers import LEVERS, LeverResult, applicable_levers, compare_levers, lever_left_out
from .engine.projection import project
from .engine.strategies import StrategyResult, compare_strategies
from .models import Conversation

RETENTION_SCENARIOS = ("5m", "10m", "1h", "24h")
DEFAULT_RETENTION = "10m"
PROJECTED_TURNS = 10
# Scenarios kept per conversation: every retention under the current and the previous book.
VARIANTS_KEPT = 2 * len(RETENTION_SCENARIOS)


@dataclass(frozen=True)
class StrategyFigures:
    """What the page shows of one strategy (the engine's result also holds every call)."""

    label: str
    summary_calls: int
    calls: int
    cost: Decimal | None
    cost_no_cache: Decimal | None
    cached_share: float | None
    peak_prompt_tokens: int
    over_context_calls: int
    description: str = ""

    @classmethod
    def of(cls, result: StrategyResult) -> StrategyFigures:
        return cls(
            description=result.strategy.description,
            label=result.strategy.label,
            summary_calls=result.summary_calls,
            calls=result.calls,
            cost=result.cost,
            cost_no_cache=result.cost_no_cache,
            cached_share=result.cached_share,
            peak_prompt_tokens=result.peak_prompt_tokens,
            over_context_calls=result.over_context_calls,
        )


@dataclass(frozen=True)
class ProjectionFigures:
    user_tokens: int
    assistant_tokens: int
    cost: Decimal | None
    cost_no_cache: Decimal | None
    last_prompt_tokens: int


@dataclass(frozen=True)
class WhatIf:
    kind: ClassVar[str] = "ready"
    retention: str
    policy: str  # the model's cache policy name
    strategies: list[StrategyFigures]
    levers: list[LeverResult]
    projection: ProjectionFigures | None
    projected_turns: int
    # Levers not tried, each with why: "all levers alike" read as "retention cannot help"
    # on a model that is simply not offered extended retention.
    levers_left_out: list[str] = field(default_factory=list)

    @property
    def levers_alike(self) -> bool:
        """Every lever comes to the same cost and cache figures (a walk's user took four
        equal rows for a fault: the page says why they can be equal)."""
        figures = {(r.cost, r.cached_tokens, r.write_tokens) for r in self.levers}
        return len(self.levers) > 1 and len(figures) == 1


@dataclass(frozen=True)
class TooLarge:
    """The conversation is above a configured bound: what it is, and which bound."""

    kind: ClassVar[str] = "too_large"
    retention: str
    reason: str


@dataclass(frozen=True)
class Busy:
    """Another request is computing this conversation's figures right now."""

    kind: ClassVar[str] = "busy"
    retention: str


def cache_key(conversation: Conversation) -> str:
    """One entry per conversation holds all its scenarios, so deleting the conversation
    forgets them with one key."""
    return f"what-if:{conversation.code}"


def forget(conversation: Conversation) -> None:
    cache.delete(cache_key(conversation))


# Raised when the way the figures are worked out changes, so that figures cached by an
# older way are not shown (2: the variants keep each reply's reported output; 3: each
# strategy's description; 4: the projection's next turns at the median message sizes; 5:
# the levers left out, and why).
FIGURES_VERSION = 5


def _variant(conversation: Conversation, retention: str, book: PriceBook) -> str:
    """What the figures depend on: the way they are worked out, the scenario, the price
    book in force now, and the conversation's calls (a live conversation grows)."""
    turns = conversation.turns.aggregate(n=Count("id"), last=Max("id"))
    messages = conversation.messages.aggregate(n=Count("id"), last=Max("id"))
    state = f"{turns['n']}.{turns['last']}.{messages['n']}.{messages['last']}"
    return f"v{FIGURES_VERSION}:{retention}:{book.fingerprint(timezone.now())}:{state}"


def _too_large(conversation: Conversation) -> str | None:
    """Why the conversation is above the configured bounds, or None. Both sizes come
    from the database, so a huge conversation is never loaded to find out."""
    max_chars, max_sent = settings.COSTLAB_WHAT_IF_MAX_CHARS, settings.COSTLAB_WHAT_IF_MAX_SENT
    chars = conversation.messages.aggregate(
        chars=Sum(Length(Cast("data", output_field=TextField())))
    )["chars"]
    if chars and chars > max_chars:
        return (
            f"its messages hold {chars:,} characters; what-ifs are worked out up to "
            f"{max_chars:,} (COSTLAB_WHAT_IF_MAX_CHARS)"
        )
    sent = sum(
        end - start
        for ranges in conversation.turns.values_list("request_ranges", flat=True).iterator()
        for start, end in ranges
    )
    if sent > max_sent:
        return (
            f"its {conversation.turns.count():,} calls send {sent:,} messages in all; "
            f"what-ifs are worked out up to {max_sent:,} (COSTLAB_WHAT_IF_MAX_SENT)"
        )
    return None


def conversation_what_if(
    conversation: Conversation, *, retention: str = DEFAULT_RETENTION
) -> WhatIf | TooLarge | Busy:
    """The figures from the cache, or computed now when the conversation is within bounds
    and no other request is computing them."""
    book = PriceBook.for_organization(conversation.organization)
    variant = _variant(conversation, retention, book)
    kept: dict[str, WhatIf] = cache.get(cache_key(conversation)) or {}
    if variant in kept:
        return kept[variant]
    reason = _too_large(conversation)
    if reason is not None:
        return TooLarge(retention=retention, reason=reason)
    lock = f"{cache_key(conversation)}:computing"
    # Bounded by the page's own time: a crashed request frees the lock within a minute.
    if not cache.add(lock, True, timeout=60):
        return Busy(retention=retention)
    try:
        figures = _compute(conversation, retention=retention, book=book)
        kept = cache.get(cache_key(conversation)) or {}
        kept[variant] = figures
        while len(kept) > VARIANTS_KEPT:  # dicts keep insertion order: the oldest goes
            kept.pop(next(iter(kept)))
        cache.set(cache_key(conversation), kept, timeout=settings.COSTLAB_WHAT_IF_CACHE_SECONDS)
    finally:
        cache.delete(lock)
    return figures


def _compute(conversation: Conversation, *, retention: str, book: PriceBook) -> WhatIf:
    transcript = selectors.conversation_transcript(conversation, reported_output=True)
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
        projected = project(
            transcript,
            PROJECTED_TURNS,
            profile=book.profile(model),
            rates=rates_for(row, service_tier=None, batch=False, prompt_tokens=peak)
            if row
            else None,
            retention_seconds=seconds,
            policy=book.policy(model),
        )
        projection = ProjectionFigures(
            user_tokens=projected.user_tokens,
            assistant_tokens=projected.assistant_tokens,
            cost=projected.cost,
            cost_no_cache=projected.cost_no_cache,
            last_prompt_tokens=projected.turns[-1].prompt_tokens if projected.turns else 0,
        )
    policy = book.policy(model)
    tried = applicable_levers(policy)
    levers = compare_levers(
        [transcript],
        tried,
        profile_for=book.profile,
        policy_for=book.policy,
        rates_for=call_rates,
        retention_seconds=seconds,
        org=str(conversation.organization.code),
    )
    return WhatIf(
        retention=retention,
        policy=policy.name,
        levers=levers,
        strategies=[StrategyFigures.of(s) for s in full + others],
        projection=projection,
        projected_turns=PROJECTED_TURNS,
        levers_left_out=[lever_left_out(lever, policy) for lever in LEVERS if lever not in tried],
    )
