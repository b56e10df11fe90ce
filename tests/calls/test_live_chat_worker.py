"""Live chat end to end: the pages post, a real Celery worker process (real broker) makes
the calls through the official SDK over HTTP to costlab's own endpoint on a live server,
and records the turns."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from itertools import pairwise

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import Settings
from pytest_django.live_server_helper import LiveServer

from calls import selectors, simulated
from calls.models import ApiCall, AttemptOutcome, CallStatus, Chat, ProviderConnection
from calls.services import chats
from calls.services.connections import ConnectionSettings, connection_create
from conversations.engine.vocabulary import get_encoding
from conversations.models import Membership, Role, Turn, UsageRecord
from pricing.models import ModelPrice
from tests.conftest import Worker, Workers
from tests.factories import MembershipFactory

pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

POLICY = "You are the support assistant of ACME. " + "Answer politely and cite the policy. " * 200


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read by the worker process as it starts (requested before `worker`)."""
    monkeypatch.setenv("COSTLAB_CALL_TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("COSTLAB_CALL_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("COSTLAB_CALL_BACKOFF_SECONDS", "0.1")


@pytest.fixture(autouse=True)
def endpoint_state() -> Iterator[None]:
    assert ModelPrice.objects.filter(model="gpt-4o", organization=None).exists()
    # The live server runs in this process: load the vocabulary now, or the first call
    # would spend the worker's short timeout on it.
    get_encoding("o200k_base")
    simulated.simulate_reset()
    selectors.endpoint_books_forget()
    yield
    selectors.endpoint_books_forget()


def analyst_in(client: Client) -> Membership:
    membership = MembershipFactory.create(role=Role.ANALYST)
    client.force_login(membership.user)
    return membership


def connect(
    membership: Membership, live_server: LiveServer, *, key: str = "sk-dev", **headers: str
) -> ProviderConnection:
    return connection_create(
        organization=membership.organization,
        user=None,
        settings=ConnectionSettings(
            name="built-in",
            base_url=f"{live_server.url}/v1",
            default_model="gpt-4o",
            extra_headers=dict(headers),
        ),
        api_key=key,
    )


def start_chat(client: Client, membership: Membership, connection: ProviderConnection) -> Chat:
    slug = membership.organization.slug
    response = client.post(
        reverse("chat_new", args=[slug]),
        {
            "connection": connection.pk,
            "model": "gpt-4o",
            "system_prompt": POLICY,
            "use_cache_key": "on",
            "stream": "on",
            "max_completion_tokens": "150",
        },
    )
    assert response.status_code == 302, response.content
    return Chat.objects.get(organization=membership.organization)


def finished(call: ApiCall, worker: Worker, timeout: float = 60) -> ApiCall:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        call.refresh_from_db()
        if call.is_finished or worker.poll() is not None:
            break
        time.sleep(0.1)
    if not call.is_finished:
        pytest.fail(f"the worker did not finish the call; its log:\n{worker.log_path.read_text()}")
    return call


def say(client: Client, chat: Chat, text: str, worker: Worker) -> ApiCall:
    url = reverse("chat_send", args=[chat.organization.slug, chat.code])
    assert client.post(url, {"text": text}).status_code == 302
    return finished(chat.calls.order_by("-index").first() or pytest.fail("no call"), worker)


def test_it_chats_five_turns_whose_reported_usage_is_the_engines(
    client: Client, live_server: LiveServer, worker_env: None, worker: Worker
) -> None:
    membership = analyst_in(client)
    chat = start_chat(client, membership, connect(membership, live_server))
    calls = [say(client, chat, f"Question {n}: where is order {n}?", worker) for n in range(5)]
    assert [c.status for c in calls] == [CallStatus.SUCCEEDED] * 5, [c.error for c in calls]
    turns = list(Turn.objects.filter(conversation=chat.conversation).order_by("index"))
    assert [t.index for t in turns] == [0, 1, 2, 3, 4]
    cached = []
    for turn, call in zip(turns, calls, strict=True):
        records = {r.source: r for r in turn.usage_records.all()}
        reported, estimated = records["reported"], records["estimated"]
        # What the endpoint reported is what was recorded and billed...
        assert call.usage is not None and reported.raw == call.usage and reported.is_billing
        assert reported.prompt_tokens == call.usage["prompt_tokens"]
        assert reported.input_cached == call.usage["prompt_tokens_details"]["cached_tokens"]
        # ...and it is exactly what costlab's engine predicts for the same turn.
        assert (reported.prompt_tokens, reported.input_cached, reported.output) == (
            estimated.prompt_tokens,
            estimated.input_cached,
            estimated.output,
        )
        # One attempt each: a timed-out attempt would have warmed the endpoint's cache.
        assert call.attempt_count == 1
        assert call.ttft_ms is not None and call.latency_ms is not None and call.stream
        cached.append(reported.input_cached)
    # Cold first, then every turn reads more of the growing conversation from the cache.
    assert cached[0] == 0 and all(a < b for a, b in pairwise(cached))
    # The chat page shows every reply with its figures; the overview lists the chat.
    page = client.get(reverse("chat_detail", args=[membership.organization.slug, chat.code]))
    html = page.content.decode()
    assert html.count('class="figures"') == 5
    assert f"{cached[4]:,}" in html
    overview = client.get(reverse("org_overview", args=[membership.organization.slug]))
    assert str(chat.conversation.code) in overview.content.decode()


def test_it_retries_a_429_after_its_retry_after(
    client: Client, live_server: LiveServer, worker_env: None, worker: Worker
) -> None:
    membership = analyst_in(client)
    connection = connect(
        membership,
        live_server,
        **{"X-Costlab-Fault": "429", "X-Costlab-Fault-Times": "1", "X-Costlab-Retry-After": "1"},
    )
    chat = start_chat(client, membership, connection)
    call = say(client, chat, "Hello?", worker)
    assert call.status == CallStatus.SUCCEEDED, call.error
    first, second = call.attempts.order_by("number")
    assert first.outcome == AttemptOutcome.RATE_LIMITED and first.retry_after_seconds == 1
    assert second.outcome == AttemptOutcome.OK
    assert (second.started_at - first.started_at).total_seconds() >= 1


def test_it_fails_at_once_on_a_401(
    client: Client,
    live_server: LiveServer,
    settings: Settings,
    worker_env: None,
    worker: Worker,
) -> None:
    settings.COSTLAB_DEV = False  # the live server now takes issued keys only
    membership = analyst_in(client)
    chat = start_chat(client, membership, connect(membership, live_server, key="sk-wrong"))
    call = say(client, chat, "Hello?", worker)
    assert call.status == CallStatus.FAILED and call.attempt_count == 1
    assert "Incorrect API key" in call.error
    assert call.attempts.get().status_code == 401
    turn = Turn.objects.get(conversation=chat.conversation)
    assert turn.response is None  # kept as a request that got no reply, billed nothing
    page = client.get(reverse("chat_detail", args=[membership.organization.slug, chat.code]))
    assert "Incorrect API key" in page.content.decode()


def test_it_gives_up_on_a_call_that_keeps_timing_out(
    client: Client,
    live_server: LiveServer,
    settings: Settings,
    worker_env: None,
    worker: Worker,
) -> None:
    settings.COSTLAB_ENDPOINT_TIMEOUT_FAULT_SECONDS = 4  # the worker waits 3 s per attempt
    membership = analyst_in(client)
    connection = connect(membership, live_server, **{"X-Costlab-Fault": "timeout"})
    chat = start_chat(client, membership, connection)
    call = say(client, chat, "Hello?", worker)
    assert call.status == CallStatus.FAILED
    outcomes = list(call.attempts.values_list("outcome", flat=True))
    assert outcomes == [AttemptOutcome.TIMEOUT, AttemptOutcome.TIMEOUT]
    assert "gave up after 2 attempts" in call.error


def test_it_records_one_turn_when_the_worker_is_killed_mid_call(
    client: Client,
    live_server: LiveServer,
    settings: Settings,
    worker_env: None,
    workers: Workers,
) -> None:
    settings.COSTLAB_ENDPOINT_TIMEOUT_FAULT_SECONDS = 20  # holds the first call in flight
    membership = analyst_in(client)
    connection = connect(membership, live_server, **{"X-Costlab-Fault": "timeout"})
    chat = start_chat(client, membership, connection)
    first = workers.start()
    url = reverse("chat_send", args=[chat.organization.slug, chat.code])
    assert client.post(url, {"text": "Hello?"}).status_code == 302
    call = chat.calls.get()
    deadline = time.monotonic() + 60
    while not call.attempts.exists():  # the request has left: kill the worker now
        if time.monotonic() > deadline:
            pytest.fail(f"no attempt was sent; worker log:\n{first.log()}")
        time.sleep(0.05)
    first.kill_group(signal.SIGKILL)
    first.wait()
    call.refresh_from_db()
    assert call.status == CallStatus.RUNNING and not Turn.objects.exists()
    # The endpoint is healthy again; a new worker starts, and the sweep finds the call.
    ProviderConnection.objects.filter(pk=connection.pk).update(
        extra_headers={}, updated=timezone.now()
    )
    second = workers.start()
    settings.COSTLAB_CALL_STALE_SECONDS = 0
    assert chats.api_calls_sweep().requeued == 1
    call = finished(call, second)
    assert call.status == CallStatus.SUCCEEDED, call.error
    assert Turn.objects.filter(conversation=chat.conversation).count() == 1
    assert UsageRecord.objects.filter(conversation=chat.conversation, is_billing=True).count() == 1
    # The lost attempt stays visible: it may have been billed by the provider.
    outcomes = list(call.attempts.order_by("id").values_list("outcome", flat=True))
    assert outcomes[0] == AttemptOutcome.SENT and outcomes[-1] == AttemptOutcome.OK
