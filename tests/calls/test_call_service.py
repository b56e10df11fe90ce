"""The call service and the chat turns it records, against costlab's own endpoint served in
this process: retries (429 after Retry-After, 5xx with backoff), failures at once, every
attempt recorded, budgets, the spend cap, and turns recorded once with the reported usage
beside costlab's estimate."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import Any, cast

import openai
import pytest
from django.core.cache import cache
from django.db import connection as db_connection
from django.db import transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pytest_django import Settings

from calls import selectors, tasks
from calls.models import ApiCall, AttemptOutcome, CallStatus, Chat, ProviderConnection
from calls.services import calling, chats, partials, updates
from calls.services.budgets import budget_take
from calls.services.connections import ConnectionSettings, connection_api_key, connection_create
from calls.services.turns import price_rates
from conversations.engine.analysis import analyze, conversation_start
from conversations.engine.types import Transcript
from conversations.models import ConversationSource, Message, Role, Turn, UsageRecord
from conversations.selectors import UsageFilter, conversation_list, org_totals
from conversations.selectors import conversation_transcript as transcript
from conversations.services import rollups
from conversations.services.transcripts import DEFAULT_RETENTION_SECONDS
from costlab import jobs
from tests.factories import MembershipFactory, OrganizationFactory

from .conftest import in_process_client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("in_process")]

POLICY = "You are the support assistant of ACME. " + "Answer politely and cite the policy. " * 200


@pytest.fixture(autouse=True)
def through_this_process(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """Calls go to the endpoint in this process, with the connection's key and headers."""
    settings.COSTLAB_CALL_BACKOFF_SECONDS = 0.05
    settings.COSTLAB_ENDPOINT_LATENCY_MS = 0

    def client(connection: ProviderConnection) -> openai.OpenAI:
        return in_process_client(
            key=connection_api_key(connection), default_headers=connection.extra_headers or None
        )

    monkeypatch.setattr(calling._clients, "get", client)


def make_connection(**changes: Any) -> ProviderConnection:
    membership = MembershipFactory.create(role=Role.ADMIN)
    settings = ConnectionSettings(name="built-in", base_url="http://testserver/v1")
    connection = connection_create(
        organization=membership.organization, user=None, settings=settings, api_key="sk-any"
    )
    for name, value in changes.items():
        setattr(connection, name, value)
    connection.save()
    return connection


def make_chat(connection: ProviderConnection, **options: Any) -> Chat:
    settings: dict[str, Any] = {
        "model": "gpt-4o",
        "system_prompt": POLICY,
        "max_completion_tokens": 150,
    }
    return chats.chat_create(
        organization=connection.organization,
        user=None,
        options=chats.ChatOptions(connection=connection, **(settings | options)),
    )


def send(chat: Chat, text: str) -> ApiCall:
    """What the page and the worker do: store the message, then run the queued call."""
    call = chats.chat_message_send(chat=chat, text=text)
    tasks.api_call_run(call.pk)
    call.refresh_from_db()
    return call


def test_it_records_each_turn_with_the_reported_usage_beside_the_estimate() -> None:
    chat = make_chat(make_connection())
    calls = [send(chat, f"Question {n}: where is my order {n}?") for n in range(3)]
    assert [c.status for c in calls] == [CallStatus.SUCCEEDED] * 3
    turns = list(Turn.objects.filter(conversation=chat.conversation).order_by("index"))
    assert [t.index for t in turns] == [0, 1, 2]
    cached = []
    for turn, call in zip(turns, calls, strict=True):
        records = {r.source: r for r in turn.usage_records.all()}
        reported, estimated = records["reported"], records["estimated"]
        assert reported.is_billing and not estimated.is_billing
        assert call.usage is not None and reported.raw == call.usage
        # The endpoint bills what costlab's engine estimates: the two records agree.
        assert (reported.prompt_tokens, reported.input_cached, reported.output) == (
            estimated.prompt_tokens,
            estimated.input_cached,
            estimated.output,
        )
        assert reported.output == 150 and reported.cost_total is not None
        assert call.cost == reported.cost_total and call.turn_id == turn.pk
        assert turn.response is not None and turn.response.role == "assistant"
        assert call.latency_ms is not None and call.ttft_ms is not None
        assert call.ttft_ms <= call.latency_ms
        cached.append(reported.input_cached)
    assert cached[0] == 0 and 0 < cached[1] < cached[2]
    conversation = chat.conversation
    assert conversation.source == ConversationSource.LIVE
    # Stored once: 1 system + 3 questions + 3 replies, turns by index ranges.
    assert conversation.messages.count() == 7
    assert turns[2].request_ranges == [[0, 6]]
    listed = conversation_list(chat.organization, UsageFilter())
    assert [row.code for row in listed] == [conversation.code]
    assert listed[0].turn_count == 3
    # Each recorded turn added its usage to the rollups in its own transaction.
    assert rollups.organization_drift(organization=chat.organization) == []
    assert org_totals(chat.organization, UsageFilter()).calls == 3


def test_it_records_a_turn_once_however_often_its_task_runs() -> None:
    chat = make_chat(make_connection())
    call = send(chat, "Hello?")
    tasks.api_call_run(call.pk)  # delivered again: the call is finished
    # A worker killed after recording, before finishing the call: the claim is taken
    # again, and the turn that exists is linked, not recorded twice.
    ApiCall.objects.filter(pk=call.pk).update(status=CallStatus.RUNNING, turn=None)
    tasks.api_call_run(call.pk)
    call.refresh_from_db()
    assert call.status == CallStatus.SUCCEEDED and call.turn is not None
    # ...and its cost is the recorded turn's billing record's (selectors.turn_recorded).
    billing = UsageRecord.objects.get(turn=call.turn, is_billing=True)
    assert billing.cost_total is not None and call.cost == billing.cost_total
    assert Turn.objects.filter(conversation=chat.conversation).count() == 1
    assert UsageRecord.objects.filter(conversation=chat.conversation).count() == 2
    assert call.attempts.count() == 1
    assert rollups.organization_drift(organization=chat.organization) == []


def test_it_waits_as_long_as_retry_after_says_then_succeeds() -> None:
    headers = {
        "X-Costlab-Fault": "429",
        "X-Costlab-Fault-Times": "1",
        "X-Costlab-Retry-After": "0.6",
    }
    chat = make_chat(make_connection(extra_headers=headers))
    start = time.monotonic()
    call = send(chat, "Hello?")
    assert time.monotonic() - start >= 0.6
    assert call.status == CallStatus.SUCCEEDED
    first, second = call.attempts.order_by("number")
    assert (first.outcome, first.status_code) == (AttemptOutcome.RATE_LIMITED, 429)
    assert first.retry_after_seconds == 0.6 and first.wait_ms == 600
    assert second.outcome == AttemptOutcome.OK and second.usage == call.usage
    assert call.attempt_count == 2


def test_it_backs_off_from_server_errors_with_jitter_and_gives_up_when_bounded(
    settings: Settings,
) -> None:
    settings.COSTLAB_CALL_MAX_ATTEMPTS = 3
    chat = make_chat(make_connection(extra_headers={"X-Costlab-Fault": "500"}))
    call = send(chat, "Hello?")
    assert call.status == CallStatus.FAILED
    assert "gave up after 3 attempts" in call.error
    attempts = list(call.attempts.order_by("number"))
    assert [a.outcome for a in attempts] == [AttemptOutcome.SERVER_ERROR] * 3
    # Waits of half a step fixed plus up to half random: 50 ms steps doubling.
    waits = [a.wait_ms for a in attempts]
    assert waits[2] is None
    assert waits[0] is not None and 25 <= waits[0] <= 50
    assert waits[1] is not None and 50 <= waits[1] <= 100
    # The failed turn is recorded as a request that got no reply: estimated, not billed.
    turn = Turn.objects.get(conversation=chat.conversation)
    assert turn.response is None and call.turn_id == turn.pk
    assert list(turn.usage_records.values_list("source", "is_billing")) == [("estimated", False)]


def test_it_fails_at_once_on_errors_retrying_cannot_fix(settings: Settings) -> None:
    chat = make_chat(make_connection(), model="gpt-nonexistent")
    call = send(chat, "Hello?")
    assert call.status == CallStatus.FAILED and call.attempt_count == 1
    assert "does not exist" in call.error  # the API's own message
    settings.COSTLAB_DEV = False  # the endpoint now refuses keys it did not issue
    chat = make_chat(make_connection())
    call = send(chat, "Hello?")
    assert call.status == CallStatus.FAILED and call.attempt_count == 1
    attempt = call.attempts.get()
    assert (attempt.outcome, attempt.status_code) == (AttemptOutcome.CLIENT_ERROR, 401)
    assert "Incorrect API key" in call.error


def test_it_sends_the_next_message_after_a_failed_one(settings: Settings) -> None:
    connection = make_connection(extra_headers={"X-Costlab-Fault": "500"})
    settings.COSTLAB_CALL_MAX_ATTEMPTS = 1
    chat = make_chat(connection)
    assert send(chat, "First?").status == CallStatus.FAILED
    ProviderConnection.objects.filter(pk=connection.pk).update(extra_headers={})
    chat.refresh_from_db()
    second = send(chat, "Second?")
    assert second.status == CallStatus.SUCCEEDED and second.index == 1
    turn = Turn.objects.get(conversation=chat.conversation, index=1)
    # The request re-sent both questions: system, first, second.
    assert turn.request_ranges == [[0, 3]]
    assert turn.response is not None and turn.response.index == 3


def test_it_refuses_a_message_while_the_previous_one_waits() -> None:
    chat = make_chat(make_connection())
    chats.chat_message_send(chat=chat, text="one")
    with pytest.raises(chats.ChatBusy):
        chats.chat_message_send(chat=chat, text="two")
    assert Message.objects.filter(conversation=chat.conversation, role="user").count() == 1


def test_a_send_fails_a_call_lost_for_good_first_and_reads_state_as_the_orm_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs, "enqueue", lambda name, *args: None)
    chat = make_chat(make_connection())
    lost = chats.chat_message_send(chat=chat, text="one")
    now = timezone.now()
    # Waiting, but not yet for good: the send refuses, as for any waiting call.
    ApiCall.objects.filter(pk=lost.pk).update(requested_at=now - timedelta(minutes=5))
    if db_connection.vendor == "postgresql":  # the statement built once; SQLite uses the ORM
        assert chats._state_template() is not None
    state = chats._chat_state(chat, now)
    assert state == {k[2:]: v for k, v in chats._chat_state_query(chat.pk, now).get().items()}
    assert state == {"calls": 1, "waiting": 1, "lost": 0, "messages": 2}
    with pytest.raises(chats.ChatBusy):
        chats.chat_message_send(chat=chat, text="two")
    # Requested before the give-up time and never claimed: the next send fails it first.
    old = now - chats.CALL_GIVE_UP_AFTER - timedelta(minutes=1)
    ApiCall.objects.filter(pk=lost.pk).update(requested_at=old)
    state = chats._chat_state(chat, now)
    assert state == {k[2:]: v for k, v in chats._chat_state_query(chat.pk, now).get().items()}
    assert state == {"calls": 1, "waiting": 1, "lost": 1, "messages": 2}
    second = chats.chat_message_send(chat=chat, text="two")
    lost.refresh_from_db()
    assert lost.status == CallStatus.FAILED and lost.turn is not None
    assert second.index == 1 and second.status == CallStatus.PENDING


def test_it_stops_calling_at_the_monthly_spend_cap() -> None:
    connection = make_connection(monthly_spend_cap=Decimal("0.01"))
    chat = make_chat(connection)
    assert send(chat, "One").status == CallStatus.SUCCEEDED
    ApiCall.objects.filter(connection=connection).update(cost=Decimal("0.02"))
    call = send(chat, "Two")
    assert call.status == CallStatus.FAILED and "monthly spend cap" in call.error
    assert call.attempt_count == 0  # nothing was sent
    # Last month's spend does not count.
    ApiCall.objects.filter(connection=connection).update(
        requested_at=timezone.now() - timedelta(days=40)
    )
    assert send(chat, "Three").status == CallStatus.SUCCEEDED


def test_it_tests_a_connection_with_one_cheap_call() -> None:
    connection = make_connection(default_model="gpt-4o-mini")
    call = chats.connection_test_request(connection=connection)
    tasks.api_call_run(call.pk)
    call.refresh_from_db()
    assert call.status == CallStatus.SUCCEEDED and call.reply
    assert call.usage is not None and call.usage["completion_tokens"] == chats.TEST_MAX_TOKENS
    assert call.cost is not None and call.cost > 0
    assert call.turn is None and not Turn.objects.exists()


def test_it_streams_a_chat_and_measures_the_first_token(settings: Settings) -> None:
    settings.COSTLAB_ENDPOINT_SLOW_CHUNK_MS = 30
    connection = make_connection(extra_headers={"X-Costlab-Fault": "slow"})
    chat = make_chat(connection, stream=True, max_completion_tokens=24)
    call = send(chat, "Hello?")
    assert call.status == CallStatus.SUCCEEDED and call.stream
    assert call.usage is not None and call.usage["completion_tokens"] == 24
    assert call.ttft_ms is not None and call.latency_ms is not None
    # 24 words in 6 pieces after the role chunk: the last arrives >= 6 x 30 ms after it.
    assert call.latency_ms - call.ttft_ms >= 150
    reply = Turn.objects.get(conversation=chat.conversation).response
    assert reply is not None and len(reply.text.split()) == 24


def test_a_streamed_reply_is_readable_as_it_comes_then_cleared(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker writes the text received so far where the chat page reads it, growing
    chunk after chunk; it is still there when the turn is recorded (the page shows it until
    then), and gone after."""
    settings.COSTLAB_ENDPOINT_SLOW_CHUNK_MS = 40
    monkeypatch.setattr(partials, "PUBLISH_EVERY_SECONDS", 0.02)
    connection = make_connection(extra_headers={"X-Costlab-Fault": "slow"})
    chat = make_chat(connection, stream=True, max_completion_tokens=24)
    seen: list[str | None] = []
    at_record: list[str | None] = []

    class Watched(partials.ReplyPartial):
        def __call__(self, parts: Sequence[str]) -> None:
            super().__call__(parts)
            seen.append(selectors.chat_streaming(chat)[1])

    def turn_record(call: ApiCall, result: Any, **kwargs: Any) -> Any:
        at_record.append(selectors.chat_streaming(chat)[1])
        return record(call, result, **kwargs)

    record = chats._turn_record
    monkeypatch.setattr(chats, "ReplyPartial", Watched)
    monkeypatch.setattr(chats, "_turn_record", turn_record)
    call = send(chat, "Hello?")
    reply = Turn.objects.get(conversation=chat.conversation).response
    assert reply is not None and call.status == CallStatus.SUCCEEDED
    # 24 words come in 6 pieces, written from the second on (the first read is before any
    # write): each a longer start of the reply, the last whole.
    assert len(seen) == 6 and seen[0] is None
    assert all(text and reply.text.startswith(text) for text in seen[1:])
    assert [len(text or "") for text in seen] == sorted({len(text or "") for text in seen})
    assert seen[-1] == reply.text and at_record == [reply.text]
    assert selectors.chat_streaming(chat) == (None, None)
    assert cache.get(selectors.reply_partial_key(call.code)) is None  # deleted


def test_a_failed_streaming_attempt_tells_its_text_is_void(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 500 then a stream: the partial is told [] after the failed attempt (what it wrote
    is removed while the call waits), then the next attempt's growing parts."""
    headers = {"X-Costlab-Fault": "500", "X-Costlab-Fault-Times": "1"}
    chat = make_chat(make_connection(extra_headers=headers), stream=True, max_completion_tokens=8)
    told: list[int] = []

    class Watched(partials.ReplyPartial):
        def __call__(self, parts: Sequence[str]) -> None:
            told.append(len(parts))
            super().__call__(parts)

    monkeypatch.setattr(chats, "ReplyPartial", Watched)
    call = send(chat, "Hello?")
    assert call.status == CallStatus.SUCCEEDED and call.attempt_count == 2
    assert told[0] == 0 and told[1:] == list(range(1, len(told)))


def test_a_reply_partial_writes_at_most_every_quarter_second() -> None:
    now = [100.0]
    code = uuid.uuid4()
    partial = partials.ReplyPartial(code, clock=lambda: now[0])

    def written() -> str | None:
        return cast(str | None, cache.get(selectors.reply_partial_key(code)))

    partial(["Hel"])  # a stream that ends within the interval writes nothing
    now[0] += 0.1
    partial(["Hel", "lo"])
    assert written() is None and not partial.published
    now[0] += partials.PUBLISH_EVERY_SECONDS
    partial(["Hel", "lo", " there"])
    assert written() == "Hello there"
    now[0] += 0.1
    partial(["Hel", "lo", " there", ","])  # too soon after the last write
    assert written() == "Hello there"
    partial([])  # the attempt failed: its text goes while the call waits to retry
    assert written() is None and not partial.published
    partial(["Re"])  # the next attempt's text starts its own interval
    now[0] += partials.PUBLISH_EVERY_SECONDS
    partial(["Re", "ply"])
    assert written() == "Reply"
    partial.clear()
    assert written() is None


def test_a_reply_partial_stops_writing_when_the_cache_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    partial = partials.ReplyPartial(uuid.uuid4(), clock=lambda: now[0])
    writes: list[str] = []

    def down(key: str, value: str, timeout: int) -> None:
        writes.append(value)
        raise ConnectionError("cache down")

    monkeypatch.setattr(cache, "set", down)
    for step in range(5):
        now[0] += 1
        partial(["x"] * (step + 1))  # the call goes on: nothing raised
    assert writes == ["xx"] and partial.broken and not partial.published
    assert caplog.text.count("could not write") == 1


def test_it_takes_and_refills_a_connections_budget() -> None:
    connection = connection_create(
        organization=OrganizationFactory.create(),
        user=None,
        settings=ConnectionSettings(name="b", base_url="http://x/v1", rpm_limit=2, tpm_limit=1000),
        api_key="sk-x",
    )
    now = connection.budget.refreshed  # full buckets, as of their creation
    assert budget_take(connection=connection, tokens=300, now=now).taken
    assert budget_take(connection=connection, tokens=300, now=now).taken
    third = budget_take(connection=connection, tokens=300, now=now)
    assert not third.taken and third.wait_seconds == pytest.approx(30)  # 1 request at 2/min
    later = now + timedelta(seconds=30)
    assert budget_take(connection=connection, tokens=300, now=later).taken
    # 600 tokens left; 30 s later, 500 more (the bucket holds at most a minute: 1000).
    assert budget_take(connection=connection, tokens=900, now=later + timedelta(seconds=30)).taken
    # 100 left plus 500 in 30 s: 300 short of 900 at 1000/min is 18 s more.
    short = budget_take(connection=connection, tokens=900, now=later + timedelta(seconds=60))
    assert not short.taken and short.wait_seconds == pytest.approx(18)


# Transactional (the threads' connections must see the rows); the flush at its end would
# take the price catalogue (a data migration) with it, so it is restored.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_shares_a_budget_between_workers() -> None:
    """Ten workers (threads, each with its own database connection) ask at once: exactly
    the rpm limit get through, the others are told to wait."""
    organization = OrganizationFactory.create()
    connection = connection_create(
        organization=organization,
        user=None,
        settings=ConnectionSettings(name="shared", base_url="http://x/v1", rpm_limit=4),
        api_key="sk-x",
    )
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(10)

    def worker() -> None:
        try:
            start.wait()
            taken = budget_take(connection=connection, tokens=1).taken
            with lock:
                results.append(taken)
        finally:
            db_connection.close()

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 6 + [True] * 4


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_sends_at_once_store_one_message_and_one_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two sends to one chat at the same moment (threads, each its own connection): one
    stores its message and call, the other is told the chat is busy; nothing of it is
    stored. PostgreSQL's unique indexes decide (one statement, no lock); SQLite's single
    writer serialises the locking path."""
    monkeypatch.setattr(jobs, "enqueue", lambda name, *args: None)
    chat = make_chat(make_connection())
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def sender(n: int) -> None:
        try:
            start.wait()
            try:
                chats.chat_message_send(chat=chat, text=f"message {n}")
                outcome = "sent"
            except chats.ChatBusy:
                outcome = "busy"
            with lock:
                outcomes.append(outcome)
        finally:
            db_connection.close()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["busy"] * 3 + ["sent"]
    users = Message.objects.filter(conversation=chat.conversation, role="user")
    assert users.count() == 1
    [call] = ApiCall.objects.filter(chat=chat)
    assert (call.index, call.request_end) == (0, users.get().index + 1)


def test_it_sets_time_limits_and_late_acks_on_the_call_task(settings: Settings) -> None:
    task = tasks.api_call_run
    assert (task.soft_time_limit, task.time_limit) == (
        tasks.CALL_SOFT_TIME_LIMIT,
        tasks.CALL_TIME_LIMIT,
    )
    assert tasks.CALL_SOFT_TIME_LIMIT < tasks.CALL_TIME_LIMIT
    assert task.acks_late is True and task.reject_on_worker_lost is True
    # The service gives up waiting (budgets, Retry-After, backoff) well before the soft limit.
    assert calling.MAX_WAIT_SECONDS < tasks.CALL_SOFT_TIME_LIMIT
    # A call is sent again only once no task could still be running it.
    assert settings.COSTLAB_CALL_STALE_SECONDS > tasks.CALL_TIME_LIMIT
    beat = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert beat["calls.tasks.api_calls_sweep"]["schedule"] == settings.COSTLAB_JOB_SWEEP_SECONDS


def test_it_sends_a_call_whose_worker_died_again_and_gives_up_on_old_ones(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, tuple[object, ...]]] = []
    monkeypatch.setattr(jobs, "enqueue", lambda name, *args: sent.append((name, args)))
    chat = make_chat(make_connection())
    call = chats.chat_message_send(chat=chat, text="Hello?")
    now = timezone.now()
    ApiCall.objects.filter(pk=call.pk).update(status=CallStatus.RUNNING, started_at=now)
    assert chats.api_calls_sweep(now=now) == chats.CallsSwept(requeued=0, failed=0)  # alive
    later = now + timedelta(seconds=settings.COSTLAB_CALL_STALE_SECONDS + 1)
    assert chats.api_calls_sweep(now=later) == chats.CallsSwept(requeued=1, failed=0)
    assert sent == [(jobs.CALL_RUN, (call.pk,))]
    # Its claim time is reset: the next sweeps leave it until it is stale again.
    assert chats.api_calls_sweep(now=later) == chats.CallsSwept(requeued=0, failed=0)
    tasks.api_call_run(call.pk)  # the worker that takes it records the turn, once
    call.refresh_from_db()
    assert call.status == CallStatus.SUCCEEDED
    assert Turn.objects.filter(conversation=chat.conversation).count() == 1
    # A call waiting far too long is given up, and its turn kept as unanswered.
    lost = chats.chat_message_send(chat=chat, text="Still there?")
    much_later = timezone.now() + chats.CALL_GIVE_UP_AFTER + timedelta(minutes=1)
    assert chats.api_calls_sweep(now=much_later) == chats.CallsSwept(requeued=0, failed=1)
    lost.refresh_from_db()
    assert lost.status == CallStatus.FAILED and lost.turn is not None


@pytest.mark.parametrize(
    "request_",
    [
        calling.ChatRequest(model="gpt-4o", messages=[{"role": "user", "content": "Hi."}]),
        calling.ChatRequest(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": "Réponds en français, s'il te plaît."},
                {"role": "user", "content": 'Quote "this" \\ and \u2603'},
                {"role": "assistant", "content": None, "tool_calls": []},
            ],
            prompt_cache_key="chat-7",
            max_completion_tokens=40,
        ),
        calling.ChatRequest(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Stream it."}],
            stream=True,
            prompt_cache_key="k",
            max_completion_tokens=3,
            extra={"tools": [{"type": "function", "function": {"name": "f"}}], "seed": 1},
        ),
    ],
)
def test_the_raw_request_path_sends_what_create_sends(request_: calling.ChatRequest) -> None:
    """_post skips create()'s typed walk of the body, nothing else: the same method, URL,
    headers (auth included) and body bytes as create(**params()), and the same typed
    response (a ChatCompletion, or a Stream of chunks)."""
    import httpx2
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    sent: list[Any] = []
    answer = {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": request_.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "OK"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    chunk = {**answer, "object": "chat.completion.chunk"}
    chunk["choices"] = [{"index": 0, "delta": {"content": "OK"}, "finish_reason": "stop"}]

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        sent.append(http_request)
        if request_.stream:
            text = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
            return httpx2.Response(200, text=text, headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, json=answer)

    client = openai.OpenAI(
        api_key="sk-same",
        base_url="http://upstream/v1",
        organization="org-1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    by_create: Any = client.chat.completions.create(**request_.params())
    by_post: Any = calling._post(client, request_)
    if request_.stream:
        assert isinstance(by_post, openai.Stream) and isinstance(by_create, openai.Stream)
        got = list(by_post)
        assert [type(c) for c in got] == [ChatCompletionChunk]
        assert got == list(by_create)
    else:
        assert isinstance(by_post, ChatCompletion) and by_post == by_create
    first, second = sent
    assert (second.method, second.url) == (first.method, first.url)
    assert second.content == first.content
    assert dict(second.headers) == dict(first.headers)
    assert second.headers["authorization"] == "Bearer sk-same"
    body = json.loads(second.content)
    assert body["messages"] == request_.messages
    assert set(request_.extra or {}) <= set(body)


def test_the_claim_reads_the_call_as_the_orm_would() -> None:
    """The claim's statement compiled once per process gives the instances the ORM's
    select_related gives: the call, its connection, chat, organization and conversation,
    field by field (JSON, times, decimals converted alike); none for a finished call."""
    chat = make_chat(make_connection(extra_headers={"X-Team": "team-7"}, monthly_spend_cap="12.50"))
    first = chats.chat_message_send(chat=chat, text="first question")
    chats._claim_reads.clear()
    for _ in range(2):  # compiled, then reused
        with CaptureQueriesContext(db_connection) as read:
            got = chats._claimable_call(first.pk)
            assert got is not None and got.chat is not None
            related = (got.connection, got.chat.organization, got.chat.conversation)
        assert len(read) == 1 and all(related)  # joined, not read one by one
        orm = chats._claimable(first.pk).get()
        assert got is not orm
        pairs = [
            (got, orm),
            (got.connection, orm.connection),
            (got.chat, orm.chat),
            (got.chat and got.chat.organization, orm.chat and orm.chat.organization),
            (got.chat and got.chat.conversation, orm.chat and orm.chat.conversation),
        ]
        for mine, theirs in pairs:
            assert mine is not None and theirs is not None
            names = [f.attname for f in type(theirs)._meta.concrete_fields]
            assert [getattr(mine, n) for n in names] == [getattr(theirs, n) for n in names]
            assert not mine._state.adding and mine._state.db == theirs._state.db
    assert chats._claim_reads[db_connection.alias] is not None
    assert (
        got is not None
        and got.connection is not None
        and got.connection.extra_headers == {"X-Team": "team-7"}
    )
    assert got.connection.monthly_spend_cap == Decimal("12.50")
    tasks.api_call_run(first.pk)
    assert chats._claimable_call(first.pk) is None  # finished: nothing to claim


def test_the_statements_built_once_write_and_read_as_the_orm_would() -> None:
    """A send's call row (one statement on PostgreSQL, updates.instance_insert elsewhere)
    holds what ApiCall.objects.create writes, column by column; the request's messages read
    by the statement built once (prepared on PostgreSQL) are the ORM's, in order, JSON
    decoded alike. On PostgreSQL the send is that one statement: no lock, no transaction
    of its own around it."""
    chat = make_chat(make_connection())
    with CaptureQueriesContext(db_connection) as sent:
        call = chats.chat_message_send(chat=chat, text="first question")
    if db_connection.vendor == "postgresql":
        [statement] = [q["sql"] for q in sent if "SAVEPOINT" not in q["sql"]]
        for table in ("conversations_message", "calls_apicall", "conversations_conversation"):
            assert f'"{table}"' in statement
        assert "FOR UPDATE" not in statement
        chat.conversation.refresh_from_db()
        assert chat.conversation.title == "first question"  # the first message names it
    message = Message.objects.get(conversation=chat.conversation, role="user")
    assert (message.index, message.data) == (1, {"role": "user", "content": "first question"})
    assert (call.index, call.request_end) == (0, 2)
    stored = ApiCall.objects.get(pk=call.pk)
    orm = ApiCall.objects.create(
        organization_id=chat.organization_id,
        connection_id=chat.connection_id,
        purpose=call.purpose,
        index=5,
        request_end=call.request_end,
        model=chat.model,
        stream=chat.stream,
    )
    orm.refresh_from_db()
    differ = {"id", "code", "requested_at", "index", "chat"}
    names = [f.attname for f in ApiCall._meta.concrete_fields if f.name not in differ]
    assert [getattr(stored, n) for n in names] == [getattr(orm, n) for n in names]
    assert [getattr(call, n) for n in names] == [getattr(stored, n) for n in names]
    assert (call.code, call.requested_at, call.chat_id) == (
        stored.code,
        stored.requested_at,
        chat.pk,
    )
    assert not call._state.adding and call._state.db == stored._state.db
    Message.objects.create(
        conversation_id=chat.conversation_id,
        index=2,
        role="assistant",
        data={"role": "assistant", "content": "é ✓", "n": [1, 2.5, None]},
    )
    chats._messages_reads.clear()
    for end in (0, 1, 2, 3, 9):
        expected = list(
            Message.objects.filter(conversation_id=chat.conversation_id, index__lt=end)
            .order_by("index")
            .values_list("data", flat=True)
        )
        chats.histories_forget()
        assert chats._request_messages(chat.conversation, end) == expected
        assert chats._messages_between(chat.conversation_id, 1, end) == expected[1:]
    assert chats._messages_reads[db_connection.alias] is not None  # the fast path ran


def test_a_chats_next_call_reads_only_the_messages_added_since(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """chats._request_messages: the process keeps what it read of a chat, and its next call
    reads the messages after it (not the history again); what it gives is what reading all
    of them gives, however the chat grew meanwhile."""
    chat = make_chat(make_connection())
    conversation = chat.conversation
    reads: list[tuple[int, int]] = []
    between = chats._messages_between

    def spied(conversation_id: int, start: int, end: int) -> list[Any]:
        reads.append((start, end))
        return between(conversation_id, start, end)

    monkeypatch.setattr(chats, "_messages_between", spied)

    def stored_of(of: Any, end: int) -> list[Any]:
        rows = Message.objects.filter(conversation=of, index__lt=end)
        return list(rows.order_by("index").values_list("data", flat=True))

    def stored(end: int) -> list[Any]:
        return stored_of(conversation, end)

    def add(index: int, role: str) -> None:
        data = {"role": role, "content": f"message {index}"}
        Message.objects.create(conversation=conversation, index=index, role=role, data=data)

    chats.histories_forget()
    first = conversation.messages.count()  # the system prompt's
    for index in range(first, first + 3):
        add(index, "user" if index % 2 else "assistant")
    n = first + 3
    assert chats._request_messages(conversation, n) == stored(n)
    add(n, "assistant")
    add(n + 1, "user")
    got = chats._request_messages(conversation, n + 2)
    assert got == stored(n + 2) and len(got) == n + 2
    assert reads == [(0, n), (n, n + 2)]
    got.append({"role": "assistant", "content": "a caller's own"})  # not the kept list
    # An earlier call again (a re-delivery): no read at all.
    assert chats._request_messages(conversation, 2) == stored(2)
    assert reads == [(0, n), (n, n + 2)]
    # Fewer messages than the call expects (not stored yet): all of them read again.
    assert chats._request_messages(conversation, n + 4) == stored(n + 4) == stored(n + 2)
    assert reads[2:] == [(n + 2, n + 4), (0, n + 4)]
    # Another conversation's history is its own, and a process keeps a bounded number.
    other = make_chat(make_connection(name="other")).conversation
    assert chats._request_messages(other, 1) == stored_of(other, 1) and len(stored_of(other, 1))
    assert len(chats._histories) == 2
    monkeypatch.setattr(chats, "HISTORY_CHATS", 1)
    chats._request_messages(conversation, n)
    assert list(chats._histories) == [(conversation.pk, conversation.code)]


def test_writes_together_are_one_statement_that_writes_all_or_nothing() -> None:
    """updates.rows_write_together: a reply, the turn pointing at it and the call pointing
    at the turn are one statement on PostgreSQL (one after the other elsewhere), the keys
    passed along; a unique violation in a later step leaves none of its rows."""
    from django.db import IntegrityError, transaction

    chat = make_chat(make_connection())
    call = chats.chat_message_send(chat=chat, text="first question")
    reply = {"role": "assistant", "content": "é ✓"}
    steps: list[updates.Insert | updates.Update] = [
        updates.Insert(
            Message,
            [
                {
                    "conversation_id": chat.conversation_id,
                    "index": call.request_end,
                    "role": "assistant",
                    "data": reply,
                }
            ],
        ),
        updates.Insert(
            Turn,
            [
                {
                    "conversation_id": chat.conversation_id,
                    "index": 0,
                    "request_ranges": [[0, call.request_end]],
                    "response_id": updates.Written(0),
                }
            ],
        ),
        updates.Update(
            ApiCall, call.pk, {"turn": updates.Written(1), "usage": None, "cost": "1.5"}
        ),
    ]
    with CaptureQueriesContext(db_connection) as ran:
        message_id, turn_id, changed = updates.rows_write_together(steps)
    writes = [q for q in ran.captured_queries if q["sql"].startswith(("WITH", "INSERT", "UPDATE"))]
    assert len(writes) == (1 if db_connection.vendor == "postgresql" else 3)
    turn = Turn.objects.get(pk=turn_id)
    assert turn.response_id == message_id and Message.objects.get(pk=message_id).data == reply
    assert turn.request_ranges == [[0, call.request_end]]
    assert turn.miss_reason == "" and turn.over_context is False  # defaults, as create's
    call.refresh_from_db()
    assert changed == 1 and call.turn_id == turn_id and call.cost == Decimal("1.5")
    assert call.usage is None

    before = (Message.objects.count(), Turn.objects.count())
    again = [
        updates.Insert(
            Message,
            [
                {
                    "conversation_id": chat.conversation_id,
                    "index": 9,
                    "role": "assistant",
                    "data": reply,
                }
            ],
        ),
        updates.Insert(
            Turn,  # the same (conversation, index): the unique constraint says no
            [
                {
                    "conversation_id": chat.conversation_id,
                    "index": 0,
                    "request_ranges": [[0, call.request_end]],
                    "response_id": updates.Written(0),
                }
            ],
        ),
    ]
    with pytest.raises(IntegrityError), transaction.atomic():
        updates.rows_write_together(again)
    assert (Message.objects.count(), Turn.objects.count()) == before


def test_a_turn_is_written_by_one_statement() -> None:
    """A chat turn's reply, turn, usage records, call and answered attempt, and its sums in
    every rollup it adds to: one statement on PostgreSQL, and every row points where the
    ORM's writes did; the rollups equal the raw rows' sums."""
    chat = make_chat(make_connection())
    call = chats.chat_message_send(chat=chat, text="Hello?")
    with CaptureQueriesContext(db_connection) as ran:
        tasks.api_call_run(call.pk)
    sqls = [q["sql"] for q in ran.captured_queries]
    tables = ("conversations_message", "conversations_turn", "conversations_usagerecord")
    writes = [
        i
        for i, sql in enumerate(sqls)
        if any(f'INSERT INTO "{t}"' in sql for t in tables) or 'UPDATE "calls_callattempt"' in sql
    ]
    if db_connection.vendor == "postgresql":
        assert len(writes) == 1
        rollup_tables = ("conversationday", "conversationtotals", "dimensionday", "usageday")
        assert all(
            part in sqls[writes[0]]
            for part in (
                *(f'INSERT INTO "{t}"' for t in tables),
                'UPDATE "calls_apicall"',
                *(f'INSERT INTO "conversations_{t}"' for t in rollup_tables),
            )
        )
        assert not any("conversations_usageday" in sql for sql in sqls[writes[0] + 1 :])
    assert rollups.organization_drift(organization=chat.organization) == []
    call.refresh_from_db()
    turn = Turn.objects.get(conversation_id=chat.conversation_id, index=0)
    assert call.status == CallStatus.SUCCEEDED and call.turn_id == turn.pk
    assert turn.response is not None and turn.response.index == call.request_end
    assert set(UsageRecord.objects.filter(turn=turn).values_list("conversation_id", flat=True)) == {
        chat.conversation_id
    }
    [attempt] = call.attempts.all()
    assert attempt.outcome == AttemptOutcome.OK and attempt.usage == call.usage


def _statement_at(sqls: list[str], *parts: str, start: int = 0) -> int:
    return next(i for i, sql in enumerate(sqls) if i >= start and all(p in sql for p in parts))


def test_a_call_is_claimed_in_its_first_attempts_transaction_unless_it_has_a_budget() -> None:
    """One commit fewer per call: the claim (running, and the attempt counted) and the
    attempt's row are one transaction. With a rate budget the claim comes first and alone:
    the call may wait for budget, and its claim time tells the sweep a worker has it."""
    chat = make_chat(make_connection())
    call = chats.chat_message_send(chat=chat, text="Hello?")
    with CaptureQueriesContext(db_connection) as ran:
        tasks.api_call_run(call.pk)
    sqls = [q["sql"] for q in ran.captured_queries]
    claim = _statement_at(sqls, 'UPDATE "calls_apicall"', '"started_at"', '"attempt_count"')
    attempt = _statement_at(sqls, 'INSERT INTO "calls_callattempt"')
    if db_connection.vendor == "postgresql":  # one statement (updates.rows_write_together)
        assert claim == attempt and "WHERE EXISTS" in sqls[attempt]
    else:  # one transaction
        opened = max(i for i, sql in enumerate(sqls[:claim]) if sql.startswith("SAVEPOINT"))
        assert claim < attempt and not any("SAVEPOINT" in s for s in sqls[opened + 1 : attempt])
    assert sum('UPDATE "calls_apicall"' in s and '"attempt_count"' in s for s in sqls) == 1
    call.refresh_from_db()
    assert call.status == CallStatus.SUCCEEDED and call.attempt_count == 1
    assert call.started_at is not None and call.attempts.count() == 1

    budgeted = make_chat(make_connection(rpm_limit=600, tpm_limit=1_000_000))
    call = chats.chat_message_send(chat=budgeted, text="Hello?")
    with CaptureQueriesContext(db_connection) as ran:
        tasks.api_call_run(call.pk)
    sqls = [q["sql"] for q in ran.captured_queries]
    claim = _statement_at(sqls, 'UPDATE "calls_apicall"', '"started_at"')
    assert '"attempt_count"' not in sqls[claim]
    # The budget's row, locked (SQLite has no FOR UPDATE: its writes are serialized whole).
    locked = ("FOR UPDATE",) if db_connection.vendor == "postgresql" else ()
    assert claim < _statement_at(sqls, '"calls_ratebudget"', *locked)
    call.refresh_from_db()
    assert call.status == CallStatus.SUCCEEDED and call.attempt_count == 1


def test_a_call_finished_meanwhile_is_not_sent() -> None:
    """The claim says no (another delivery finished the call): no attempt, nothing sent."""
    chat = make_chat(make_connection())
    call = chats.chat_message_send(chat=chat, text="Hello?")
    assert chat.connection is not None
    request = calling.ChatRequest(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    claim = chats._claim_update(call, count_attempt=True)
    ApiCall.objects.filter(pk=call.pk).update(status=CallStatus.SUCCEEDED)  # by another
    with pytest.raises(calling.CallNotClaimed):
        calling.chat_completion_call(
            call=call, connection=chat.connection, request=request, claim=claim
        )
    assert not call.attempts.exists()
    assert ApiCall.objects.get(pk=call.pk).attempt_count == 0  # nothing written
    ApiCall.objects.filter(pk=call.pk).update(status=CallStatus.PENDING)
    # Through the task: finished already, it is not claimed nor sent.
    ApiCall.objects.filter(pk=call.pk).update(status=CallStatus.FAILED)
    tasks.api_call_run(call.pk)
    assert not call.attempts.exists() and not Turn.objects.exists()


@pytest.mark.skipif(
    db_connection.vendor != "postgresql",
    reason="row locks and the advisory lock that orders them are PostgreSQL's",
)
def test_a_turn_writes_the_organizations_rollup_rows_last_before_its_commit() -> None:
    """Every call of an organization updates the same organization-day rows, and holds their
    locks from its first upsert of one to its commit: nothing else is written in between
    (the call, its attempt, the conversation's own rollup rows all come before). The turn's
    rows and sums are one statement whose steps run in the order of its text (each upsert
    waits for the step before it): the order is read off that text."""
    chat = make_chat(make_connection())
    queued = chats.chat_message_send(chat=chat, text="Hello?")
    with CaptureQueriesContext(db_connection) as ran:
        tasks.api_call_run(queued.pk)
    sqls = "\n".join(q["sql"] for q in ran.captured_queries)
    shared = ("usageday", "cacheday", "dimensionday", "breakerday", "calibrationgap")
    rest = sqls[sqls.index("pg_advisory_xact_lock_shared") :]
    ends = rest.index("RELEASE SAVEPOINT")
    # Only the tables the turn adds to are written (no prefix breaker, no gap here).
    written = [f'"conversations_{table}"' for table in shared if f"conversations_{table}" in rest]
    assert written, rest
    hot = min(rest.index(table) for table in written)
    assert rest.index("conversations_conversationday") < hot
    assert rest.index("conversations_conversationtotals") < hot
    assert not any(word in rest[hot:ends] for word in ("calls_apicall", "calls_callattempt"))
    assert rollups.organization_drift(organization=chat.organization) == []


def test_each_turns_estimate_is_the_whole_conversations_analysed_again(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    """A chat's turn analyses only its own call, from the state its previous turn left in
    this process (committed), yet records what analysing the whole conversation again gives:
    estimate, simulated cache, miss reason, costs. A turn another process recorded, or a
    price book read again, makes the state stale: the conversation is read again."""
    chats.carried_forget()
    reads: list[int] = []

    def read(conversation: Any, **options: Any) -> Transcript:
        reads.append(conversation.pk)
        return transcript(conversation, **options)

    monkeypatch.setattr(chats, "conversation_transcript", read)
    chat = make_chat(make_connection(), model="gpt-4o-mini", max_completion_tokens=40)
    for n in range(6):
        with django_capture_on_commit_callbacks(execute=True):
            send(chat, f"Question {n}: " + "where is my order? " * (5 + 9 * n))
        if n == 3:  # the worker's price book read again: the state goes with the old one
            selectors.endpoint_books_forget()
    assert len(reads) == 2  # the first turn and the one after the book's re-read
    conversation = chat.conversation
    book = selectors.price_book(chat.organization)
    stored = transcript(conversation)
    turns = list(Turn.objects.filter(conversation=conversation).order_by("index"))
    assert len(turns) == 6
    for turn in turns:
        whole = (
            analyze(
                [
                    Transcript(
                        messages=stored.messages, calls=(stored.calls or [])[: turn.index + 1]
                    )
                ],
                profile_for=book.profile,
                policy_for=book.policy,
                rates_for=partial(book.call_rates, now=timezone.now()),
                retention_seconds=DEFAULT_RETENTION_SECONDS,
                org=str(chat.organization.code),
            )
            .conversations[0]
            .calls[-1]
        )
        assert (
            turn.estimated_prompt_tokens,
            turn.estimated_completion_tokens,
            turn.simulated_cached_tokens,
            turn.miss_reason,
        ) == (
            whole.estimated_prompt_tokens,
            whole.estimated_completion_tokens,
            whole.simulated_cached_tokens,
            whole.miss_reason.kind if whole.miss_reason else "",
        )
        estimated = turn.usage_records.get(source="estimated")
        assert estimated.input_cached == whole.simulated_cached_tokens
        assert whole.cost is not None and estimated.cost_total is not None
        assert estimated.cost_total == whole.cost.total.quantize(estimated.cost_total)
    assert turns[0].simulated_cached_tokens == 0
    assert all(t.simulated_cached_tokens > 0 for t in turns[1:])
    assert rollups.organization_drift(organization=chat.organization) == []


def test_a_state_left_behind_catches_up_with_the_turns_recorded_elsewhere(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    """The worker's other process recorded the chat's latest turns: this process's state,
    older, analyses those turns one by one (read from the stored conversation) instead of
    the whole conversation from its start, and records what analysing the whole
    conversation gives."""
    chats.carried_forget()
    started: list[int] = []

    def start(transcript: Transcript, **options: Any) -> Any:
        started.append(len(transcript.calls or []))
        return conversation_start(transcript, **options)

    monkeypatch.setattr(chats, "conversation_start", start)
    chat = make_chat(make_connection(), model="gpt-4o-mini", max_completion_tokens=40)
    conversation_id = chat.conversation_id
    left_behind = None
    for n in range(6):
        if n == 1:  # turns 1 and 2 by "the other process": this one keeps its state aside
            left_behind = chats._carried.pop(conversation_id)
        if n == 3:  # and has it back for turn 3, two turns behind
            assert left_behind is not None and left_behind.state.calls == 1
            chats._carried[conversation_id] = left_behind
        with django_capture_on_commit_callbacks(execute=True):
            send(chat, f"Question {n}: " + "where is my order? " * (5 + 9 * n))
    # Analysed from the start: turn 0, then turn 1 (no state here); turn 2 went on from
    # turn 1's; turn 3 caught up from turn 0's (turns 1 and 2 one by one), and turns 4
    # and 5 went on from there.
    assert started == [0, 1]
    stored = transcript(chat.conversation)
    book = selectors.price_book(chat.organization)
    turns = list(Turn.objects.filter(conversation=chat.conversation).order_by("index"))
    whole = analyze(
        [Transcript(messages=stored.messages, calls=stored.calls)],
        profile_for=book.profile,
        policy_for=book.policy,
        rates_for=partial(book.call_rates, now=timezone.now()),
        retention_seconds=DEFAULT_RETENTION_SECONDS,
        org=str(chat.organization.code),
    ).conversations[0]
    assert [
        (t.estimated_prompt_tokens, t.simulated_cached_tokens, t.miss_reason) for t in turns
    ] == [
        (
            c.estimated_prompt_tokens,
            c.simulated_cached_tokens,
            c.miss_reason.kind if c.miss_reason else "",
        )
        for c in whole.calls
    ]
    assert all(t.simulated_cached_tokens > 0 for t in turns[1:])
    # The state kept for turn 6 has simulated every call, and summed every cost, once.
    kept = chats._carried[conversation_id].state
    assert kept.calls == 6 and kept.cumulative == whole.calls[-1].cumulative_cost


@pytest.mark.parametrize("usage", [{"prompt_tokens": 3, "total_tokens": 5}, None])
def test_a_row_update_writes_what_the_orms_update_writes(usage: dict[str, Any] | None) -> None:
    connection = make_connection()
    by_orm, by_row = (chats.chat_message_send(chat=make_chat(connection), text="hi") for _ in "ab")
    values: dict[str, Any] = {
        "status": CallStatus.SUCCEEDED,
        "finished_at": timezone.now(),
        "latency_ms": 12,
        "usage": usage,
        "cost": Decimal("0.000123456789"),
        "reply": "née ✓",
        "error": "",
    }
    ApiCall.objects.filter(pk=by_orm.pk).update(
        **values, turn=None, attempt_count=F("attempt_count") + 1
    )
    changed = updates.row_update(
        model=ApiCall,
        pk=by_row.pk,
        values={**values, "turn": None},
        increment=("attempt_count",),
        status_in=(CallStatus.PENDING, CallStatus.RUNNING),
    )
    assert changed == 1
    columns = [
        f.attname
        for f in ApiCall._meta.concrete_fields
        if f.attname not in ("id", "code", "chat_id", "requested_at")
    ]
    rows = ApiCall.objects.filter(pk__in=[by_orm.pk, by_row.pk]).values(*columns)
    assert rows[0] == rows[1]
    assert ApiCall.objects.filter(pk=by_row.pk, usage__isnull=usage is None).exists()
    # Guarded by its status: a finished call is left as it is.
    again = {"status": CallStatus.RUNNING}
    assert (
        updates.row_update(model=ApiCall, pk=by_row.pk, values=again, status_in=("pending",)) == 0
    )


def test_rows_insert_writes_what_the_orms_insert_writes() -> None:
    from django.db import IntegrityError, transaction

    from pricing.models import ModelPrice

    connection = make_connection()
    by_orm, by_row = (make_chat(connection).conversation for _ in "ab")
    price = ModelPrice.objects.first()
    assert price is not None
    now = timezone.now()
    message = {"index": 1, "role": "assistant", "data": {"content": "née ✓", "n": [1, None]}}
    turn: dict[str, Any] = {
        "index": 0,
        "request_ranges": [[0, 1]],
        "model": "gpt-4o",
        "started_at": now,
        "latency_ms": None,
        "estimated_prompt_tokens": 1700,
        "miss_reason": "prefix_changed",
        "miss_token": 12,
        "over_context": True,
    }
    reported: dict[str, Any] = {
        "occurred_at": now,
        "model": "gpt-4o",
        "source": "reported",
        "is_billing": True,
        "raw": {"prompt_tokens": 1700},
        "prompt_tokens": 1700,
        "price_id": price.pk,
        "cost_total": Decimal("0.000123456789"),
        "cost_output": None,
    }
    estimated = {**reported, "source": "estimated", "is_billing": False, "raw": None}
    estimated.update(price_id=None, cost_total=None)
    orm_message = Message.objects.create(conversation=by_orm, **message)
    orm_turn = Turn.objects.create(conversation=by_orm, response=orm_message, **turn)
    owner = {"organization_id": by_orm.organization_id}
    UsageRecord.objects.bulk_create(
        UsageRecord(turn=orm_turn, conversation=by_orm, **owner, **fields)
        for fields in (estimated, reported)
    )
    [message_id] = updates.rows_insert(
        model=Message, rows=[{"conversation_id": by_row.pk, **message}]
    )
    [turn_id] = updates.rows_insert(
        model=Turn, rows=[{"conversation": by_row.pk, "response_id": message_id, **turn}]
    )
    record_ids = updates.rows_insert(
        model=UsageRecord,
        rows=[
            {"turn_id": turn_id, "conversation_id": by_row.pk, **owner, **fields}
            for fields in (estimated, reported)
        ],
    )
    assert Turn.objects.get(pk=turn_id).response_id == message_id
    sources = UsageRecord.objects.filter(pk__in=record_ids).order_by("pk")
    assert list(sources.values_list("pk", "source")) == list(
        zip(record_ids, ["estimated", "reported"], strict=True)
    )

    def rows(model: Any, conversation: Any) -> list[dict[str, Any]]:
        skip = {"id", "conversation_id", "turn_id", "response_id"}
        columns = [f.attname for f in model._meta.concrete_fields if f.attname not in skip]
        written = model.objects.filter(conversation=conversation)
        if model is Message:
            written = written.filter(index__gt=0)  # the chat's own system prompt left out
        return list(written.order_by("pk").values(*columns))

    for model in (Message, Turn, UsageRecord):
        assert rows(model, by_orm) == rows(model, by_row), model.__name__
    # The JSON null of a nested value and SQL NULL of a missing one, as the ORM writes them.
    assert UsageRecord.objects.filter(pk=record_ids[0], raw__isnull=True).exists()
    assert Turn.objects.filter(pk=turn_id, tools__isnull=True).exists()
    # A second turn of the same index hits the unique constraint, as the ORM's insert does,
    # and its transaction leaves nothing behind.
    with pytest.raises(IntegrityError), transaction.atomic():
        updates.rows_insert(
            model=Message, rows=[{"conversation_id": by_row.pk, **message, "index": 2}]
        )
        updates.rows_insert(model=Turn, rows=[{"conversation_id": by_row.pk, **turn}])
    assert Message.objects.filter(conversation=by_row).count() == 2  # the system prompt


@pytest.mark.skipif(
    db_connection.vendor != "postgresql",
    reason="the sums in Python are PostgreSQL's numeric arithmetic; SQLite takes turns_added",
)
def test_a_turns_rollup_sums_written_with_it_are_the_raw_rows_sums() -> None:
    """rollups.turn_sums and updates.Upsert, as a chat turn uses them: turns of a tagged
    conversation, two breaking the prefix at the same block (BreakerDay's least and
    greatest turn), estimates off the report (CalibrationGap), one model the price book
    does not know (its cost NULL), each written with its sums in one statement. Every
    rollup then equals what the SQL computes from the raw rows (rollups_verify's check)."""
    from conversations.engine.pricing import buckets_from_counts

    chat = make_chat(make_connection())
    conversation = chat.conversation
    conversation.tags = {"team": "support", "tier": None}
    conversation.save(update_fields=["tags"])
    organization = chat.organization
    book = selectors.price_book(organization)
    now = timezone.now()
    turns = [  # model, prompt, cached, estimate, miss reason, token, end user, latency
        ("gpt-4o", 1800, 0, 1790, "cold", None, "ann", 120),
        ("gpt-4o", 2100, 1792, 2100, "prefix_changed", 1300, "ann", 80),
        ("gpt-4o", 2400, 0, 2420, "prefix_changed", 1290, "bob", None),
        ("no-such-model", 900, 0, 900, "cold", None, "", 50),
    ]
    turn_ids = []
    for index, (model, prompt, cached, estimate, reason, token, user, latency) in enumerate(turns):
        turn = {
            "conversation_id": conversation.pk,
            "index": index,
            "request_ranges": [[0, 1]],
            "model": model,
            "started_at": now,
            "latency_ms": latency,
            "end_user": user,
            "estimated_prompt_tokens": estimate,
            "simulated_cached_tokens": cached,
            "miss_reason": reason,
            "miss_token": token,
            "miss_message": 1 if token is not None else None,
        }
        buckets = buckets_from_counts(
            prompt_tokens=prompt, cached_tokens=cached, completion_tokens=40
        )
        priced = book.price(model=model, at=now, buckets=buckets, service_tier=None, batch=False)
        record = {
            "turn_id": updates.Written(0),
            "organization_id": organization.pk,
            "conversation_id": conversation.pk,
            "occurred_at": now,
            "model": model,
            "source": "reported",
            "is_billing": True,
            "prompt_tokens": prompt,
            "completion_tokens": 40,
            "total_tokens": prompt + 40,
            "input_uncached": buckets.input_uncached,
            "input_cached": cached,
            "output": 40,
            "cache_eligible": True,
            **priced.cost_fields(),
        }
        sums = rollups.turn_sums(
            organization=organization,
            conversation=conversation,
            turn=turn,
            records=[record],
            rates=price_rates(book, [record]),
        )
        assert sums is not None
        steps: list[updates.Step] = [
            updates.Insert(Turn, [turn]),
            updates.Insert(UsageRecord, [record]),
            updates.Lock(sums.lock),
            *(
                updates.Upsert(t.model, t.keys, t.figures, t.rows, conflict=t.conflict)
                for t in sums.tables
            ),
        ]
        turn_ids.append(updates.rows_write_together(steps)[0])
    assert rollups.organization_drift(organization=organization) == []
    from conversations.models import BreakerDay, CalibrationGap, DimensionDay

    [breaker] = BreakerDay.objects.filter(conversation=conversation)
    assert (breaker.calls, breaker.first_turn, breaker.last_turn) == (2, *turn_ids[1:3])
    assert (breaker.first_token, breaker.last_token) == (1290, 1300)
    assert CalibrationGap.objects.filter(organization=organization).exclude(gap_permille=0).exists()
    tags = DimensionDay.objects.filter(organization=organization, kind="tag:team")
    assert tags.get(model="gpt-4o").calls == 3
    assert conversation.totals.calls == 4 and conversation.totals.is_priced


def test_a_statement_for_the_raw_cursor_numbers_its_placeholders_once() -> None:
    """updates._numbered: "%s" become $1, $2... in order, "%%" a literal "%"; the text is
    built once and then reused (rows_fetch runs it through psycopg's RawCursor)."""
    sql = "SELECT %s, '100%%', x FROM t WHERE a = %s AND b LIKE '%%%%' AND c = %s"
    numbered = updates._numbered(sql)
    assert numbered == b"SELECT $1, '100%', x FROM t WHERE a = $2 AND b LIKE '%%' AND c = $3"
    assert updates._numbered(sql) is numbered
    if db_connection.vendor == "postgresql":
        assert updates.rows_fetch("SELECT %s::int + %s::int, '5%%'", [2, 3]) == [(5, "5%")]


def test_a_chat_works_with_its_statements_not_prepared(settings: Settings) -> None:
    """COSTLAB_DB_PREPARE_CALLS off (a pooler that cannot keep prepared statements): the
    send's and the turn's statements go through Django's cursor, and record the same."""
    settings.COSTLAB_DB_PREPARE_CALLS = False
    chat = make_chat(make_connection())
    calls = [send(chat, f"Question {n}?") for n in range(3)]
    assert [(c.status, c.index, c.request_end) for c in calls] == [
        (CallStatus.SUCCEEDED, n, 2 + 2 * n) for n in range(3)
    ]
    turns = Turn.objects.filter(conversation=chat.conversation).order_by("index")
    assert [t.index for t in turns] == [0, 1, 2]
    assert turns[2].simulated_cached_tokens > 0
    assert rollups.organization_drift(organization=chat.organization) == []


def test_a_tag_edit_while_the_reply_is_on_its_way_leaves_the_rollups_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker read the conversation (its tags) when it claimed the call; the tags are
    edited on the page before the turn is written. The turn's statement sees the edit (its
    Check) and the sums by tag are recomputed with the turn in them."""
    from conversations.models import Conversation, DimensionDay
    from conversations.services.tags import conversation_tags_set

    chat = make_chat(make_connection())
    send(chat, "First question?")
    answered = chats._call

    def answered_then_retagged(*args: Any, **kwargs: Any) -> Any:
        result = answered(*args, **kwargs)
        conversation = Conversation.objects.get(pk=chat.conversation_id)
        conversation_tags_set(conversation=conversation, tags={"team": "support"})
        return result

    monkeypatch.setattr(chats, "_call", answered_then_retagged)
    send(chat, "Second question?")
    assert rollups.organization_drift(organization=chat.organization) == []
    team = DimensionDay.objects.get(organization=chat.organization, kind="tag:team")
    assert (team.value, team.calls) == ("support", 2)


@pytest.mark.skipif(
    db_connection.vendor != "postgresql", reason="a locking read of a row committed meanwhile"
)
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_tag_edit_committed_while_the_turn_waits_for_the_rollup_lock_is_seen() -> None:
    """The edit's transaction holds the organization's rollup lock (exclusive) while the
    worker's turn statement waits for it (shared); the edit commits, then the turn's sums go
    in. Its Check finds the edited row (READ COMMITTED's locking read), and the sums by tag
    are recomputed: the rollups equal the raw rows."""
    from conversations.models import Conversation
    from conversations.services import dimension_rollups
    from conversations.services.rollup_lock import ADVISORY_NAMESPACE

    chat = make_chat(make_connection())
    send(chat, "First question?")
    call = chats.chat_message_send(chat=chat, text="Second question?")
    edited = threading.Event()
    failures: list[BaseException] = []

    def tag_edit() -> None:
        try:
            with db_connection.cursor() as cursor, transaction.atomic():
                Conversation.objects.filter(pk=chat.conversation_id).update(tags={"team": "a"})
                dimension_rollups.conversations_retagged(
                    organization=chat.organization, conversation_ids=[chat.conversation_id]
                )
                edited.set()
                for _ in range(400):  # until the turn's statement waits for the lock
                    cursor.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND classid = %s AND NOT granted",
                        [ADVISORY_NAMESPACE],
                    )
                    if cursor.fetchone()[0]:
                        break
                    time.sleep(0.025)
                else:
                    raise AssertionError("the turn never waited for the rollup lock")
        except BaseException as error:  # reported by the test's thread
            failures.append(error)
            edited.set()
        finally:
            db_connection.close()

    editor = threading.Thread(target=tag_edit)
    editor.start()
    assert edited.wait(30)
    tasks.api_call_run(call.pk)  # claims with the tags before the edit, waits, then writes
    editor.join(30)
    assert not failures, failures
    assert rollups.organization_drift(organization=chat.organization) == []


def test_the_one_statement_send_follows_the_stale_limit(settings: Settings) -> None:
    """The send's statement is built per stale limit, as the state's template it holds."""
    if db_connection.vendor != "postgresql":
        assert chats._send_at_once() is None  # SQLite sends through the locking path
        return
    for seconds in (390, 5):
        settings.COSTLAB_CALL_STALE_SECONDS = seconds
        statement = chats._send_at_once()
        assert statement is not None and statement.state is chats._state_template()
