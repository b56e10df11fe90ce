"""An import analyses chunk n + 1 on a second thread while it writes chunk n
(services/transcripts.py): still all or nothing, the same errors in the same order, the
rows in file order, and no query on that thread."""

from __future__ import annotations

import gc
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from conversations.models import (
    Conversation,
    ImportStatus,
    Organization,
)
from conversations.services import imports, transcripts
from pricing.book import PriceBook
from pricing.models import ModelPrice

from .factories import OrganizationFactory
from .import_checks import assert_nothing_stored

pytestmark = pytest.mark.django_db

CHUNK = 2


def _chat_line(n: int, *, role: str = "assistant", content: str | None = None) -> str:
    return json.dumps(
        {
            "model": "gpt-4o-mini",
            "title": f"conversation {n}",
            "messages": [
                {"role": "user", "content": f"question {n}"},
                {"role": role, "content": content if content is not None else f"answer {n}"},
            ],
        }
    )


def _chat_file(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _chunks_written(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The conversations of each chunk written, in order."""
    written: list[int] = []
    store = transcripts._chunk_store

    def counted(rows: transcripts.ChunkRows) -> list[int]:
        ids = store(rows)
        written.append(len(ids))
        return ids

    monkeypatch.setattr(transcripts, "_chunk_store", counted)
    return written


def test_it_stores_the_chunks_in_file_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transcripts, "CHUNK", CHUNK)
    written = _chunks_written(monkeypatch)
    path = _chat_file(tmp_path / "chats.jsonl", [_chat_line(n) for n in range(7)])
    org = OrganizationFactory.create()
    job = imports.import_path(organization=org, paths=[path])
    assert job.status == ImportStatus.SUCCEEDED, job.error
    assert written == [2, 2, 2, 1]
    titles = Conversation.objects.filter(organization=org).order_by("pk")
    assert list(titles.values_list("title", flat=True)) == [f"conversation {n}" for n in range(7)]
    assert (job.conversations, job.turns, job.messages) == (7, 7, 14)


def test_bad_input_in_a_later_chunk_names_its_line_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transcripts, "CHUNK", CHUNK)
    written = _chunks_written(monkeypatch)
    lines = [_chat_line(n) for n in range(6)]
    lines[4] = _chat_line(4, role="wizard")  # the third chunk
    path = _chat_file(tmp_path / "chats.jsonl", lines)
    org = OrganizationFactory.create()
    job = imports.import_path(organization=org, paths=[path])
    assert job.status == ImportStatus.FAILED
    assert job.error.startswith("chats.jsonl line 5, field messages[1].role: unknown role")
    # The chunks before it were written (and analysed) before the import failed.
    assert written == [2, 2]
    assert (job.conversations, job.turns, job.messages) == (0, 0, 0)
    assert_nothing_stored(org)


def test_an_earlier_chunks_failed_write_is_raised_before_a_later_chunks_bad_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is read a chunk ahead of the writes; a one-thread import would meet the
    failure of chunk 1's write before the bad line of chunk 2, and so does this one."""
    monkeypatch.setattr(transcripts, "CHUNK", CHUNK)
    store = transcripts._chunk_store

    def refused(rows: transcripts.ChunkRows) -> list[int]:
        store(rows)
        raise RuntimeError("chunk 1 refused")

    monkeypatch.setattr(transcripts, "_chunk_store", refused)
    lines = [_chat_line(0), _chat_line(1), _chat_line(2, role="wizard"), _chat_line(3)]
    path = _chat_file(tmp_path / "chats.jsonl", lines)
    org = OrganizationFactory.create()
    with pytest.raises(RuntimeError, match="chunk 1 refused"):
        imports.import_path(organization=org, paths=[path])
    assert_nothing_stored(org)


def test_the_analysis_runs_on_one_thread_kept_between_imports_without_a_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transcripts, "CHUNK", CHUNK)
    seen: list[tuple[threading.Thread, bool]] = []
    build = transcripts._chunk_build

    def observed(**kwargs: Any) -> transcripts.BuiltChunk:
        built = build(**kwargs)
        seen.append((threading.current_thread(), connection.connection is None))
        return built

    monkeypatch.setattr(transcripts, "_chunk_build", observed)
    org = OrganizationFactory.create()
    for name in ("first.jsonl", "second.jsonl"):
        lines = [_chat_line(n) for n in range(5)] + [_chat_line(9, content=name)]
        job = imports.import_path(organization=org, paths=[_chat_file(tmp_path / name, lines)])
        assert job.status == ImportStatus.SUCCEEDED, job.error
    assert len(seen) == 6
    # One thread for both imports (tiktoken is fastest on the thread that used it first).
    assert len({id(thread) for thread, _ in seen}) == 1
    for thread, unconnected in seen:
        assert (
            thread.name.startswith("import-analysis") and thread is not threading.current_thread()
        )
        assert unconnected


def test_a_query_on_the_analysis_thread_fails_the_import_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A price book whose rate cells were not loaded ahead reads them on first use: on the
    analysis thread that would be another connection, outside the import's transaction."""

    def lazy(organization: Organization | None) -> PriceBook:
        return PriceBook(rows=list(ModelPrice.objects.all()))

    monkeypatch.setattr(PriceBook, "for_organization", staticmethod(lazy))
    path = _chat_file(tmp_path / "chats.jsonl", [_chat_line(n) for n in range(3)])
    org = OrganizationFactory.create()
    with pytest.raises(RuntimeError, match="analysis thread ran a query"):
        imports.import_path(organization=org, paths=[path])
    assert_nothing_stored(org)


def test_a_written_chunk_is_let_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Memory stays that of a chunk or two, whatever the file's size: a chunk's rows are
    # freed once written (every chunk's kept alive held a 500 MB file's rows: 2 GB).
    monkeypatch.setattr(transcripts, "CHUNK", CHUNK)
    alive: list[int] = []
    store = transcripts._chunk_store

    def counted(rows: transcripts.ChunkRows) -> list[int]:
        gc.collect()
        alive.append(sum(type(o) is transcripts.BuiltChunk for o in gc.get_objects()))
        return store(rows)

    monkeypatch.setattr(transcripts, "_chunk_store", counted)
    path = _chat_file(tmp_path / "chats.jsonl", [_chat_line(n) for n in range(20)])
    job = imports.import_path(organization=OrganizationFactory.create(), paths=[path])
    assert job.status == ImportStatus.SUCCEEDED, job.error
    assert len(alive) == 10
    assert max(alive) <= 2  # the chunk being written and the next one, analysed meanwhile
