"""The cache fix list of an organization (issue 14): recommendations from its own calls,
each with the money it would have saved, worked out by the engine (engine/fixes.py)
re-running the simulator over the period's conversations with the fix applied.

A read path but not a selector, like what_if.py: the figures come from the engine, not
from an aggregate. The work grows with the calls, so it is bounded: a period holding more
than MAX_CALLS calls is refused with a message (narrow the period or the filters), and the
result is kept in the cache per (organization, slice, price book, last usage row), and one
request at a time works out a given list.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import ClassVar
from uuid import UUID

from django.core.cache import cache
from django.db.models import Count, Max, QuerySet, Sum
from django.utils import timezone

from pricing.book import PriceBook

from . import selectors, what_if
from .breakdowns import Slice
from .engine.fixes import Fix, Simulation, find_fixes
from .models import Conversation, ConversationTotals, Organization, UsageRecord

MAX_CALLS = 20_000
RETENTION_SECONDS = 600  # the imports' default scenario: entries live 10 minutes idle
CACHE_SECONDS = 3600
LINKS_SHOWN = 20


@dataclass(frozen=True)
class FixCalls:
    """The calls of one conversation a fix is about (turn numbers as the page shows them)."""

    code: UUID
    title: str
    turns: list[int]


@dataclass(frozen=True)
class FixItem:
    name: str
    title: str
    advice: str
    saving: Decimal
    cost_before: Decimal | None
    cost_after: Decimal | None
    calls: int
    conversations: list[FixCalls]  # the first LINKS_SHOWN
    details: list[str]


@dataclass(frozen=True)
class FixList:
    kind: ClassVar[str] = "ready"
    items: list[FixItem]
    conversations: int
    calls: int
    # The same calls as recorded (their billing usage: reported where the API reported it)
    # beside the simulator's cost of them, every fix's "before": they differ by how far the
    # simulator's cache hits are from the API's. None: a call of theirs has no price.
    recorded_cost: Decimal | None
    simulated_cost: Decimal | None


@dataclass(frozen=True)
class TooLarge:
    kind: ClassVar[str] = "too_large"
    calls: int
    limit: int


@dataclass(frozen=True)
class Busy:
    """Another request is working out the same list right now."""

    kind: ClassVar[str] = "busy"


def _item(fix: Fix, conversations: list[Conversation]) -> FixItem:
    by_conversation: dict[int, list[int]] = defaultdict(list)
    for number, index in fix.calls:
        by_conversation[number].append(index + 1)
    links = [
        FixCalls(conversations[n].code, conversations[n].title, turns)
        for n, turns in sorted(by_conversation.items())[:LINKS_SHOWN]
    ]
    return FixItem(
        name=fix.name,
        title=fix.title,
        advice=fix.advice,
        saving=fix.saving or Decimal(0),
        cost_before=fix.cost_before,
        cost_after=fix.cost_after,
        calls=len(fix.calls),
        conversations=links,
        details=fix.details,
    )


def fix_list(organization: Organization, slice_: Slice) -> FixList | TooLarge | Busy:
    records = slice_.records(organization)
    size = records.aggregate(calls=Count("id"), last=Max("id"))
    if size["calls"] > MAX_CALLS:
        return TooLarge(calls=size["calls"], limit=MAX_CALLS)
    book = PriceBook.for_organization(organization)
    now = timezone.now()
    digest = hashlib.sha256(repr(slice_).encode()).hexdigest()[:20]
    # The figures' version too: a list worked out the older way is not served.
    # (":2": a list cached before it carried the recorded cost is not served either.)
    key = f"fixes:v{what_if.FIGURES_VERSION}:2:{organization.code}:{digest}:{size['calls']}.{size['last']}"
    key += f":{book.fingerprint(now)}"
    found: FixList | None = cache.get(key)
    if found is not None:
        return found
    # One request at a time works a list out; a crashed one frees the lock within minutes.
    if not cache.add(f"{key}:computing", True, timeout=300):
        return Busy()
    try:
        found = _compute(organization, records, book, now)
    finally:
        cache.delete(f"{key}:computing")
    cache.set(key, found, timeout=CACHE_SECONDS)
    return found


def _compute(
    organization: Organization, records: QuerySet[UsageRecord], book: PriceBook, now: datetime
) -> FixList:
    ids = records.values("conversation_id").distinct()
    # Whole conversations: a fix changes every call of one, and the cache is shared.
    conversations = list(
        Conversation.objects.filter(organization=organization, id__in=ids).order_by("id")
    )
    transcripts = [
        selectors.conversation_transcript(c, reported_output=True) for c in conversations
    ]
    simulation = Simulation(
        profile_for=book.profile,
        policy_for=book.policy,
        rates_for=partial(book.call_rates, now=now),
        retention_seconds=RETENTION_SECONDS,
        org=str(organization.code),
    )
    fixes = find_fixes(transcripts, simulation)
    return FixList(
        items=[_item(f, conversations) for f in fixes],
        conversations=len(conversations),
        calls=sum(len(t.calls or []) for t in transcripts),
        recorded_cost=_recorded_cost(organization, conversations),
        simulated_cost=fixes[0].cost_before if fixes else None,
    )


def _recorded_cost(organization: Organization, conversations: list[Conversation]) -> Decimal | None:
    """What the conversations' calls cost as recorded, off their totals rollup; None when
    one of them is unpriced (a sum of the priced ones would pass for the whole)."""
    sums = ConversationTotals.objects.filter(
        organization=organization, conversation__in=conversations
    ).aggregate(cost=Sum("cost_total"), calls=Sum("calls"), priced=Sum("priced_calls"))
    if not sums["calls"] or sums["priced"] != sums["calls"]:
        return None
    return sums["cost"]  # type: ignore[no-any-return]
