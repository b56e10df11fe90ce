"""Experiments end to end: `manage.py experiment_run` (or the pages) plans and predicts, a
real Celery worker process (real broker) replays every turn through the call service and
the official SDK, over HTTP, to costlab's own endpoint on a live server."""

from __future__ import annotations

import json
import re
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection as database
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import Settings
from pytest_django.live_server_helper import LiveServer

from calls.models import (
    ApiCall,
    AttemptOutcome,
    CallStatus,
    Experiment,
    ExperimentStatus,
    ProviderConnection,
    Replay,
)
from calls.services import experiments
from calls.services.connections import ConnectionSettings, connection_create
from conversations import selectors as conversation_selectors
from conversations.engine.types import Call, Transcript
from conversations.engine.vocabulary import get_encoding
from conversations.models import (
    Conversation,
    ConversationSource,
    Message,
    Organization,
    Role,
    Turn,
    UsageRecord,
)
from conversations.services import rollups
from conversations.services.transcripts import transcripts_store
from tests.conftest import Worker, Workers
from tests.factories import MembershipFactory

pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

BASE = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read by the worker process as it starts (requested before `worker`)."""
    monkeypatch.setenv("COSTLAB_CALL_TIMEOUT_SECONDS", "10")
    monkeypatch.setenv("COSTLAB_CALL_BACKOFF_SECONDS", "0.1")
    monkeypatch.setenv("COSTLAB_JOB_HEARTBEAT_SECONDS", "1")


@pytest.fixture(autouse=True)
def vocabulary() -> None:
    # The live server runs in this process: load the vocabulary before the first call.
    get_encoding("o200k_base")


def conversations_stored(
    organization: Organization, *, count: int = 3, turns: int = 4
) -> list[Conversation]:
    """Conversations whose system prompts (~1,500 tokens) differ from their first words,
    so that no two share a cached prefix, each turn a minute after the previous one."""
    transcripts = []
    for number in range(count):
        system = f"Shop {number} assistant. " + f"Policy {number}: answer exactly. " * 220
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
        calls = []
        for turn in range(turns):
            messages.append({"role": "user", "content": f"Where is order {number}-{turn}?"})
            calls.append(
                Call(
                    request=list(range(len(messages))),
                    response=len(messages),
                    model="gpt-4o",
                    started_at=BASE + timedelta(minutes=turn),
                )
            )
            reply = f"Order {number}-{turn} left the warehouse on day {turn}. " * (turn + 2)
            messages.append({"role": "assistant", "content": reply})
        transcripts.append(
            Transcript(messages=messages, calls=calls, title=f"Orders {number}", model="gpt-4o")
        )
    with transaction.atomic():
        transcripts_store(organization=organization, transcripts=transcripts)
    return list(Conversation.objects.filter(organization=organization).order_by("title"))


def connect(
    organization: Organization, live_server: LiveServer, *, key: str, **headers: str
) -> ProviderConnection:
    return connection_create(
        organization=organization,
        user=None,
        settings=ConnectionSettings(
            name="built-in",
            base_url=f"{live_server.url}/v1",
            default_model="gpt-4o",
            extra_headers=dict(headers),
        ),
        api_key=key,
    )


def run_command(organization: Organization, conversations: list[Conversation], *args: str) -> Any:
    out = StringIO()
    call_command(
        "experiment_run",
        "--org",
        organization.slug,
        "--conversations",
        ",".join(str(c.code) for c in conversations),
        "--connection",
        "built-in",
        "--format",
        "json",
        *args,
        stdout=out,
    )
    return json.loads(out.getvalue())


def finished(experiment: Experiment, worker: Worker, timeout: float = 120) -> Experiment:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        experiment.refresh_from_db()
        if experiment.is_finished or worker.poll() is not None:
            break
        time.sleep(0.1)
    if not experiment.is_finished:
        pytest.fail(f"the experiment did not finish; worker log:\n{worker.log()}")
    return experiment


def one_call_per_turn(experiment: Experiment) -> None:
    """Every (replay, index) has exactly one call and the replayed conversation one turn
    per index: nothing doubled, nothing missing."""
    for replay in experiment.replays.all():
        indexes = list(replay.calls.values_list("index", flat=True))
        assert sorted(i or 0 for i in indexes) == list(range(len(replay.plan))), indexes
        turns = list(Turn.objects.filter(conversation=replay.conversation).values_list("index"))
        assert sorted(t[0] for t in turns) == list(range(len(replay.plan)))
        billing = UsageRecord.objects.filter(conversation=replay.conversation, is_billing=True)
        assert billing.count() == len(replay.plan)


def test_it_replays_three_conversations_under_two_variants_as_predicted(
    client: Client, live_server: LiveServer, worker_env: None, worker: Worker
) -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    organization = membership.organization
    conversations = conversations_stored(organization)
    connect(organization, live_server, key="sk-experiment-one")
    report = run_command(
        organization,
        conversations,
        "--variant",
        "model=gpt-4o,strategy=full,label=baseline",
        "--variant",
        "model=gpt-4o-mini,strategy=window:2,label=mini window",
        "--wait",
        "--timeout",
        "120",
    )
    experiment = Experiment.objects.get(code=report["experiment"])
    assert report["status"] == ExperimentStatus.SUCCEEDED, worker.log()
    assert [v["label"] for v in report["variants"]] == ["baseline", "mini window"]
    for variant in report["variants"]:
        turns = variant["turns"]
        assert len(turns) == 3 * 4
        # gpt-4o and gpt-4o-mini are prefix_128 models: the endpoint and the simulator
        # share their rules, so the measurement is the prediction, turn by turn...
        for turn in turns:
            assert turn["measured_cached_tokens"] == turn["predicted_cached_tokens"], turn
            assert turn["measured_cost"] == turn["predicted_cost"], turn
            assert turn["latency_ms"] is not None
        # ...and the prediction is not trivially zero: later turns read the cache.
        assert sum(t["measured_cached_tokens"] for t in turns) > 0
        assert turns[0]["measured_cached_tokens"] == 0  # cold
        predicted, measured = variant["predicted"], variant["measured"]
        assert measured["cost"] == predicted["cost"]
        assert measured["cached_tokens"] == predicted["cached_tokens"]
        assert measured["calls"] == predicted["calls"] == 12
        assert Decimal(measured["cost"]) > 0
    # The window strategy sends less: cheaper, as predicted.
    base, window = (Decimal(v["measured"]["cost"]) for v in report["variants"])
    assert window < base
    one_call_per_turn(experiment)
    # Every replay is a stored conversation (source "replay") linked to its original.
    replays = list(Replay.objects.filter(experiment=experiment).select_related("conversation"))
    assert len(replays) == 6
    assert {r.original_id for r in replays} == {c.pk for c in conversations}
    assert all(
        r.conversation.source == ConversationSource.REPLAY for r in replays if r.conversation
    )
    # The calibration view counts the replayed calls.
    filters = conversation_selectors.UsageFilter()
    calibrated = {c.model: c for c in conversation_selectors.calibration(organization, filters)}
    assert calibrated["gpt-4o-mini"].calls == 12
    assert calibrated["gpt-4o-mini"].cached_exact_share == 1.0
    assert conversation_selectors.calibration_replayed_calls(organization, filters) == 24
    # Each recorded turn joined the rollups the pages read.
    assert not rollups.organization_drift(organization=organization)
    # The results page shows what the JSON says.
    client.force_login(membership.user)
    page = client.get(reverse("experiment_detail", args=[organization.slug, experiment.code]))
    assert page.status_code == 200
    html = page.content.decode()
    for variant in report["variants"]:
        assert f'data-measured-cost="{variant["measured"]["cost"]}"' in html
        assert f'data-measured-cached="{variant["measured"]["cached_tokens"]}"' in html
        assert f'data-predicted-cost="{variant["predicted"]["cost"]}"' in html
    assert 'data-status="succeeded"' in html and "Finished" in html
    replayed = replays[0].conversation
    assert replayed is not None
    detail = client.get(reverse("conversation_detail", args=[organization.slug, replayed.code]))
    assert str(experiment.code) in detail.content.decode()
    assert replays[0].original is not None
    assert str(replays[0].original.code) in detail.content.decode()
    overview = client.get(reverse("org_overview", args=[organization.slug])).content.decode()
    assert "24 of these calls were" in overview
    # The totals say what the replays add to them: every measured call, at what it cost.
    share = conversation_selectors.replay_share(organization, filters)
    measured_cost = sum(Decimal(v["measured"]["cost"]) for v in report["variants"])
    assert share.calls == 24 and share.cost == measured_cost
    assert re.search(r"incl\. experiments' replays: \$[\d.]+ in 24 calls", overview)
    csv = client.get(reverse("experiment_csv", args=[organization.slug, experiment.code]))
    lines = b"".join(csv.streaming_content).decode().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 + 24


def test_it_slows_down_on_429s_and_loses_nothing(
    live_server: LiveServer, worker_env: None, worker: Worker
) -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    organization = membership.organization
    conversations = conversations_stored(organization, count=2, turns=3)
    # Every distinct request is refused once, with a second to wait.
    connect(
        organization,
        live_server,
        key="sk-experiment-429",
        **{"X-Costlab-Fault": "429", "X-Costlab-Fault-Times": "1", "X-Costlab-Retry-After": "1"},
    )
    started = time.monotonic()
    report = run_command(
        organization, conversations, "--variant", "model=gpt-4o", "--wait", "--timeout", "120"
    )
    elapsed = time.monotonic() - started
    assert report["status"] == ExperimentStatus.SUCCEEDED
    turns = report["variants"][0]["turns"]
    assert len(turns) == 6
    assert all(t["measured_cached_tokens"] == t["predicted_cached_tokens"] for t in turns)
    experiment = Experiment.objects.get(code=report["experiment"])
    one_call_per_turn(experiment)
    for call in ApiCall.objects.filter(replay__experiment=experiment):
        outcomes = list(call.attempts.order_by("number").values_list("outcome", flat=True))
        assert outcomes == [AttemptOutcome.RATE_LIMITED, AttemptOutcome.OK]
    assert elapsed >= 3  # three turns in order, each waiting out its Retry-After


@pytest.mark.skipif(
    database.vendor == "sqlite",
    reason="SQLite has one writer, so a running job cannot beat; its stale limit is an hour "
    "(costlab/heartbeat.py), too long to sweep in a test",
)
def test_it_finishes_after_its_worker_is_killed_with_no_turn_twice_or_missing(
    live_server: LiveServer,
    settings: Settings,
    worker_env: None,
    workers: Workers,
) -> None:
    settings.COSTLAB_ENDPOINT_SLOW_CHUNK_MS = 150  # every call in flight for 0.6 s
    membership = MembershipFactory.create(role=Role.ANALYST)
    organization = membership.organization
    conversations = conversations_stored(organization, count=3, turns=5)
    connection = connect(
        organization, live_server, key="sk-experiment-kill", **{"X-Costlab-Fault": "slow"}
    )
    first = workers.start()
    report = run_command(organization, conversations, "--variant", "model=gpt-4o")
    experiment = Experiment.objects.get(code=report["experiment"])
    deadline = time.monotonic() + 60
    while ApiCall.objects.filter(replay__experiment=experiment, status="succeeded").count() < 4:
        if time.monotonic() > deadline:
            pytest.fail(f"no progress; worker log:\n{first.log()}")
        time.sleep(0.05)
    time.sleep(0.3)  # halfway through the next (slow) calls
    first.kill_group(signal.SIGKILL)
    first.wait()
    # A COMMIT the worker wrote to its socket just before dying still lands: let it.
    time.sleep(1)
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.RUNNING
    done = ApiCall.objects.filter(replay__experiment=experiment, status=CallStatus.SUCCEEDED)
    assert 4 <= done.count() < 15
    in_flight = ApiCall.objects.filter(replay__experiment=experiment, status=CallStatus.RUNNING)
    cut = set(in_flight.values_list("pk", flat=True))
    assert cut  # killed in the middle of calls
    # The endpoint is quick again; a new worker starts, and the sweep finds the experiment.
    ProviderConnection.objects.filter(pk=connection.pk).update(
        extra_headers={}, updated=timezone.now()
    )
    second = workers.start()
    settings.COSTLAB_JOB_STALE_SECONDS = 0
    assert experiments.experiments_sweep().requeued == [experiment.pk]
    experiment = finished(experiment, second)
    assert experiment.status == ExperimentStatus.SUCCEEDED, experiment.error
    one_call_per_turn(experiment)
    calls = ApiCall.objects.filter(replay__experiment=experiment)
    assert Counter(calls.values_list("status", flat=True)) == {CallStatus.SUCCEEDED: 15}
    assert not rollups.organization_drift(organization=organization)  # no turn counted twice
    # The calls cut by the kill keep their lost attempt: the provider may have billed it.
    sent_before = 0
    for call in calls.filter(pk__in=cut):
        outcomes = list(call.attempts.order_by("id").values_list("outcome", flat=True))
        assert outcomes[-1] == AttemptOutcome.OK and outcomes.count(AttemptOutcome.OK) == 1
        sent_before += outcomes[0] == AttemptOutcome.SENT
    assert sent_before  # at least one request had left when the worker died


def test_it_stops_making_calls_once_cancelled(
    client: Client, live_server: LiveServer, worker_env: None, worker: Worker
) -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    organization = membership.organization
    conversations = conversations_stored(organization, count=2, turns=6)
    connect(organization, live_server, key="sk-experiment-cancel")
    report = run_command(organization, conversations, "--variant", "model=gpt-4o,pacing=fixed:1")
    experiment = Experiment.objects.get(code=report["experiment"])
    deadline = time.monotonic() + 60
    while not ApiCall.objects.filter(replay__experiment=experiment, status="succeeded").exists():
        if time.monotonic() > deadline:
            pytest.fail(f"no progress; worker log:\n{worker.log()}")
        time.sleep(0.05)
    client.force_login(membership.user)
    url = reverse("experiment_cancel", args=[organization.slug, experiment.code])
    assert client.post(url).status_code == 302
    experiment = finished(experiment, worker)
    assert experiment.status == ExperimentStatus.CANCELLED
    assert experiment.cancel_requested is not None
    calls = ApiCall.objects.filter(replay__experiment=experiment)
    assert calls.count() < 12
    # Within one call: a replay that had passed its check may still make that one call.
    after = calls.filter(requested_at__gt=experiment.cancel_requested)
    assert after.count() <= 2
    assert not calls.filter(status__in=(CallStatus.PENDING, CallStatus.RUNNING)).exists()
    time.sleep(1.5)  # longer than a pacing gap: nothing more is called
    assert ApiCall.objects.filter(replay__experiment=experiment).count() == calls.count()


def test_it_stops_at_the_spend_cap_and_says_so(
    live_server: LiveServer, worker_env: None, worker: Worker
) -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    organization = membership.organization
    conversations = conversations_stored(organization, count=2, turns=6)
    connect(organization, live_server, key="sk-experiment-cap")
    report = run_command(
        organization,
        conversations,
        "--variant",
        "model=gpt-4o,pacing=fixed:0.2",
        "--cap",
        "0.01",
        "--wait",
        "--timeout",
        "120",
    )
    assert report["status"] == ExperimentStatus.CAPPED
    assert "cap of $0.01" in report["error"]
    spent = Decimal(report["spent"])
    assert spent >= Decimal("0.01")
    assert report["turns_done"] < report["turns_total"] == 12
    # It stopped at the first check past the cap: the calls in flight then, no more.
    one_call_cost = max(
        Decimal(t["measured_cost"]) for t in report["variants"][0]["turns"] if t["measured_cost"]
    )
    assert spent < Decimal("0.01") + 2 * one_call_cost


def test_it_refuses_a_start_above_the_threshold_without_confirmation(
    live_server: LiveServer, settings: Settings
) -> None:
    settings.COSTLAB_EXPERIMENT_CONFIRM_USD = Decimal("0.001")
    membership = MembershipFactory.create(role=Role.ANALYST)
    organization = membership.organization
    conversations = conversations_stored(organization, count=1, turns=2)
    connection = connect(organization, live_server, key="sk-experiment-confirm")
    experiment = experiments.experiment_create(
        organization=organization,
        user=None,
        conversations=conversations,
        variants=[experiments.variant_parse("model=gpt-4o")],
        connection=connection,
    )
    assert experiment.predicted_spend is not None and experiment.predicted_spend > Decimal("0.001")
    with pytest.raises(experiments.ExperimentRefused, match="confirm"):
        experiments.experiment_start(experiment=experiment, membership=membership)
    viewer = MembershipFactory.create(organization=organization, role=Role.VIEWER)
    with pytest.raises(experiments.ExperimentRefused, match="analysts"):
        experiments.experiment_start(experiment=experiment, membership=viewer, confirmed=True)
    assert Experiment.objects.get(pk=experiment.pk).status == ExperimentStatus.DRAFT
    assert not Conversation.objects.filter(source=ConversationSource.REPLAY).exists()
    started = experiments.experiment_start(
        experiment=experiment, membership=membership, confirmed=True
    )
    assert started.status == ExperimentStatus.PENDING
    assert started.cap == experiments.default_cap(experiment.predicted_spend)
    assert Conversation.objects.filter(source=ConversationSource.REPLAY).count() == 1


def test_it_replays_fresh_replies_and_makes_the_summary_calls_for_real(
    live_server: LiveServer, worker_env: None, worker: Worker
) -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    organization = membership.organization
    conversations = conversations_stored(organization, count=1, turns=4)
    connect(organization, live_server, key="sk-experiment-fresh")
    report = run_command(
        organization,
        conversations,
        "--variant",
        "model=gpt-4o,strategy=summarize:1580:50",
        "--history",
        "fresh",
        "--wait",
        "--timeout",
        "120",
    )
    assert report["status"] == ExperimentStatus.SUCCEEDED
    experiment = Experiment.objects.get(code=report["experiment"])
    one_call_per_turn(experiment)
    replay = experiment.replays.get()
    summaries = [n for n, step in enumerate(replay.plan) if step["summary"]]
    assert summaries, "the threshold should make at least one summary call"
    calls = {c.index: c for c in replay.calls.all()}
    messages = {m.index: m for m in Message.objects.filter(conversation=replay.conversation)}
    for number, step in enumerate(replay.plan):
        call = calls[number]
        # Every reply the run produced is in the replayed conversation's history...
        produced = messages[step["response"]]
        assert produced.data["content"] == call.reply
        assert produced.role == ("system" if step["summary"] else "assistant")
        # ...and, being as long as the recorded one, each prompt is as long as predicted.
        assert call.usage is not None
        assert call.usage["prompt_tokens"] == step["predicted"]["prompt_tokens"], number
    # The original's replies are not the replay's: fresh replies entered the history.
    original = {m.index: m.data for m in conversations[0].messages.all()}
    answer = replay.plan[0]["response"]
    assert messages[answer].data["content"] != original[answer]["content"]
