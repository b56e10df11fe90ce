"""Write paths: imports, usage recording and pricing.

An upload is all or nothing: everything it creates is written inside one transaction, and
the job row records the outcome. Progress is published through the cache, because rows
written inside that transaction are invisible to the page that polls until it commits.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from .engine.analysis import CallAnalysis, analyze
from .engine.cache import MissReason as EngineMissReason
from .engine.pricing import (
    Buckets,
    Cost,
    buckets_from_counts,
    buckets_from_usage,
    price_buckets,
    price_without_cache,
    usage_from_dict,
)
from .engine.types import Call, Transcript
from .formats import parse_files
from .formats.errors import ParseError
from .models import (
    Conversation,
    ConversationSource,
    CostRecompute,
    ImportJob,
    ImportStatus,
    Message,
    ModelPrice,
    Organization,
    Turn,
    UsageRecord,
    UsageSource,
)
from .pricebook import PriceBook, rates_for

logger = logging.getLogger(__name__)

# Transcripts are analysed and written in chunks so a 500 MB file never sits in memory.
CHUNK = 200
# Without a recorded retention scenario, simulate OpenAI's usual 5-10 minutes: take 10.
DEFAULT_RETENTION_SECONDS = 600
WARNINGS_KEPT = 200


class ImportFailed(Exception):
    """An import that stored nothing; the message names the file, line and field."""


# ---------------------------------------------------------------------------
# Pricing of one usage record
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Priced:
    row: ModelPrice | None
    cost: Cost | None
    cost_uncached: Decimal | None


def usage_price(
    *,
    book: PriceBook,
    model: str | None,
    at: datetime,
    buckets: Buckets,
    service_tier: str | None,
    batch: bool,
) -> Priced:
    """Price buckets with the row that applies at `at`; no row means cost NULL, never 0."""
    row = book.resolve(model, at)
    if row is None:
        return Priced(row=None, cost=None, cost_uncached=None)
    rates = rates_for(
        row, service_tier=service_tier, batch=batch, prompt_tokens=buckets.prompt_tokens
    )
    cost = price_buckets(buckets, rates)
    return Priced(row=row, cost=cost, cost_uncached=price_without_cache(buckets, rates, cost).total)


def _usage_record(
    *,
    turn: Turn,
    conversation: Conversation,
    source: str,
    cache_source: str,
    raw: Any,
    buckets: Buckets,
    prompt: int,
    completion: int,
    total: int,
    priced: Priced,
    model: str,
    at: datetime,
    billing: bool,
) -> UsageRecord:
    cost = priced.cost
    return UsageRecord(
        turn=turn,
        organization_id=conversation.organization_id,
        conversation=conversation,
        occurred_at=at,
        model=model,
        source=source,
        cache_source=cache_source,
        is_billing=billing,
        raw=raw,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        reasoning_tokens=buckets.reasoning,
        input_uncached=buckets.input_uncached,
        input_cached=buckets.input_cached,
        input_cache_write=buckets.input_cache_write,
        output=buckets.output,
        price=priced.row,
        cost_input_uncached=cost.input_uncached if cost else None,
        cost_input_cached=cost.input_cached if cost else None,
        cost_input_cache_write=cost.input_cache_write if cost else None,
        cost_output=cost.output if cost else None,
        cost_total=cost.total if cost else None,
        cost_uncached=priced.cost_uncached,
    )


# ---------------------------------------------------------------------------
# Storing analysed transcripts
# ---------------------------------------------------------------------------


@dataclass
class ImportTotals:
    conversations: int = 0
    turns: int = 0
    messages: int = 0
    tokens: int = 0
    cost: Decimal | None = None
    unpriced_turns: int = 0
    warnings: list[str] = field(default_factory=list)

    def add_cost(self, value: Decimal | None) -> None:
        if value is None:
            self.unpriced_turns += 1
        else:
            self.cost = (self.cost or Decimal(0)) + value

    def warn(self, text: str) -> None:
        if len(self.warnings) < WARNINGS_KEPT:
            self.warnings.append(text)


def request_ranges(indexes: list[int]) -> list[list[int]]:
    """[0, 1, 2, 5, 6] -> [[0, 3], [5, 7]]: a prefix flow is one range per turn."""
    ranges: list[list[int]] = []
    for i in indexes:
        if ranges and ranges[-1][1] == i:
            ranges[-1][1] = i + 1
        else:
            ranges.append([i, i + 1])
    return ranges


def _source_of(transcript: Transcript) -> str:
    calls = transcript.calls or []
    if calls and all(c.batch for c in calls):
        return ConversationSource.BATCH
    if any(c.usage is not None for c in calls):
        return ConversationSource.API_LOG
    return ConversationSource.IMPORT


def _miss_fields(reason: EngineMissReason | None) -> tuple[str, str]:
    if reason is None:
        return "", ""
    return reason.kind, reason.describe()[:300]


def _store_conversation(
    *,
    organization: Organization,
    job: ImportJob | None,
    book: PriceBook,
    transcript: Transcript,
    results: list[CallAnalysis],
    fallback_time: datetime,
    totals: ImportTotals,
) -> None:
    calls: list[Call] = [r.call for r in results]
    times = [c.started_at for c in calls if c.started_at is not None]
    conversation = Conversation.objects.create(
        organization=organization,
        import_job=job,
        source=_source_of(transcript),
        external_id=(transcript.external_id or "")[:300],
        title=(transcript.title or _title_from(transcript))[:300],
        model=(transcript.model or next((c.model for c in calls if c.model), "") or "")[:200],
        started_at=transcript.created_at or (min(times) if times else None),
        has_timestamps=bool(times),
        warnings=transcript.warnings[:50],
    )
    message_times = transcript.message_times or []
    messages = Message.objects.bulk_create(
        Message(
            conversation=conversation,
            index=i,
            role=str(m.get("role", ""))[:20],
            data=m,
            sent_at=message_times[i] if i < len(message_times) else None,
        )
        for i, m in enumerate(transcript.messages)
    )
    turns = Turn.objects.bulk_create(
        Turn(
            conversation=conversation,
            index=n,
            request_ranges=request_ranges(r.call.request),
            response=messages[r.call.response] if r.call.response is not None else None,
            model=(r.model or conversation.model)[:200],
            service_tier=(r.call.service_tier or "")[:20],
            prompt_cache_key=(r.call.prompt_cache_key or "")[:300],
            is_batch=r.call.batch,
            tools=r.call.tools,
            response_format=r.call.response_format,
            max_output_tokens=r.call.max_output_tokens,
            external_id=(r.call.external_id or "")[:300],
            started_at=r.call.started_at,
            latency_ms=r.call.latency_ms,
            estimated_prompt_tokens=r.estimated_prompt_tokens,
            estimated_completion_tokens=r.estimated_completion_tokens,
            simulated_cached_tokens=r.simulated_cached_tokens,
            miss_reason=_miss_fields(r.miss_reason)[0],
            miss_detail=_miss_fields(r.miss_reason)[1],
            over_context=r.over_context,
        )
        for n, r in enumerate(results)
    )
    records: list[UsageRecord] = []
    for turn, result in zip(turns, results, strict=True):
        records.extend(
            _turn_usage(
                turn=turn,
                conversation=conversation,
                result=result,
                book=book,
                at=result.call.started_at or conversation.started_at or fallback_time,
                totals=totals,
            )
        )
    UsageRecord.objects.bulk_create(records)
    totals.conversations += 1
    totals.turns += len(turns)
    totals.messages += len(messages)
    where = transcript.location or conversation.title
    for warning in transcript.warnings:
        totals.warn(_located(warning, where))


_POSITION = re.compile(r" (?:line|record) \d+$")


def _located(warning: str, where: str | None) -> str:
    """The warning with one location: an api_log warning names its own line already
    ("log.jsonl line 4: ..."), which is more precise than the conversation's first line."""
    if not where:
        return warning
    source = _POSITION.sub("", where)
    return warning if warning.startswith(source) else f"{where}: {warning}"


def _turn_usage(
    *,
    turn: Turn,
    conversation: Conversation,
    result: CallAnalysis,
    book: PriceBook,
    at: datetime,
    totals: ImportTotals,
) -> list[UsageRecord]:
    call = result.call
    model = turn.model
    estimated_buckets = buckets_from_counts(
        prompt_tokens=result.estimated_prompt_tokens,
        cached_tokens=result.simulated_cached_tokens,
        completion_tokens=result.estimated_completion_tokens,
    )
    estimated_priced = usage_price(
        book=book,
        model=model,
        at=at,
        buckets=estimated_buckets,
        service_tier=call.service_tier,
        batch=call.batch,
    )
    reported = call.usage
    estimated = _usage_record(
        turn=turn,
        conversation=conversation,
        source=UsageSource.ESTIMATED,
        cache_source=UsageSource.SIMULATED,
        raw=None,
        buckets=estimated_buckets,
        prompt=result.estimated_prompt_tokens,
        completion=result.estimated_completion_tokens,
        total=result.estimated_prompt_tokens + result.estimated_completion_tokens,
        priced=estimated_priced,
        model=model,
        at=at,
        billing=reported is None and not result.pending,
    )
    if reported is None:
        # A request that got no reply (an error, or a transcript's trailing message) was
        # not billed: its estimate stays for what-ifs but counts in no total.
        if estimated.is_billing:
            totals.tokens += estimated.total_tokens
            totals.add_cost(estimated.cost_total)
        return [estimated]
    # Reported usage always wins: it is the billing record; the estimate stays beside it.
    buckets = buckets_from_usage(reported)
    priced = usage_price(
        book=book,
        model=model,
        at=at,
        buckets=buckets,
        service_tier=call.service_tier,
        batch=call.batch,
    )
    record = _usage_record(
        turn=turn,
        conversation=conversation,
        source=UsageSource.REPORTED,
        cache_source=UsageSource.REPORTED,
        raw=reported.raw,
        buckets=buckets,
        prompt=reported.prompt_tokens,
        completion=reported.completion_tokens,
        total=reported.total_tokens,
        priced=priced,
        model=model,
        at=at,
        billing=True,
    )
    totals.tokens += record.total_tokens
    totals.add_cost(record.cost_total)
    return [estimated, record]


def _title_from(transcript: Transcript) -> str:
    for message in transcript.messages:
        if message.get("role") == "user":
            content = message.get("content")
            text = content if isinstance(content, str) else ""
            if isinstance(content, list):
                text = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            if text.strip():
                return " ".join(text.split())[:80]
    return ""


def _chunks(items: Iterable[Transcript], size: int) -> Iterator[list[Transcript]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def transcripts_store(
    *,
    organization: Organization,
    transcripts: Iterable[Transcript],
    job: ImportJob | None = None,
    retention_seconds: int = DEFAULT_RETENTION_SECONDS,
    on_chunk: Callable[[ImportTotals], None] | None = None,
) -> ImportTotals:
    """Analyse and store transcripts. The caller owns the transaction."""
    book = PriceBook.for_organization(organization)
    totals = ImportTotals()
    now = timezone.now()

    def profile_for(model: str | None) -> Any:
        return book.profile(model)

    def engine_rates(call: Call, prompt_tokens: int) -> Any:
        row = book.resolve(call.model, call.started_at or now)
        if row is None:
            return None
        return rates_for(
            row, service_tier=call.service_tier, batch=call.batch, prompt_tokens=prompt_tokens
        )

    for chunk in _chunks(transcripts, CHUNK):
        analysis = analyze(
            chunk,
            profile_for=profile_for,
            rates_for=engine_rates,
            retention_seconds=retention_seconds,
            org=str(organization.code),
        )
        for transcript, result in zip(chunk, analysis.conversations, strict=True):
            _store_conversation(
                organization=organization,
                job=job,
                book=book,
                transcript=transcript,
                results=result.calls,
                fallback_time=now,
                totals=totals,
            )
        if on_chunk is not None:
            on_chunk(totals)
    return totals


# ---------------------------------------------------------------------------
# Import jobs
# ---------------------------------------------------------------------------


def _progress_key(job: ImportJob) -> str:
    return f"import-progress:{job.code}"


def import_progress_apply(job: ImportJob) -> None:
    """Overlay the live counts a running job's worker publishes (see module docstring).
    The job is not saved: the database keeps only committed outcomes."""
    if job.status != ImportStatus.RUNNING:
        return
    for key, value in (cache.get(_progress_key(job)) or {}).items():
        setattr(job, key, value)


def _save_upload(job: ImportJob, field_name: str, upload: UploadedFile) -> str:
    """Store the upload and return its sha256, hashing as the chunks stream to disk."""
    digest = hashlib.sha256()
    for piece in upload.chunks():
        digest.update(piece)
    upload.seek(0)
    getattr(job, field_name).save(Path(upload.name or "upload").name, upload, save=False)
    return digest.hexdigest()


def import_job_create(
    *,
    organization: Organization,
    user: AbstractBaseUser | AnonymousUser,
    upload: UploadedFile,
    second_upload: UploadedFile | None = None,
    format: str = "",
) -> ImportJob:
    """Store an upload and queue it. The same content already imported into the org
    creates a job marked duplicate and nothing else."""
    job = ImportJob(
        organization=organization,
        created_by_id=user.pk if user.is_authenticated else None,
        original_name=(upload.name or "upload")[:300],
        format=format,
        size_bytes=(upload.size or 0) + ((second_upload.size or 0) if second_upload else 0),
    )
    digest = _save_upload(job, "file", upload)
    if second_upload is not None:
        job.original_name = f"{upload.name} + {second_upload.name}"[:300]
        second = _save_upload(job, "second_file", second_upload)
        # A Batch pair is the same content whichever file came first.
        digest = hashlib.sha256("".join(sorted([digest, second])).encode()).hexdigest()
    job.content_sha256 = digest
    previous = ImportJob.objects.filter(
        organization=organization, content_sha256=digest, status=ImportStatus.SUCCEEDED
    ).first()
    if previous is not None:
        job.status = ImportStatus.DUPLICATE
        job.duplicate_of = previous
        job.finished = timezone.now()
        job.save()
        return job
    job.save()
    from .tasks import import_job_run  # tasks import services: import here to avoid a cycle

    transaction.on_commit(lambda: import_job_run.delay(job.id))
    return job


def file_sha256(paths: list[Path]) -> str:
    digests = []
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while piece := handle.read(1024 * 1024):
                digest.update(piece)
        digests.append(digest.hexdigest())
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


def import_job_claim(job_id: int, *, stale_after: timedelta) -> ImportJob | None:
    """Move a pending job to running with one conditional UPDATE: a re-delivered task
    finds nothing to claim and does nothing. A job 'running' for longer than a task may
    live lost its worker (killed, out of memory); its transaction rolled back, so the
    redelivered task may take it again."""
    now = timezone.now()
    claimable = Q(status=ImportStatus.PENDING) | Q(
        status=ImportStatus.RUNNING, started__lt=now - stale_after
    )
    claimed = ImportJob.objects.filter(claimable, id=job_id).update(
        status=ImportStatus.RUNNING, started=now
    )
    return ImportJob.objects.get(id=job_id) if claimed else None


def import_job_process(job: ImportJob, *, paths: list[Path] | None = None) -> ImportJob:
    """Parse, analyse and store a claimed job's file(s), all or nothing."""
    if paths is None:
        paths = [Path(job.file.path)]
        if job.second_file:
            paths.append(Path(job.second_file.path))
    names = {paths[0]: job.original_name.split(" + ")[0]}
    if len(paths) > 1:
        names[paths[1]] = job.original_name.split(" + ")[-1]
    bytes_done = 0

    def on_progress(done: int, total: int) -> None:
        nonlocal bytes_done
        bytes_done = done

    def on_chunk(totals: ImportTotals) -> None:
        cache.set(
            _progress_key(job),
            {
                "bytes_done": bytes_done,
                "conversations": totals.conversations,
                "turns": totals.turns,
                "messages": totals.messages,
            },
            timeout=24 * 3600,
        )

    try:
        with transaction.atomic():
            transcripts = parse_files(
                paths,
                format=job.format or None,
                display_names=names,
                max_bytes=settings.COSTLAB_MAX_UPLOAD_BYTES,
                on_progress=on_progress,
            )
            totals = transcripts_store(
                organization=job.organization, transcripts=transcripts, job=job, on_chunk=on_chunk
            )
            if totals.conversations == 0:
                raise ImportFailed(f"{job.original_name}: no conversations found in the file")
            job.status = ImportStatus.SUCCEEDED
            job.conversations, job.turns, job.messages = (
                totals.conversations,
                totals.turns,
                totals.messages,
            )
            job.tokens, job.cost, job.unpriced_turns = (
                totals.tokens,
                totals.cost,
                totals.unpriced_turns,
            )
            job.warnings = totals.warnings
            job.bytes_done = job.size_bytes
            job.finished = timezone.now()
            job.save()
    except (ParseError, ImportFailed) as exc:
        _fail(job, str(exc))
    except IntegrityError:
        # Another job with the same content won the race: this one is a duplicate.
        previous = ImportJob.objects.filter(
            organization=job.organization,
            content_sha256=job.content_sha256,
            status=ImportStatus.SUCCEEDED,
        ).first()
        if previous is None:
            logger.exception("import job %s refused by the database", job.id)
            _fail(
                job,
                "the database refused a value of this file (a negative or oversized token "
                "count?); nothing was stored",
            )
            job.refresh_from_db()
            return job
        ImportJob.objects.filter(id=job.id).update(
            status=ImportStatus.DUPLICATE, duplicate_of=previous, finished=timezone.now()
        )
    except Exception as exc:
        # A bug or a lost database must not leave the job "running" forever; the
        # transaction already rolled back, so nothing of the file is stored.
        logger.exception("import job %s crashed", job.id)
        _fail(job, f"internal error while importing ({type(exc).__name__}); nothing was stored")
        raise
    job.refresh_from_db()
    cache.delete(_progress_key(job))
    return job


def _fail(job: ImportJob, error: str) -> None:
    ImportJob.objects.filter(id=job.id).update(
        status=ImportStatus.FAILED,
        error=error[:5000],
        finished=timezone.now(),
        conversations=0,
        turns=0,
        messages=0,
    )


def import_path(
    *,
    organization: Organization,
    paths: list[Path],
    format: str = "",
) -> ImportJob:
    """The command-line import: the same job, service and guarantees as an upload."""
    digest = file_sha256(paths)
    name = " + ".join(p.name for p in paths)
    job = ImportJob.objects.create(
        organization=organization,
        original_name=name[:300],
        format=format,
        size_bytes=sum(p.stat().st_size for p in paths),
        content_sha256=digest,
        status=ImportStatus.RUNNING,
        started=timezone.now(),
    )
    previous = ImportJob.objects.filter(
        organization=organization, content_sha256=digest, status=ImportStatus.SUCCEEDED
    ).first()
    if previous is not None:
        ImportJob.objects.filter(id=job.id).update(
            status=ImportStatus.DUPLICATE, duplicate_of=previous, finished=timezone.now()
        )
        job.refresh_from_db()
        return job
    return import_job_process(job, paths=paths)


# ---------------------------------------------------------------------------
# Price book imports
# ---------------------------------------------------------------------------


@dataclass
class PriceImportResult:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def _same_rates(row: ModelPrice, fields: dict[str, Any]) -> bool:
    return all(
        getattr(row, name) == value for name, value in fields.items() if name.endswith("_per_1m")
    )


@transaction.atomic
def prices_import(
    *,
    entries: list[Any],
    effective_from: datetime,
    organization: Organization | None = None,
) -> PriceImportResult:
    """Add dated rows from an external price table. Never rewrites a row: a model whose
    current rates are unchanged gets nothing new; a row already starting at that instant
    is left as it is."""
    result = PriceImportResult()
    for entry in entries:
        scope = ModelPrice.objects.filter(organization=organization, model=entry.model)
        if scope.filter(effective_from=effective_from).exists():
            result.existing.append(entry.model)
            continue
        current = (
            scope.filter(effective_from__lte=effective_from).order_by("-effective_from").first()
        )
        if current is not None and _same_rates(current, entry.fields):
            result.unchanged.append(entry.model)
            continue
        ModelPrice.objects.create(
            organization=organization,
            model=entry.model,
            effective_from=effective_from,
            source="litellm",
            notes="Imported from LiteLLM's model_prices_and_context_window.json.",
            **entry.fields,
        )
        result.created.append(entry.model)
    return result


# ---------------------------------------------------------------------------
# Re-pricing stored usage
# ---------------------------------------------------------------------------

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


def _reprice(record: UsageRecord, book: PriceBook) -> bool:
    """Price one stored record again from its buckets; True when anything changed."""
    if record.raw:  # the usage as received is the source of truth (audio parts included)
        buckets = buckets_from_usage(usage_from_dict(record.raw))
    else:
        buckets = Buckets(
            input_uncached=record.input_uncached,
            input_cached=record.input_cached,
            input_cache_write=record.input_cache_write,
            output=record.output,
            reasoning=record.reasoning_tokens,
        )
    priced = usage_price(
        book=book,
        model=record.model,
        at=record.occurred_at,
        buckets=buckets,
        service_tier=record.turn.service_tier or None,
        batch=record.turn.is_batch,
    )
    cost = priced.cost
    new = {
        "price_id": priced.row.pk if priced.row else None,
        "cost_input_uncached": cost.input_uncached if cost else None,
        "cost_input_cached": cost.input_cached if cost else None,
        "cost_input_cache_write": cost.input_cache_write if cost else None,
        "cost_output": cost.output if cost else None,
        "cost_total": cost.total if cost else None,
        "cost_uncached": priced.cost_uncached,
    }
    if all(getattr(record, name) == value for name, value in new.items()):
        return False
    for name, value in new.items():
        setattr(record, name, value)
    return True


@transaction.atomic
def costs_recompute(
    *,
    organization: Organization | None = None,
    since: datetime | None = None,
    user: AbstractBaseUser | AnonymousUser | None = None,
) -> CostRecompute:
    """Re-price stored usage with the price book as it is now, and log what changed."""
    log = CostRecompute.objects.create(
        organization=organization,
        since=since,
        requested_by_id=user.pk if user is not None and user.is_authenticated else None,
    )
    records = UsageRecord.objects.select_related("turn").order_by("id")
    if organization is not None:
        records = records.filter(organization=organization)
    if since is not None:
        records = records.filter(occurred_at__gte=since)
    books: dict[int, PriceBook] = {}
    before = after = Decimal(0)
    batch: list[UsageRecord] = []
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
            after += record.cost_total or 0
        if len(batch) >= RECOMPUTE_BATCH:
            UsageRecord.objects.bulk_update(batch, COST_FIELDS)
            log.changed += len(batch)
            batch = []
    UsageRecord.objects.bulk_update(batch, COST_FIELDS)
    log.changed += len(batch)
    log.cost_before, log.cost_after, log.finished = before, after, timezone.now()
    log.save()
    return log


def costs_recompute_by_ids(*, organization_id: int | None, user_id: int | None) -> CostRecompute:
    from django.contrib.auth import get_user_model

    organization = Organization.objects.get(pk=organization_id) if organization_id else None
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    return costs_recompute(organization=organization, user=user)
