"""Imports by COPY (PostgreSQL) write exactly what the ORM path writes, and nothing at all
when they fail part-way: the shared oracles and the real-log corpus go through both paths
and every stored column is compared, surrogate ids, codes and `created` aside."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet

from conversations.models import (
    Conversation,
    ImportJob,
    ImportStatus,
    Message,
    Turn,
    UsageRecord,
)
from conversations.services import bulk, imports, transcripts

from .factories import OrganizationFactory
from .import_checks import assert_nothing_stored

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's"),
]

REAL = Path(__file__).resolve().parent / "fixtures" / "real"
CORPUS = sorted([*REAL.glob("*.jsonl"), *REAL.glob("edge-cases/*.jsonl")])
ORACLE_IMPORTS = [
    ["fastchat_dummy_conversation_sharegpt.json"],  # 500 conversations: three chunks
    ["openai_cookbook_toy_chat_fine_tuning.jsonl"],
    ["litellm_batch_input_furniture.jsonl", "litellm_batch_output_sample.jsonl"],
    ["openai_apiref_batch_output_example.jsonl"],
    ["mitkury_example-conversation.json"],
]
# Set by the database or by Django for each row: never equal between two imports.
SURROGATE = {"id", "code", "created"}
JOB_RESULTS = (
    "status",
    "error",
    "conversations",
    "turns",
    "messages",
    "tokens",
    "cost",
    "unpriced_turns",
    "skipped_conversations",
    "warnings",
    "bytes_done",
)


def _writers(monkeypatch: pytest.MonkeyPatch, *, copy: bool) -> list[str]:
    """Take one path and record each chunk written through either, so the test knows which
    path actually ran."""
    monkeypatch.setattr(bulk, "COPY_VENDORS", frozenset({"postgresql"} if copy else ()))
    calls: list[str] = []
    for name in ("_rows_copy_write", "_rows_orm_write"):
        original: Callable[[transcripts.ChunkRows], list[int]] = getattr(transcripts, name)

        def spy(
            rows: transcripts.ChunkRows, name: str = name, original: Any = original
        ) -> list[int]:
            calls.append(name)
            ids: list[int] = original(rows)
            return ids

        monkeypatch.setattr(transcripts, name, spy)
    return calls


def _import(paths: list[Path], monkeypatch: pytest.MonkeyPatch, *, copy: bool) -> ImportJob:
    with monkeypatch.context() as patch:
        calls = _writers(patch, copy=copy)
        job = imports.import_path(organization=OrganizationFactory.create(), paths=paths)
    if job.conversations:
        expected = "_rows_copy_write" if copy else "_rows_orm_write"
        assert calls and set(calls) == {expected}
    return job


def _rows(rows: QuerySet[Any]) -> list[dict[str, Any]]:
    return [dict(row) for row in rows.order_by("id").values()]


def _stored(job: ImportJob) -> dict[str, list[dict[str, Any]]]:
    """Every row the import wrote, in id order (which must be the natural order), with
    foreign keys to rows of the same import replaced by their natural keys."""
    org_id = job.organization_id
    conversations = _rows(Conversation.objects.filter(import_job=job))
    rank = {row["id"]: n for n, row in enumerate(conversations)}
    messages = _rows(Message.objects.filter(conversation__import_job=job))
    turns = _rows(Turn.objects.filter(conversation__import_job=job))
    records = _rows(UsageRecord.objects.filter(conversation__import_job=job))
    message_key = {row["id"]: (rank[row["conversation_id"]], row["index"]) for row in messages}
    turn_key = {row["id"]: (rank[row["conversation_id"]], row["index"]) for row in turns}
    turn_started = {row["id"]: row["started_at"] for row in turns}
    conversation_started = {row["id"]: row["started_at"] for row in conversations}
    # Ids follow the order rows were built in, on both paths.
    assert list(message_key.values()) == sorted(message_key.values())
    assert list(turn_key.values()) == sorted(turn_key.values())
    for row in conversations:
        assert row.pop("organization_id") == org_id and row.pop("import_job_id") == job.id
    for row in messages:
        row["conversation_id"] = rank[row["conversation_id"]]
    for row in turns:
        row["conversation_id"] = rank[row["conversation_id"]]
        row["response_id"] = message_key.get(row["response_id"])
    for row in records:
        assert row.pop("organization_id") == org_id
        # A call with no time of its own is placed at the import's own time.
        if (
            turn_started[row["turn_id"]] is None
            and conversation_started[row["conversation_id"]] is None
        ):
            assert job.started is not None and job.finished is not None
            assert job.started <= row["occurred_at"] <= job.finished
            row["occurred_at"] = "the import's time"
        row["conversation_id"] = rank[row["conversation_id"]]
        row["turn_id"] = turn_key[row["turn_id"]]
    tables = {
        "conversations": conversations,
        "messages": messages,
        "turns": turns,
        "records": records,
    }
    return {
        name: [{k: v for k, v in row.items() if k not in SURROGATE} for row in rows]
        for name, rows in tables.items()
    }


def _compare(paths: list[Path], monkeypatch: pytest.MonkeyPatch) -> ImportJob:
    orm = _import(paths, monkeypatch, copy=False)
    copied = _import(paths, monkeypatch, copy=True)
    assert orm.status == ImportStatus.SUCCEEDED, orm.error
    assert {f: getattr(copied, f) for f in JOB_RESULTS} == {f: getattr(orm, f) for f in JOB_RESULTS}
    expected, got = _stored(orm), _stored(copied)
    for table in expected:
        assert len(got[table]) == len(expected[table]), table
        for number, (row, wanted) in enumerate(zip(got[table], expected[table], strict=True)):
            assert row == wanted, f"{table} row {number}"
    assert len(expected["records"]) >= orm.turns
    return copied


@pytest.mark.parametrize("names", ORACLE_IMPORTS, ids=lambda names: names[0])
def test_it_writes_the_same_rows_by_copy_as_by_the_orm_for_the_oracles(
    names: list[str], oracles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _compare([oracles / name for name in names], monkeypatch)
    assert job.conversations > 0


def test_it_writes_the_same_rows_by_copy_as_by_the_orm_for_the_real_logs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for path in CORPUS:
        job = _compare([path], monkeypatch)
        assert job.turns > 0, path.name


def _calls_log(path: Path, conversations: int, *, bad_latency_at: int | None = None) -> Path:
    """An API log of one call per conversation; the call `bad_latency_at` reports a
    negative latency, which the parser keeps and the database's CHECK refuses."""
    lines = []
    for n in range(conversations):
        line = {
            "conversation_id": f"c-{n}",
            "latency_ms": -5 if n == bad_latency_at else 700,
            "request": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"question {n}"}],
            },
            "response": {
                "id": f"r-{n}",
                "created": 1746000000 + n,
                "model": "gpt-4o-mini",
                "choices": [{"message": {"role": "assistant", "content": f"answer {n}"}}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3},
            },
        }
        lines.append(json.dumps(line))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "orm"])
def test_it_stores_nothing_when_the_database_refuses_a_row_of_a_later_chunk(
    copy: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = transcripts.CHUNK + 50
    path = _calls_log(tmp_path / "calls.jsonl", size, bad_latency_at=size - 1)
    with monkeypatch.context() as patch:
        calls = _writers(patch, copy=copy)
        org = OrganizationFactory.create()
        job = imports.import_path(organization=org, paths=[path])
    # The first chunk was written before the second one failed.
    assert len(calls) == 2
    assert job.status == ImportStatus.FAILED
    assert "the database refused a value of this file" in job.error
    assert (job.conversations, job.turns, job.messages) == (0, 0, 0)
    assert_nothing_stored(org)


def test_it_stores_nothing_when_an_import_crashes_after_a_chunk_was_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _calls_log(tmp_path / "calls.jsonl", 2 * transcripts.CHUNK + 1)
    original = transcripts._rows_copy_write
    written: list[int] = []

    def copy_then_crash(rows: transcripts.ChunkRows) -> list[int]:
        ids = original(rows)
        written.append(len(ids))
        # The rows are in the table, inside the import's transaction.
        assert Conversation.objects.filter(pk__in=ids).count() == len(ids)
        if len(written) == 2:
            raise RuntimeError("worker lost mid-import")
        return ids

    monkeypatch.setattr(bulk, "COPY_VENDORS", frozenset({"postgresql"}))
    monkeypatch.setattr(transcripts, "_rows_copy_write", copy_then_crash)
    org = OrganizationFactory.create()
    with pytest.raises(RuntimeError, match="worker lost"):
        imports.import_path(organization=org, paths=[path])
    assert written == [transcripts.CHUNK, transcripts.CHUNK]
    job = ImportJob.objects.get(organization=org)
    assert job.status == ImportStatus.FAILED and "internal error" in job.error
    assert_nothing_stored(org)
    # The same file goes in whole afterwards: the failure left no half import behind.
    monkeypatch.setattr(transcripts, "_rows_copy_write", original)
    again = imports.import_path(organization=org, paths=[path])
    assert again.status == ImportStatus.SUCCEEDED, again.error
    assert Conversation.objects.filter(organization=org).count() == 2 * transcripts.CHUNK + 1


def test_it_fills_the_defaults_django_fills_when_copying() -> None:
    org = OrganizationFactory.create()
    by_orm = Conversation.objects.create(organization=org)
    ids = bulk.ids_reserve(model=Conversation, count=2)
    assert ids[0] < ids[1] and by_orm.pk < ids[0]
    bulk.rows_copy(
        model=Conversation,
        rows=[{"organization_id": org.pk}, {"organization_id": org.pk}],
        ids=ids,
    )
    first, second = Conversation.objects.filter(pk__in=ids).order_by("pk")
    for copied in (first, second):
        for field in ("source", "external_id", "title", "model", "started_at", "warnings"):
            assert getattr(copied, field) == getattr(by_orm, field), field
        assert copied.created >= by_orm.created
    # A fresh uuid4 per row, as Model.__init__ draws one per instance.
    assert len({by_orm.code, first.code, second.code}) == 3 and first.code.version == 4


def test_it_refuses_rows_it_would_write_only_in_part() -> None:
    org = OrganizationFactory.create()
    ids = bulk.ids_reserve(model=Conversation, count=2)
    with pytest.raises(ValueError, match="Conversation has no column nonsense"):
        bulk.rows_copy(
            model=Conversation, rows=[{"organization_id": org.pk, "nonsense": 1}], ids=ids[:1]
        )
    # A later row with a column the first lacks would lose it: refused, not dropped.
    with pytest.raises(ValueError, match="rows differ in their columns"):
        bulk.rows_copy(
            model=Conversation,
            rows=[{"organization_id": org.pk}, {"organization_id": org.pk, "title": "lost"}],
            ids=ids,
        )


def test_it_checks_the_keys_to_tables_it_does_not_write_as_each_copy_ends() -> None:
    org = OrganizationFactory.create()
    conversation = Conversation.objects.create(organization=org)
    missing_org, missing_conversation = org.pk + 10_000, conversation.pk + 10_000
    with bulk.outside_keys_checked_now((Conversation, Message, Turn, UsageRecord)):
        # A conversation of an organization that does not exist fails at its statement ...
        with pytest.raises(IntegrityError), transaction.atomic():
            Conversation.objects.create(organization_id=missing_org)
        # ... while the keys between the tables an import writes wait for the commit as
        # before (the savepoint's rollback drops the pending check).
        with transaction.atomic():
            Message.objects.create(
                conversation_id=missing_conversation, index=0, role="user", data={}
            )
            transaction.set_rollback(True)
    # After the block the organization's key is deferred again.
    with transaction.atomic():
        Conversation.objects.create(organization_id=missing_org)
        transaction.set_rollback(True)
