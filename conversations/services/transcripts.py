"""Analysed transcripts stored as conversations, messages, turns and usage records.

Transcripts are analysed and written in chunks, so a 500 MB file never sits in memory.
The caller owns the transaction (an import is all or nothing)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from itertools import islice
from typing import Any

from django.db import DatabaseError, connection, models
from django.db.models import Q
from django.utils import timezone

from costlab.gc_spacing import spaced_collections
from pricing.book import PriceBook

from ..engine.analysis import ANALYSIS_CHUNK, CacheState, CallAnalysis, analyze
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
from . import bulk, chunk_sums, rollups
from .usage import turn_usage_fields

CHUNK = ANALYSIS_CHUNK
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

    def add_billing(self, *, tokens: int, cost: Decimal | None) -> None:
        self.tokens += tokens
        if cost is None:
            self.unpriced_turns += 1
        else:
            self.cost = (self.cost or Decimal(0)) + cost

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


def _miss_place(reason: EngineMissReason | None) -> tuple[int | None, int | None]:
    """Where a changed prefix diverged (token, message): what prefix breakers group by."""
    if reason is None or reason.kind != "prefix_changed":
        return None, None
    return reason.token, reason.message


def _turn_row(conversation_model: str, n: int, r: CallAnalysis) -> Row:
    kind, detail = _miss_fields(r.miss_reason)
    miss_token, miss_message = _miss_place(r.miss_reason)
    return {
        "index": n,
        "request_ranges": request_ranges(r.call.request),
        "model": (r.model or conversation_model)[:200],
        "service_tier": (r.call.service_tier or "")[:20],
        "prompt_cache_key": (r.call.prompt_cache_key or "")[:300],
        "end_user": (r.call.end_user or "")[:300],
        "api_key": (r.call.api_key or "")[:200],
        "project": (r.call.project or "")[:200],
        "cache_retention": (r.call.cache_retention or "")[:20],
        "cache_options": r.call.cache_options,
        "is_batch": r.call.batch,
        "tools": r.call.tools,
        "response_format": r.call.response_format,
        "tool_choice": r.call.tool_choice,
        "responses_api": r.call.responses_api,
        "max_output_tokens": r.call.max_output_tokens,
        "external_id": (r.call.external_id or "")[:300],
        "started_at": r.call.started_at,
        "latency_ms": r.call.latency_ms,
        "estimated_prompt_tokens": r.estimated_prompt_tokens,
        "estimated_completion_tokens": r.estimated_completion_tokens,
        "simulated_cached_tokens": r.simulated_cached_tokens,
        "simulated_cache_write_tokens": r.simulated_write_tokens,
        "miss_reason": kind,
        "miss_detail": detail,
        "miss_token": miss_token,
        "miss_message": miss_message,
        "over_context": r.over_context,
    }


# A row's columns by attribute name. Columns left out get the model field's default, on
# both paths (Model.__init__ for the ORM, bulk.rows_copy for COPY).
Row = dict[str, Any]


@dataclass
class ChunkRows:
    """A chunk's rows, in the order they are written: conversations, then messages, turns
    and usage records. A row names its parent by the parent's position in the chunk, since
    ids exist only once the parents are written (ORM) or reserved (COPY)."""

    conversations: list[Row] = field(default_factory=list)
    messages: list[Row] = field(default_factory=list)
    message_conversation: list[int] = field(default_factory=list)
    turns: list[Row] = field(default_factory=list)
    turn_conversation: list[int] = field(default_factory=list)
    turn_response: list[int | None] = field(default_factory=list)  # a position in messages
    records: list[Row] = field(default_factory=list)
    record_turn: list[int] = field(default_factory=list)


def _conversation_rows(
    *,
    rows: ChunkRows,
    organization: Organization,
    job: ImportJob | None,
    book: PriceBook,
    transcript: Transcript,
    digest: str,
    results: list[CallAnalysis],
    fallback_time: datetime,
    tags: dict[str, str],
) -> None:
    calls: list[Call] = [r.call for r in results]
    times = [c.started_at for c in calls if c.started_at is not None]
    model = (transcript.model or next((c.model for c in calls if c.model), "") or "")[:200]
    started_at = transcript.created_at or (min(times) if times else None)
    position = len(rows.conversations)
    rows.conversations.append(
        {
            "organization_id": organization.pk,
            "import_job_id": job.pk if job is not None else None,
            "source": _source_of(transcript),
            "external_id": (transcript.external_id or "")[:300],
            "title": (transcript.title or _title_from(transcript))[:300],
            "model": model,
            "started_at": started_at,
            "has_timestamps": bool(times),
            "warnings": transcript.warnings[:50],
            "content_sha256": digest,
            "tags": {**transcript.tags, **tags},
        }
    )
    first_message = len(rows.messages)
    message_times = transcript.message_times or []
    for i, m in enumerate(transcript.messages):
        rows.messages.append(
            {
                "index": i,
                "role": str(m.get("role", ""))[:20],
                "data": m,
                "sent_at": message_times[i] if i < len(message_times) else None,
            }
        )
    rows.message_conversation.extend([position] * len(transcript.messages))
    for n, result in enumerate(results):
        turn = _turn_row(model, n, result)
        response = result.call.response
        turn_position = len(rows.turns)
        rows.turns.append(turn)
        rows.turn_conversation.append(position)
        rows.turn_response.append(None if response is None else first_message + response)
        at = result.call.started_at or started_at or fallback_time
        records = turn_usage_fields(
            model=turn["model"], result=result, book=book, at=at, analysed_at=fallback_time
        )
        for record in records:
            record["organization_id"] = organization.pk
            rows.records.append(record)
            rows.record_turn.append(turn_position)


# Writes one table's rows, parents' ids already in them; the rows' ids, in order.
Insert = Callable[[type[models.Model], list[Row]], list[int]]


def _rows_write(rows: ChunkRows, insert: Insert) -> list[int]:
    """Table by table, each row's parent id filled in from the table written before."""
    conversation_ids = insert(Conversation, rows.conversations)
    for row, parent in zip(rows.messages, rows.message_conversation, strict=True):
        row["conversation_id"] = conversation_ids[parent]
    message_ids = insert(Message, rows.messages)
    for row, parent, response in zip(
        rows.turns, rows.turn_conversation, rows.turn_response, strict=True
    ):
        row["conversation_id"] = conversation_ids[parent]
        row["response_id"] = None if response is None else message_ids[response]
    turn_ids = insert(Turn, rows.turns)
    for row, turn in zip(rows.records, rows.record_turn, strict=True):
        row["turn_id"] = turn_ids[turn]
        row["conversation_id"] = rows.turns[turn]["conversation_id"]
    insert(UsageRecord, rows.records)
    return conversation_ids


def _orm_insert(model: type[models.Model], rows: list[Row]) -> list[int]:
    objects = model._default_manager.bulk_create([model(**row) for row in rows])
    return [obj.pk for obj in objects]


def _copy_insert(model: type[models.Model], rows: list[Row]) -> list[int]:
    ids = bulk.ids_reserve(model=model, count=len(rows))
    bulk.rows_copy(model=model, rows=rows, ids=ids)
    return ids


def _rows_orm_write(rows: ChunkRows) -> list[int]:
    """SQLite, and any database without COPY: Django's bulk_create, ids from RETURNING."""
    return _rows_write(rows, _orm_insert)


def _rows_copy_write(rows: ChunkRows) -> list[int]:
    """PostgreSQL: ids reserved from each table's sequence, then one COPY a table, its
    keys to the organization, price rows and job checked as it ends (bulk.
    outside_keys_checked_now)."""
    with bulk.outside_keys_checked_now((Conversation, Message, Turn, UsageRecord)):
        return _rows_write(rows, _copy_insert)


@dataclass
class BuiltChunk:
    """A chunk's conversations analysed and their rows built, not yet written."""

    transcripts: list[Transcript]
    rows: ChunkRows


def _no_queries(*args: object) -> None:
    raise RuntimeError("an import's analysis thread ran a query outside the import's transaction")


def _chunk_build(
    *,
    organization: Organization,
    job: ImportJob | None,
    book: PriceBook,
    fresh: list[tuple[Transcript, str]],
    now: datetime,
    retention_seconds: int,
    cache: CacheState,
    tags: dict[str, str],
) -> BuiltChunk:
    """Analyse a chunk's conversations and build their rows: pure Python, run on the
    import's analysis thread (transcripts_store). That thread's database connection would
    be outside the import's transaction, so a query there fails loudly instead of reading
    another snapshot; the price book's rows and rates were loaded before."""
    rows = ChunkRows()
    with connection.execute_wrapper(_no_queries):
        analysis = analyze(
            [transcript for transcript, _ in fresh],
            profile_for=book.profile,
            policy_for=book.policy,
            rates_for=partial(book.call_rates, now=now),
            retention_seconds=retention_seconds,
            org=str(organization.code),
            cache=cache,
        )
        for (transcript, digest), result in zip(fresh, analysis.conversations, strict=True):
            _conversation_rows(
                rows=rows,
                organization=organization,
                job=job,
                book=book,
                transcript=transcript,
                digest=digest,
                results=result.calls,
                fallback_time=now,
                tags=tags,
            )
    return BuiltChunk(transcripts=[transcript for transcript, _ in fresh], rows=rows)


_ANALYST: ThreadPoolExecutor | None = None
_ANALYST_LOCK = threading.Lock()


def analysis_thread() -> ThreadPoolExecutor:
    """The process's analysis thread, kept from one import to the next. One thread, not one
    per import: tiktoken's regex keeps its scratch space in pools whose fast path belongs to
    the first thread that used them, and every later thread takes the slow path (callgrind:
    +214M instructions, a third more time, for 5,522 messages). Imports running at once in
    one process share it: their chunks queue in order, so one import's analysis waits for
    the other's chunk in progress (at most about two chunks each: no deadlock), and in
    Celery's threads pool the imports of one process analyse one after another."""
    global _ANALYST
    with _ANALYST_LOCK:
        if _ANALYST is None:
            _ANALYST = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-analysis")
        return _ANALYST


def _forget_analysis_thread() -> None:
    # A forked child (a Celery prefork worker) has no copy of its parent's threads.
    global _ANALYST, _ANALYST_LOCK
    _ANALYST, _ANALYST_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_analysis_thread)


@contextmanager
def _awaited() -> Iterator[Callable[[Future[BuiltChunk]], Future[BuiltChunk]]]:
    """Futures an import hands the shared analysis thread, settled before it returns: one
    still queued when the import fails is cancelled, one running is waited for, so no
    chunk of a finished import is still being analysed. That wait cannot be interrupted:
    a task's soft time limit ends the import once the chunk in progress is analysed."""
    futures: list[Future[BuiltChunk]] = []

    def track(future: Future[BuiltChunk]) -> Future[BuiltChunk]:
        # Only the unfinished ones: a done future holds its chunk's rows, and keeping every
        # chunk's held a whole file in memory (2 GB at 500 MB, against 0.3 GB one at a time).
        futures[:] = [f for f in futures if not f.done()]
        futures.append(future)
        return future

    try:
        yield track
    finally:
        for future in futures:
            future.cancel()
        wait(futures)


def _chunk_build_off_the_database(**kwargs: Any) -> BuiltChunk:
    """_chunk_build on the analysis thread. Only a bug opens that thread's connection (its
    first query raises), and then it is closed here rather than left to the garbage
    collector, which would warn about it in whatever runs next."""
    try:
        return _chunk_build(**kwargs)
    finally:
        connection.close()


def _totals_add(totals: ImportTotals, built: BuiltChunk) -> None:
    """A built chunk's counts, billing and warnings, in file order (the cost is a running
    Decimal sum: added record by record in the same order, it is the same to the digit)."""
    for record in built.rows.records:
        if record["is_billing"]:
            totals.add_billing(tokens=record["total_tokens"], cost=record["cost_total"])
    totals.conversations += len(built.rows.conversations)
    totals.turns += len(built.rows.turns)
    totals.messages += len(built.rows.messages)
    for transcript in built.transcripts:
        for warning in located_warnings(transcript):
            totals.warn(warning)


def _chunk_store(rows: ChunkRows) -> list[int]:
    """Write one chunk's conversations with their messages, turns and usage records, in
    the caller's transaction; the ids of the conversations written, in file order (the
    rows get their ids filled in)."""
    if bulk.copy_supported():
        return _rows_copy_write(rows)
    return _rows_orm_write(rows)


def _analysed(building: Future[BuiltChunk]) -> BuiltChunk:
    """The analysis thread's chunk, once done; what it raised is raised here, on the
    import's thread, where a one-thread import would have met it."""
    return building.result()


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
    tags: dict[str, str] | None = None,
) -> ImportTotals:
    """Analyse and store transcripts. The caller owns the transaction. For an import
    (`job`), conversations another import already stored are counted, not stored.
    `tags` go on every conversation, over the tags a transcript brings itself."""
    book = PriceBook.for_organization(organization)
    totals = ImportTotals()
    now = timezone.now()

    def stored(built: BuiltChunk) -> None:
        _totals_add(totals, built)
        rows = built.rows
        ids = _chunk_store(rows)
        # The chunk's rows are written: their sums go into the rollups in the same
        # transaction. With COPY, summed here from the rows in memory (no statement
        # per table whose plan depends on statistics the new rows do not have yet);
        # with the ORM, computed by the database from those rows.
        if bulk.copy_supported():
            rollups.chunk_added(
                organization=organization,
                chunk=chunk_sums.ChunkInput(
                    conversations=rows.conversations,
                    conversation_ids=ids,
                    turns=rows.turns,
                    turn_conversation=rows.turn_conversation,
                    records=rows.records,
                    record_turn=rows.record_turn,
                ),
                staged=staged,
            )
        else:
            rollups.conversations_added(conversation_ids=ids, staged=staged)
        if on_chunk is not None:
            on_chunk(totals)

    # Two stages a chunk apart: while this thread writes chunk n (its COPY mostly waits for
    # the server to parse and index the rows, the GIL released), a second thread analyses
    # chunk n + 1 (tiktoken, which releases the GIL too, and the cache simulator). Reading
    # the file and every query stay on this thread, the only one in the import's
    # transaction; results are taken in file order, so rows, ids and totals are a
    # one-thread import's. The organization x day sums wait in the transaction until the
    # last chunk (rollups.Staged: two imports into one organization would deadlock
    # otherwise). A chunk's rows are many short-lived objects: fewer collections
    # (costlab/gc_spacing.py).
    analyst = analysis_thread()
    # One prompt cache for the whole file, carried from chunk to chunk (as analyze_chunked);
    # only the analysis thread touches it, one chunk after the other.
    cache = CacheState(retention_seconds)
    with spaced_collections(), rollups.staged() as staged, _awaited() as pending:
        chunks = _chunks(transcripts, CHUNK)
        building: Future[BuiltChunk] | None = None
        while True:
            following: Future[BuiltChunk] | None = None
            failure: Exception | None = None
            try:
                chunk = next(chunks, None)
                if chunk is not None:
                    fresh = _not_yet_imported(
                        organization=organization, job=job, chunk=chunk, totals=totals
                    )
                    following = pending(
                        analyst.submit(
                            _chunk_build_off_the_database,
                            organization=organization,
                            job=job,
                            book=book,
                            fresh=fresh,
                            now=now,
                            retention_seconds=retention_seconds,
                            cache=cache,
                            tags=tags or {},
                        )
                    )
            except DatabaseError:
                raise  # the transaction is broken: writing chunk n would only hide why
            except Exception as exc:
                # Bad input in chunk n + 1 (a ParseError naming its file and line): raised
                # once chunk n is stored, as a one-thread import would, so an error of
                # chunk n (a value the database refuses) still comes first.
                failure = exc
            if building is not None:
                stored(_analysed(building))
            if failure is not None:
                raise failure
            if following is None:
                break
            building = following
    if totals.skipped:
        totals.warnings.insert(
            0,
            f"{totals.skipped} conversation(s) already imported from another file, not "
            f"stored again ({totals.skipped_same_content} with the same content, "
            f"{totals.skipped_same_id} with the same conversation id)",
        )
        del totals.warnings[WARNINGS_KEPT:]
    return totals
