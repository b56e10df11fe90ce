"""A re-pricing or a delete that recomputes an organization's rollups, at the same time as an
import or a recorded call adds to them, each on its own connection: both go in and the rollups stay exact
(PostgreSQL).

An import adds its shared sums at its end, DimensionDay first, then UsageDay (the order a
live call takes them in). A recompute DELETEs and re-INSERTs UsageDay's rows, then
DimensionDay's. Interleaved, each would hold a row the other waits for: a deadlock that
PostgreSQL ends by failing one of them. Here the import stops after its DimensionDay rows
and the recompute before its DimensionDay rows, until both are there (or 5 seconds passed:
with the organization's rollup lock one of them waits for the other's commit instead)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from conversations.models import (
    Conversation,
    ImportJob,
    ImportStatus,
    Organization,
    Turn,
    UsageDay,
    UsageRecord,
)
from conversations.services import (
    chunk_sums,
    deletion,
    dimension_rollups,
    imports,
    rollup_lock,
    rollups,
)

from .factories import OrganizationFactory
from .test_import_concurrency import _chat_file

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are PostgreSQL's"),
]

MEET_SECONDS = 5


def _reprice(conversation: Conversation) -> None:
    with transaction.atomic():  # what pricing.services does once it has re-priced the rows
        rollups.conversations_recompute(conversation_ids=[conversation.pk])


def _delete(conversation: Conversation) -> None:
    deletion.conversation_delete(conversation=conversation)


class _Race:
    """Two writers, each on its own thread and connection, that meet at a barrier inside
    their transactions. A broken barrier means one waits for the other's commit (the lock
    at work): it goes on alone."""

    def __init__(self) -> None:
        self.meeting = threading.Barrier(2)
        self.idents: dict[str, list[int]] = {}
        self.outcomes: dict[str, Any] = {}

    def meet(self) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            self.meeting.wait(timeout=MEET_SECONDS)

    def inside(self, name: str) -> bool:
        """Whether the caller runs on the thread of writer `name`."""
        return threading.get_ident() in self.idents.get(name, [])

    def run(self, works: dict[str, Callable[[], Any]]) -> dict[str, Any]:
        """Each work on its own thread; what each returned or raised, by name."""

        def one(name: str, work: Callable[[], Any]) -> None:
            self.idents.setdefault(name, []).append(threading.get_ident())
            try:
                self.outcomes[name] = work()
            except Exception as exc:  # the test reports it
                self.outcomes[name] = exc
            finally:
                connection.close()

        threads = [threading.Thread(target=one, args=item) for item in works.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
        return self.outcomes


@pytest.mark.parametrize("recompute", [_reprice, _delete], ids=["reprice", "delete"])
def test_a_recompute_and_an_import_in_one_organization_at_once_both_go_in(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recompute: Callable[[Conversation], None],
) -> None:
    organization = OrganizationFactory.create()
    first = imports.import_path(
        organization=organization,
        paths=[_chat_file(tmp_path / "first.jsonl", ["gpt-4o", "gpt-4o"], "first")],
    )
    assert first.status == ImportStatus.SUCCEEDED, first.error
    target = Conversation.objects.filter(organization=organization).order_by("pk").first()
    assert target is not None

    race = _Race()
    upsert = chunk_sums.shared_upsert

    def import_upsert(shape: chunk_sums.Shape, sums: chunk_sums.Sums) -> None:
        upsert(shape, sums)
        if race.inside("import") and shape is chunk_sums.DIMENSION_DAY:
            race.meet()

    span = dimension_rollups.span_recompute

    def recompute_span(**kwargs: Any) -> None:
        if race.inside("recompute"):
            race.meet()
        span(**kwargs)

    monkeypatch.setattr(chunk_sums, "shared_upsert", import_upsert)
    monkeypatch.setattr(dimension_rollups, "span_recompute", recompute_span)
    second = _chat_file(tmp_path / "second.jsonl", ["gpt-4o", "gpt-4o"], "second")
    outcomes = race.run(
        {
            "import": lambda: imports.import_path(organization=organization, paths=[second]),
            "recompute": lambda: recompute(target),
        }
    )

    assert not isinstance(outcomes["recompute"], Exception), outcomes["recompute"]
    job = outcomes["import"]
    assert isinstance(job, ImportJob), job
    assert job.status == ImportStatus.SUCCEEDED, job.error
    calls = 3 if recompute is _delete else 4
    assert list(UsageDay.objects.filter(organization=organization).values_list("calls")) == [
        (calls,)
    ]
    assert rollups.organization_drift(organization=organization) == []


def _live_call(organization: Organization, conversation: Conversation) -> int:
    """What a recorded call writes (calls/services/chats.py): a turn, its billing record and
    their sums, in one transaction. Its turn's id."""
    with transaction.atomic():
        turn = Turn.objects.filter(conversation=conversation).order_by("index").last()
        assert turn is not None
        record = UsageRecord.objects.get(turn=turn, is_billing=True)
        turn.pk, turn.index, turn.response = None, turn.index + 1, None
        turn.save()
        record.pk, record.turn = None, turn
        record.save()
        rollups.turns_added(
            organization=organization, turn_ids=[turn.pk], conversation_ids=[conversation.pk]
        )
        return int(turn.pk)


def test_a_recompute_and_a_live_call_in_one_organization_at_once_both_go_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with a recorded call, which adds DimensionDay's rows first too."""
    organization = OrganizationFactory.create()
    first = imports.import_path(
        organization=organization,
        paths=[_chat_file(tmp_path / "first.jsonl", ["gpt-4o", "gpt-4o"], "first")],
    )
    assert first.status == ImportStatus.SUCCEEDED, first.error
    target, other = Conversation.objects.filter(organization=organization).order_by("pk")
    race = _Race()
    added = dimension_rollups.records_added
    span = dimension_rollups.span_recompute

    def call_added(**kwargs: Any) -> None:
        added(**kwargs)
        if race.inside("call"):
            race.meet()

    def recompute_span(**kwargs: Any) -> None:
        if race.inside("recompute"):
            race.meet()
        span(**kwargs)

    monkeypatch.setattr(dimension_rollups, "records_added", call_added)
    monkeypatch.setattr(dimension_rollups, "span_recompute", recompute_span)
    outcomes = race.run(
        {
            "call": lambda: _live_call(organization, other),
            "recompute": lambda: _reprice(target),
        }
    )
    for name in ("call", "recompute"):
        assert not isinstance(outcomes[name], Exception), outcomes[name]
    assert list(UsageDay.objects.filter(organization=organization).values_list("calls")) == [(3,)]
    assert rollups.organization_drift(organization=organization) == []


def test_the_lock_is_the_organization_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recompute in one organization does not wait for an import's lock in another."""
    first, second = OrganizationFactory.create(), OrganizationFactory.create()
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                rollup_lock.organization_lock(first.pk, shared=False)
                holding.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(timeout=30)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '2s'")
            rollup_lock.organization_lock(second.pk, shared=False)  # another organization: free
            cursor.execute(
                "SELECT pg_try_advisory_xact_lock_shared(%s, %s)",
                [rollup_lock.ADVISORY_NAMESPACE, first.pk],
            )
            assert cursor.fetchone() == (False,)  # the first one's is taken
    finally:
        release.set()
        thread.join(timeout=30)
    assert isinstance(Organization.objects.get(pk=first.pk), Organization)
