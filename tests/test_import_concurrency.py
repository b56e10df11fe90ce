"""Two imports into one organization at the same time, each on its own connection, both
succeed and leave exact rollups (PostgreSQL).

An upsert locks its rollup row until the import commits. Added chunk by chunk, the first
import would hold the keys of its first chunk and wait for the second's, which holds its own
first keys and waits for the first's: a deadlock that PostgreSQL ends by failing one of them.
Here each import's first chunk lands on the key the other's second chunk needs, and neither
goes on until both have written their first chunk."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from conversations.models import (
    CacheDay,
    ConversationTotals,
    ImportJob,
    ImportStatus,
    Organization,
    UsageDay,
)
from conversations.services import imports, rollups, transcripts

from .factories import OrganizationFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are PostgreSQL's"),
]


def _chat_file(path: Path, models: list[str], tag: str) -> Path:
    """A chat JSONL of one conversation a line, each on the model given."""
    lines = [
        json.dumps(
            {
                "model": model,
                "messages": [
                    {"role": "user", "content": f"{tag}: question {n} " * 20},
                    {"role": "assistant", "content": f"{tag}: answer {n} " * 30},
                ],
            }
        )
        for n, model in enumerate(models)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _imports_at_once(
    organization: Organization, paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> list[Any]:
    """Run one import a thread; each waits before writing its second chunk until every
    import has written (and added to the rollups) its first. What each thread ended with:
    its job, or the exception it raised."""
    meeting = threading.Barrier(len(paths), timeout=60)
    writes: dict[int, int] = {}
    original = transcripts._rows_copy_write

    def write(rows: transcripts.ChunkRows) -> list[int]:
        me = threading.get_ident()
        writes[me] = writes.get(me, 0) + 1
        if writes[me] == 2:
            meeting.wait()
        ids: list[int] = original(rows)
        return ids

    outcomes: list[Any] = [None] * len(paths)

    def run(number: int, path: Path) -> None:
        try:
            outcomes[number] = imports.import_path(organization=organization, paths=[path])
        except Exception as exc:  # the test reports it
            outcomes[number] = exc
        finally:
            connection.close()

    monkeypatch.setattr(transcripts, "_rows_copy_write", write)
    threads = [threading.Thread(target=run, args=(n, path)) for n, path in enumerate(paths)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(writes.values()) == [2] * len(paths)
    return outcomes


def test_two_imports_into_one_organization_at_once_both_go_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transcripts, "CHUNK", 1)
    organization = OrganizationFactory.create()
    outcomes = _imports_at_once(
        organization,
        [
            _chat_file(tmp_path / "first.jsonl", ["gpt-4o", "gpt-4o-mini"], "first"),
            _chat_file(tmp_path / "second.jsonl", ["gpt-4o-mini", "gpt-4o"], "second"),
        ],
        monkeypatch,
    )
    for outcome in outcomes:
        assert isinstance(outcome, ImportJob), outcome
        assert outcome.status == ImportStatus.SUCCEEDED, outcome.error
        assert outcome.conversations == 2
    assert ImportJob.objects.filter(organization=organization).count() == 2
    days = UsageDay.objects.filter(organization=organization)
    assert sorted(days.values_list("model", "calls")) == [("gpt-4o", 2), ("gpt-4o-mini", 2)]
    assert CacheDay.objects.filter(organization=organization).exists()
    assert ConversationTotals.objects.filter(organization=organization).count() == 4
    assert rollups.organization_drift(organization=organization) == []
