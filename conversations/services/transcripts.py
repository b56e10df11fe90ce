"""Analysed transcripts stored as conversations, messages, turns and usage records.

Transcripts are analysed and written in chunks, so a 500 MB file never sits in memory.
The caller owns the transaction (an import is all or nothing)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from itertools import islice

from django.db.models import Q
from django.utils import timezone

from pricing.book import PriceBook

from ..engine.analysis import CallAnalysis, analyze
from ..engine.cache import MissReason as EngineMissReason
from ..engine.types import Call, Transcript, located_warnings
from ..hashing import transcript_sha256
from ..models import (
    Conversation,
    ConversationSource,
    ImportJob,
    Message,
    Organization,
    Turn,
    UsageRecord,
)
from ..ranges import request_ranges
from .usage import turn_usage_records

CHUNK = 200
# Without a recorded retention scenario, simulate OpenAI's usual 5-10 minutes: take 10.
DEFAULT_RETENTION_SECONDS = 600
WARNINGS_KEPT = 200


@dataclass
class ImportTotals:
    conversations: int = 0
    turns: int = 0
    messages: int = 0
    tokens: int = 0
    cost: Decimal | None = None
    unpriced_turns: int = 0
    warnings: list[str] = field(default_factory=list)
    # Conversations already imported from another file, not stored again: by content, and
    # (transcripts only) by conversation id.
    skipped_same_content: int = 0
    skipped_same_id: int = 0

    @property
    def skipped(self) -> int:
        return self.skipped_same_content + self.skipped_same_id

    def add_billing(self, record: UsageRecord) -> None:
        self.tokens += record.total_tokens
        if record.cost_total is None:
            self.unpriced_turns += 1
        else:
            self.cost = (self.cost or Decimal(0)) + record.cost_total

    def warn(self, text: str) -> None:
        if len(self.warnings) < WARNINGS_KEPT:
            self.warnings.append(text)


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


def _turn_build(
    conversation: Conversation, messages: list[Message], n: int, r: CallAnalysis
) -> Turn:
    kind, detail = _miss_fields(r.miss_reason)
    return Turn(
        conversation=conversation,
        index=n,
        request_ranges=request_ranges(r.call.request),
        response=messages[r.call.response] if r.call.response is not None else None,
        model=(r.model or conversation.model)[:200],
        service_tier=(r.call.service_tier or "")[:20],
        prompt_cache_key=(r.call.prompt_cache_key or "")[:300],
        cache_retention=(r.call.cache_retention or "")[:20],
        cache_options=r.call.cache_options,
        is_batch=r.call.batch,
        tools=r.call.tools,
        response_format=r.call.response_format,
        tool_choice=r.call.tool_choice,
        max_output_tokens=r.call.max_output_tokens,
        external_id=(r.call.external_id or "")[:300],
        started_at=r.call.started_at,
        latency_ms=r.call.latency_ms,
        estimated_prompt_tokens=r.estimated_prompt_tokens,
        estimated_completion_tokens=r.estimated_completion_tokens,
        simulated_cached_tokens=r.simulated_cached_tokens,
        simulated_cache_write_tokens=r.simulated_write_tokens,
        miss_reason=kind,
        miss_detail=detail,
        over_context=r.over_context,
    )


def _conversation_store(
    *,
    organization: Organization,
    job: ImportJob | None,
    book: PriceBook,
    transcript: Transcript,
    digest: str,
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
        content_sha256=digest,
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
        _turn_build(conversation, messages, n, r) for n, r in enumerate(results)
    )
    records: list[UsageRecord] = []
    for turn, result in zip(turns, results, strict=True):
        at = result.call.started_at or conversation.started_at or fallback_time
        turn_records = turn_usage_records(
            turn=turn, conversation=conversation, result=result, book=book, at=at
        )
        for record in turn_records:
            if record.is_billing:
                totals.add_billing(record)
        records.extend(turn_records)
    UsageRecord.objects.bulk_create(records)
    totals.conversations += 1
    totals.turns += len(turns)
    totals.messages += len(messages)
    for warning in located_warnings(transcript):
        totals.warn(warning)


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


def _dedupe_id(transcript: Transcript) -> tuple[str, str] | None:
    """The id that names the same conversation in another file: a transcript's own id (a
    ChatGPT export's conversation id, say). Not a Batch custom_id (each batch reuses
    "request-1"), and not an API log's conversation: a log rotated mid-conversation holds
    its later calls under the same id, and those must go in; a log imported twice is
    caught by its content."""
    source = _source_of(transcript)
    if source != ConversationSource.IMPORT or not transcript.external_id:
        return None
    return source, transcript.external_id[:300]


def _not_yet_imported(
    *,
    organization: Organization,
    job: ImportJob | None,
    chunk: list[Transcript],
    totals: ImportTotals,
) -> list[tuple[Transcript, str]]:
    """The chunk's conversations with their digests, less those another import stored."""
    digests = [transcript_sha256(t) for t in chunk]
    if job is None:  # not an import (demo data, tests): nothing to compare with
        return list(zip(chunk, digests, strict=True))
    ids = {key[1] for t in chunk if (key := _dedupe_id(t)) is not None}
    earlier = (
        Conversation.objects.filter(organization=organization)
        .exclude(import_job=job)
        .filter(Q(content_sha256__in=digests) | Q(external_id__in=ids))
        .values_list("content_sha256", "source", "external_id")
    )
    seen_digests: set[str] = set()
    seen_ids: set[tuple[str, str]] = set()
    for digest, source, external_id in earlier:
        seen_digests.add(digest)
        seen_ids.add((source, external_id))
    fresh: list[tuple[Transcript, str]] = []
    for transcript, digest in zip(chunk, digests, strict=True):
        if digest in seen_digests:
            totals.skipped_same_content += 1
        elif _dedupe_id(transcript) in seen_ids:
            totals.skipped_same_id += 1
        else:
            fresh.append((transcript, digest))
    return fresh


def transcripts_store(
    *,
    organization: Organization,
    transcripts: Iterable[Transcript],
    job: ImportJob | None = None,
    retention_seconds: int = DEFAULT_RETENTION_SECONDS,
    on_chunk: Callable[[ImportTotals], None] | None = None,
) -> ImportTotals:
    """Analyse and store transcripts. The caller owns the transaction. For an import
    (`job`), conversations another import already stored are counted, not stored."""
    book = PriceBook.for_organization(organization)
    totals = ImportTotals()
    now = timezone.now()
    for chunk in _chunks(transcripts, CHUNK):
        fresh = _not_yet_imported(organization=organization, job=job, chunk=chunk, totals=totals)
        analysis = analyze(
            [transcript for transcript, _ in fresh],
            profile_for=book.profile,
            policy_for=book.policy,
            rates_for=partial(book.call_rates, now=now),
            retention_seconds=retention_seconds,
            org=str(organization.code),
        )
        for (transcript, digest), result in zip(fresh, analysis.conversations, strict=True):
            _conversation_store(
                organization=organization,
                job=job,
                book=book,
                transcript=transcript,
                digest=digest,
                results=result.calls,
                fallback_time=now,
                totals=totals,
            )
        if on_chunk is not None:
            on_chunk(totals)
    if totals.skipped:
        totals.warnings.insert(
            0,
            f"{totals.skipped} conversation(s) already imported from another file, not "
            f"stored again ({totals.skipped_same_content} with the same content, "
            f"{totals.skipped_same_id} with the same conversation id)",
        )
        del totals.warnings[WARNINGS_KEPT:]
    return totals
