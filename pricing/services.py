"""Write paths of the price book: rows from LiteLLM's table, and explicit re-pricing of
stored usage. Prices never rewrite history silently (design.md 2.2)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from conversations.engine.pricing import Buckets, buckets_from_usage, usage_from_dict
from conversations.models import Organization, UsageRecord
from conversations.services import rollups
from costlab import heartbeat, jobs

from .book import PriceBook
from .litellm import PriceEntry
from .matrix import Cell
from .models import (
    CachePolicy,
    CostRecompute,
    ModelPrice,
    PriceRate,
    PriceSource,
    RecomputeStatus,
)

logger = logging.getLogger(__name__)


@dataclass
class PriceImportResult:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def _same_rates(row: ModelPrice, entry: PriceEntry) -> bool:
    """Whether the row already prices exactly as the entry: every cell of the matrix."""
    threshold = entry.fields.get("long_context_threshold")
    return row.long_context_threshold == threshold and row.matrix().cells == _entry_matrix(entry)


def _entry_matrix(entry: PriceEntry) -> dict[Cell, Decimal]:
    probe = ModelPrice(**{k: v for k, v in entry.fields.items() if k.endswith("_per_1m")})
    return {**probe.base_cells(), **entry.cells}


@transaction.atomic
def prices_import(
    *,
    entries: list[PriceEntry],
    effective_from: datetime,
    organization: Organization | None = None,
) -> PriceImportResult:
    """Add dated rows from an external price table. Never rewrites a row: a model whose
    current rates are unchanged gets nothing new; a row already starting at that instant
    is left as it is."""
    result = PriceImportResult()
    policies = {p.name: p for p in CachePolicy.objects.all()}
    for entry in entries:
        scope = ModelPrice.objects.filter(organization=organization, model=entry.model)
        if scope.filter(effective_from=effective_from).exists():
            result.existing.append(entry.model)
            continue
        current = (
            scope.filter(effective_from__lte=effective_from).order_by("-effective_from").first()
        )
        if current is not None and _same_rates(current, entry):
            result.unchanged.append(entry.model)
            continue
        row = ModelPrice.objects.create(
            organization=organization,
            model=entry.model,
            effective_from=effective_from,
            source=PriceSource.LITELLM,
            notes="Imported from LiteLLM's model_prices_and_context_window.json.",
            cache_policy=policies.get(entry.cache_policy),
            **entry.fields,
        )
        PriceRate.objects.bulk_create(
            PriceRate(price=row, bucket=b, tier=t, band=band, retention=r, rate_per_1m=rate)
            for (b, t, band, r), rate in entry.cells.items()
        )
        result.created.append(entry.model)
    return result


RECOMPUTE_BATCH = 2000
COST_FIELDS = [
    "price",
    "cost_input_uncached",
    "cost_input_cached",
    "cost_input_cache_write",
    "cost_output",
    "cost_total",
    "cost_uncached",
]


def _stored_buckets(record: UsageRecord) -> Buckets:
    if record.raw:  # the usage as received is the source of truth (audio parts included)
        return buckets_from_usage(usage_from_dict(record.raw))
    return Buckets(
        input_uncached=record.input_uncached,
        input_cached=record.input_cached,
        input_cache_write=record.input_cache_write,
        output=record.output,
        reasoning=record.reasoning_tokens,
    )


def _reprice(record: UsageRecord, book: PriceBook) -> bool:
    """Price one stored record again from its buckets; True when anything changed."""
    priced = book.price(
        model=record.model,
        at=record.occurred_at,
        buckets=_stored_buckets(record),
        service_tier=record.turn.service_tier or None,
        batch=record.turn.is_batch,
    )
    new = priced.cost_fields()
    if all(getattr(record, name) == value for name, value in new.items()):
        return False
    for name, value in new.items():
        setattr(record, name, value)
    return True


def costs_recompute_request(
    *, organization: Organization | None, user: AbstractBaseUser | AnonymousUser | None = None
) -> CostRecompute:
    """Log a re-pricing and queue it for a worker (the admin action)."""
    log = CostRecompute.objects.create(
        organization=organization,
        requested_by_id=user.pk if user is not None and user.is_authenticated else None,
    )
    jobs.enqueue_on_commit(jobs.COSTS_RECOMPUTE, log.pk)
    return log


def costs_recompute(
    *,
    organization: Organization | None = None,
    since: datetime | None = None,
    user: AbstractBaseUser | AnonymousUser | None = None,
) -> CostRecompute:
    """Re-price stored usage with the price book as it is now, in this process (the
    command), and log what changed."""
    now = timezone.now()
    log = CostRecompute.objects.create(
        organization=organization,
        since=since,
        requested_by_id=user.pk if user is not None and user.is_authenticated else None,
        status=RecomputeStatus.RUNNING,
        started=now,
        heartbeat=now,
        attempts=1,
    )
    return costs_recompute_process(log)


def costs_recompute_claim(recompute_id: int) -> CostRecompute | None:
    return heartbeat.claim(CostRecompute.objects.all(), recompute_id)


def costs_recompute_sweep() -> heartbeat.Swept:
    """Queue again the running recomputes whose worker (or command) died: a recompute
    needs nothing but its row to run again."""
    swept = heartbeat.sweep(
        CostRecompute.objects.all(), rerunnable=Q(pk__isnull=False), noun="recompute"
    )
    for recompute_id in swept.requeued:
        jobs.enqueue_on_commit(jobs.COSTS_RECOMPUTE, recompute_id)
    return swept


def costs_recompute_process(log: CostRecompute) -> CostRecompute:
    """Re-price a claimed recompute's usage, all or nothing, keeping its heartbeat."""
    owned = heartbeat.owned(CostRecompute.objects.all(), pk=log.pk, attempt=log.attempts)
    with heartbeat.beating(owned, pk=log.pk) as beat:
        try:
            with transaction.atomic():
                _reprice_all(log, check=beat.check)
                done = owned.update(
                    records=log.records,
                    changed=log.changed,
                    cost_before=log.cost_before,
                    cost_after=log.cost_after,
                    status=RecomputeStatus.SUCCEEDED,
                    finished=timezone.now(),
                )
                if not done:
                    raise heartbeat.ClaimLost(f"recompute {log.pk} was taken over")
        except heartbeat.ClaimLost:
            logger.warning("recompute %s: attempt %s lost its claim", log.pk, log.attempts)
        except Exception as exc:
            logger.exception("recompute %s crashed", log.pk)
            owned.update(
                status=RecomputeStatus.FAILED,
                error=f"internal error while re-pricing ({type(exc).__name__}); nothing changed",
                finished=timezone.now(),
            )
            raise
    log.refresh_from_db()
    return log


def _reprice_all(log: CostRecompute, *, check: Callable[[], None]) -> None:
    """Re-price the log's scope in batches; the counts and totals land on `log`."""
    records = UsageRecord.objects.select_related("turn").order_by("id")
    if log.organization_id is not None:
        records = records.filter(organization_id=log.organization_id)
    if log.since is not None:
        records = records.filter(occurred_at__gte=log.since)
    books: dict[int, PriceBook] = {}
    before = after = Decimal(0)
    log.records = log.changed = 0
    batch: list[UsageRecord] = []
    # Conversations whose billing usage changed: their rollups are recomputed at the end,
    # inside the same transaction.
    touched: set[int] = set()
    for record in records.iterator(chunk_size=RECOMPUTE_BATCH):
        if record.organization_id not in books:
            books[record.organization_id] = PriceBook.for_organization(
                Organization.objects.get(pk=record.organization_id)
            )
        if record.is_billing:  # the log's totals are what pages show: billing records only
            before += record.cost_total or 0
        log.records += 1
        if _reprice(record, books[record.organization_id]):
            batch.append(record)
            if record.is_billing:
                touched.add(record.conversation_id)
        if record.is_billing:
            after += record.cost_total or 0
        if len(batch) >= RECOMPUTE_BATCH:
            check()
            UsageRecord.objects.bulk_update(batch, COST_FIELDS)
            log.changed += len(batch)
            batch = []
    UsageRecord.objects.bulk_update(batch, COST_FIELDS)
    log.changed += len(batch)
    check()
    rollups.conversations_recompute(conversation_ids=touched)
    log.cost_before, log.cost_after = before, after
