"""The price book in memory: which row prices a call, and at which rates (design.md 2.3).

An import prices thousands of calls; one query loads an organization's rows plus the
global ones, then every resolution is a dictionary walk in Python.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from django.db.models import Q
from django.utils import timezone

from conversations.engine.cache_policy import NO_CACHE, default_policy
from conversations.engine.cache_policy import CachePolicy as EngineCachePolicy
from conversations.engine.pricing import (
    Buckets,
    Cost,
    Rates,
    price_buckets,
    price_without_cache,
)
from conversations.engine.profiles import ModelProfile, default_profile
from conversations.engine.types import Call
from conversations.models import Organization

from .matrix import RateMatrix
from .models import CachePolicy, ModelPrice

# Dated snapshots fall back to their family row: gpt-4o-2024-08-06 -> gpt-4o, gpt-4-0613 -> gpt-4.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")

EXACT, SNAPSHOT, PATTERN = 3, 2, 1


def snapshot_base(model: str) -> str | None:
    base = _SNAPSHOT.sub("", model)
    return base if base != model else None


def _specificity(row: ModelPrice, model: str) -> tuple[int, int] | None:
    """How closely a row matches a model name, or None when it does not match."""
    if row.is_pattern:
        if fnmatchcase(model, row.model):
            return (PATTERN, len(row.model.replace("*", "")))
        return None
    if row.model == model:
        return (EXACT, len(row.model))
    if row.model == snapshot_base(model):
        return (SNAPSHOT, len(row.model))
    return None


@dataclass
class PriceBook:
    """Rows visible to one organization: its own plus the global ones."""

    rows: list[ModelPrice]
    # By model, time and UTC offset: the offset tells apart the two instants one wall time
    # names at a DST change (equal as datetimes of one zone). Not by at.isoformat(): an
    # import looks a row up three times a call, and isoformat took ~1 us of the ~1.4.
    _cache: dict[tuple[str, datetime, timedelta | None], ModelPrice | None] = field(
        default_factory=dict
    )
    _matrices: dict[int, RateMatrix] = field(default_factory=dict)
    # By model, the rows whose name matches it, with their rank but for the date: calls
    # rarely share a time (a live call's is now), so the cache above seldom answers, and
    # matching every row's name (snapshot suffixes, patterns) was most of a lookup.
    _matching: dict[str, list[tuple[tuple[int, int, int], ModelPrice]]] = field(
        default_factory=dict
    )

    def matrix(self, row: ModelPrice) -> RateMatrix:
        """The row's matrix, built once: a book prices thousands of calls with few rows."""
        if row.pk not in self._matrices:
            self._matrices[row.pk] = row.matrix()
        return self._matrices[row.pk]

    @classmethod
    def for_organization(cls, organization: Organization | None) -> PriceBook:
        scope = Q(organization__isnull=True)
        if organization is not None:
            scope |= Q(organization=organization)
        rows = ModelPrice.objects.filter(scope).select_related("cache_policy")
        return cls(rows=list(rows.prefetch_related("rates")))

    def fingerprint(self, at: datetime) -> str:
        """A digest of every row in force by `at`: its fields, its rate cells and its cache
        policy. Two books with equal digests price every call up to `at` the same, so a
        figure computed from the book may be cached under it."""
        digest = hashlib.sha256()
        rows = sorted((r for r in self.rows if r.effective_from <= at), key=lambda r: r.pk)
        for row in rows:
            fields = [(f.attname, getattr(row, f.attname)) for f in row._meta.concrete_fields]
            digest.update(repr(fields).encode())
            digest.update(repr(sorted(self.matrix(row).cells.items())).encode())
        policy_ids = {row.cache_policy_id for row in rows if row.cache_policy_id}
        for policy in CachePolicy.objects.filter(pk__in=policy_ids).order_by("pk").values():
            digest.update(repr(sorted(policy.items())).encode())
        return digest.hexdigest()[:32]

    def resolve(self, model: str | None, at: datetime) -> ModelPrice | None:
        """The most specific row: organization over global, exact name over snapshot
        fallback over pattern, then the latest effective_from at or before `at`."""
        if not model:
            return None
        key = (model, at, at.utcoffset())
        if key not in self._cache:
            best: tuple[tuple[int, int, int, datetime], ModelPrice] | None = None
            for (scope, kind, length), row in self._matches(model):
                if row.effective_from > at:
                    continue
                rank = (scope, kind, length, row.effective_from)
                if best is None or rank > best[0]:
                    best = (rank, row)
            self._cache[key] = best[1] if best else None
        return self._cache[key]

    def _matches(self, model: str) -> list[tuple[tuple[int, int, int], ModelPrice]]:
        """The rows matching `model`, in the book's order, each with its rank but the date."""
        found = self._matching.get(model)
        if found is None:
            # Filled before it is stored: threads share a book (a worker's thread pool, the
            # threaded web server), and one must never read another's half-built list.
            found = []
            for row in self.rows:
                spec = _specificity(row, model)
                if spec is not None:
                    found.append(((1 if row.organization_id else 0, spec[0], spec[1]), row))
            self._matching[model] = found
        return found

    def price(
        self,
        *,
        model: str | None,
        at: datetime,
        buckets: Buckets,
        service_tier: str | None,
        batch: bool,
        extended_retention: bool = False,
    ) -> Priced:
        """Price buckets with the row that applies at `at`."""
        row = self.resolve(model, at)
        if row is None:
            return UNPRICED
        rates = self.matrix(row).rates(
            service_tier=service_tier,
            batch=batch,
            prompt_tokens=buckets.prompt_tokens,
            extended_retention=extended_retention,
        )
        cost = price_buckets(buckets, rates)
        uncached = price_without_cache(buckets, rates, cost).total
        return Priced(row=row, cost=cost, cost_uncached=uncached)

    def call_rates(
        self, call: Call, prompt_tokens: int, *, now: datetime, default_model: str | None = None
    ) -> Rates | None:
        """The engine's rate lookup for one call: the row at the call's time (or `now`
        when the call has none), the call's model or else `default_model`."""
        row = self.resolve(call.model or default_model, call.started_at or now)
        if row is None:
            return None
        return self.matrix(row).rates(
            service_tier=call.service_tier,
            batch=call.batch,
            prompt_tokens=prompt_tokens,
            extended_retention=is_extended(call.cache_retention),
        )

    def policy(self, model: str | None, at: datetime | None = None) -> EngineCachePolicy:
        """The model's cache policy (design.md 2.6): the row's, else none when the row has no
        cached-input rate (trust the rates), else the engine's default for the name."""
        row = self.resolve(model, at or timezone.now())
        if row is None:
            return default_policy(model)
        if row.cache_policy is not None:
            policy = engine_policy(row.cache_policy)
        elif row.cached_input_per_1m is None:
            policy = NO_CACHE
        else:
            policy = default_policy(model)
        return replace(policy, extended_retention=row.extended_retention)

    def profile(self, model: str | None, at: datetime | None = None) -> ModelProfile:
        """Token-counting facts for a model: the engine's defaults, overridden by the row."""
        base = default_profile(model)
        row = self.resolve(model, at or timezone.now())
        if row is None:
            return base
        return replace(
            base,
            encoding=row.encoding,
            tokens_per_message=row.tokens_per_message,
            tokens_per_name=row.tokens_per_name,
            reply_priming=row.reply_priming,
            context_window=row.context_window or base.context_window,
            max_output_tokens=row.max_output_tokens or base.max_output_tokens,
        )


@dataclass(frozen=True)
class Priced:
    """One call's cost and the row that priced it; row None means cost NULL, never 0."""

    row: ModelPrice | None
    cost: Cost | None
    cost_uncached: Decimal | None

    def cost_fields(self) -> dict[str, Any]:
        """The usage record's price link and cost columns, in one place for every writer."""
        cost = self.cost
        return {
            "price_id": self.row.pk if self.row else None,
            "cost_input_uncached": cost.input_uncached if cost else None,
            "cost_input_cached": cost.input_cached if cost else None,
            "cost_input_cache_write": cost.input_cache_write if cost else None,
            "cost_output": cost.output if cost else None,
            "cost_total": cost.total if cost else None,
            "cost_uncached": self.cost_uncached,
        }


UNPRICED = Priced(row=None, cost=None, cost_uncached=None)


def rates_for(
    row: ModelPrice,
    *,
    service_tier: str | None,
    batch: bool,
    prompt_tokens: int,
    extended_retention: bool = False,
) -> Rates:
    """The rates that apply to one call, from the row's matrix (pricing/matrix.py says
    which cell wins and how a missing one falls back)."""
    return row.matrix().rates(
        service_tier=service_tier,
        batch=batch,
        prompt_tokens=prompt_tokens,
        extended_retention=extended_retention,
    )


def engine_policy(row: CachePolicy) -> EngineCachePolicy:
    """The engine's copy of a policy row: every number the simulator uses."""
    return EngineCachePolicy(
        name=row.name,
        kind=row.kind,  # type: ignore[arg-type]  # CacheKind choices are the engine's kinds
        min_tokens=row.min_tokens,
        step_tokens=row.step_tokens,
        routing_tokens=row.routing_tokens,
        overflow_rpm=row.overflow_rpm,
        ttl_seconds=row.ttl_seconds,
        max_ttl_seconds=row.max_ttl_seconds,
        extended_ttl_seconds=row.extended_ttl_seconds,
        max_breakpoints=row.max_breakpoints,
        writes_billed=row.writes_billed,
        requires_cache_key=row.requires_cache_key,
    )


def is_extended(retention: str | None) -> bool:
    """Whether a request's prompt_cache_retention asks for the extended (24h) retention."""
    return retention is not None and retention not in ("in_memory", "in-memory", "default")
