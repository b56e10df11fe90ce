"""The price book in memory: which row prices a call, and at which rates (design.md 2.3).

An import prices thousands of calls; one query loads an organization's rows plus the
global ones, then every resolution is a dictionary walk in Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from fnmatch import fnmatchcase

from django.db.models import Q
from django.utils import timezone

from .engine.pricing import Rates
from .engine.profiles import ModelProfile, default_profile
from .models import ModelPrice, Organization

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
    _cache: dict[tuple[str, str], ModelPrice | None] = field(default_factory=dict)

    @classmethod
    def for_organization(cls, organization: Organization | None) -> PriceBook:
        scope = Q(organization__isnull=True)
        if organization is not None:
            scope |= Q(organization=organization)
        return cls(rows=list(ModelPrice.objects.filter(scope)))

    def resolve(self, model: str | None, at: datetime) -> ModelPrice | None:
        """The most specific row: organization over global, exact name over snapshot
        fallback over pattern, then the latest effective_from at or before `at`."""
        if not model:
            return None
        key = (model, at.isoformat())
        if key not in self._cache:
            best: tuple[tuple[int, int, int, datetime], ModelPrice] | None = None
            for row in self.rows:
                if row.effective_from > at:
                    continue
                spec = _specificity(row, model)
                if spec is None:
                    continue
                rank = (1 if row.organization_id else 0, spec[0], spec[1], row.effective_from)
                if best is None or rank > best[0]:
                    best = (rank, row)
            self._cache[key] = best[1] if best else None
        return self._cache[key]

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


def rates_for(
    row: ModelPrice, *, service_tier: str | None, batch: bool, prompt_tokens: int
) -> Rates:
    """Pick the rates that apply to one call: the service tier first (from the response),
    then, on the standard tier, the long-context tier for the WHOLE request above its
    threshold. A tier rate the row lacks falls back to the standard one; the Batch API never
    gets the caching discount (seed 002), so its cached tokens pay the batch input rate."""
    extras = {
        "reasoning": row.reasoning_per_1m,
        "audio_input": row.audio_input_per_1m,
        "audio_output": row.audio_output_per_1m,
    }
    if batch or service_tier == "batch":
        return Rates(
            input=_first(row.batch_input_per_1m, row.input_per_1m),
            cached_input=None,
            output=_first(row.batch_output_per_1m, row.output_per_1m),
            **extras,
        )
    if service_tier == "flex" and row.flex_input_per_1m is not None:
        return Rates(
            input=row.flex_input_per_1m,
            cached_input=_either(row.flex_cached_input_per_1m, row.cached_input_per_1m),
            output=_first(row.flex_output_per_1m, row.output_per_1m),
            **extras,
        )
    if service_tier == "priority" and row.priority_input_per_1m is not None:
        return Rates(
            input=row.priority_input_per_1m,
            cached_input=_either(row.priority_cached_input_per_1m, row.cached_input_per_1m),
            output=_first(row.priority_output_per_1m, row.output_per_1m),
            **extras,
        )
    threshold = row.long_context_threshold
    if threshold is not None and prompt_tokens > threshold and row.long_input_per_1m is not None:
        return Rates(
            input=row.long_input_per_1m,
            cached_input=_either(row.long_cached_input_per_1m, row.cached_input_per_1m),
            output=_first(row.long_output_per_1m, row.output_per_1m),
            cache_write=row.cache_write_per_1m,
            **extras,
        )
    return Rates(
        input=row.input_per_1m,
        cached_input=row.cached_input_per_1m,
        output=row.output_per_1m,
        cache_write=row.cache_write_per_1m,
        **extras,
    )


def _either(value: Decimal | None, fallback: Decimal | None) -> Decimal | None:
    return value if value is not None else fallback


def _first(value: Decimal | None, fallback: Decimal) -> Decimal:
    return value if value is not None else fallback
