"""Experiments without a worker: variants as typed, planning and prediction, what the
pages offer and refuse, and the per-turn CSV (safe against formula injection)."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import Client
from django.urls import reverse
from pytest_django import Settings

from calls.models import (
    CacheKeyPolicy,
    Experiment,
    ExperimentStatus,
    Pacing,
    ProviderConnection,
    Replay,
)
from calls.services import experiments
from calls.services.connections import ConnectionSettings, connection_create
from calls.services.experiments import ExperimentInvalid, variant_parse
from conversations.engine.profiles import default_profile
from conversations.engine.render import count_request
from conversations.engine.types import Call, Transcript
from conversations.models import Conversation, Membership, Organization, Role
from conversations.services.transcripts import transcripts_store
from conversations.templatetags.costlab import usd
from tests.calls.test_experiments_worker import conversations_stored
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def connection_of(organization: Organization, name: str = "built-in") -> ProviderConnection:
    return connection_create(
        organization=organization,
        user=None,
        settings=ConnectionSettings(name=name, base_url="http://127.0.0.1:9/v1"),
        api_key="sk-unit-0000",
    )


def draft(membership: Membership, *variants: str, count: int = 2, turns: int = 3) -> Experiment:
    organization = membership.organization
    return experiments.experiment_create(
        organization=organization,
        user=None,
        conversations=conversations_stored(organization, count=count, turns=turns),
        variants=[variant_parse(v) for v in variants or ("model=gpt-4o",)],
        connection=connection_of(organization),
    )


def test_it_parses_a_variant_with_every_field() -> None:
    spec = variant_parse(
        "model=gpt-5.6,strategy=trim:4000,connection=prod,label=trimmed,cache_key=experiment,"
        "retention=24h,breakpoints=explicit,ttl=1h,pacing=recorded/60,stream=true"
    )
    assert (spec.model, spec.strategy, spec.connection, spec.label) == (
        "gpt-5.6",
        "trim:4000",
        "prod",
        "trimmed",
    )
    assert spec.cache_key == CacheKeyPolicy.EXPERIMENT and spec.retention == "24h"
    assert spec.cache_options == {"mode": "explicit", "ttl": "1h"}
    assert (spec.pacing, spec.pacing_value, spec.stream) == (Pacing.RECORDED, 60.0, True)
    assert variant_parse("model=x,pacing=fixed:2.5").pacing_value == 2.5
    assert variant_parse("model=x").pacing == Pacing.FIXED


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("strategy=full", "model=... is required"),
        ("model=x,colour=red", "unknown field 'colour'"),
        ("model=x,strategy=window", "strategy 'window'"),
        ("model=x,pacing=slowly", "pacing 'slowly'"),
        ("model=x,cache_key=sometimes", "cache_key must be one of"),
        ("model=x,stream=yes", "stream must be true or false"),
        ("model=x,oops", "'oops' is not NAME=VALUE"),
    ],
)
def test_it_names_what_is_wrong_in_a_variant(text: str, says: str) -> None:
    with pytest.raises(ExperimentInvalid, match=says.replace(".", r"\.").replace("(", r"\(")):
        variant_parse(text)


def test_it_predicts_every_variant_and_plans_every_call() -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    experiment = draft(
        membership,
        "model=gpt-4o,strategy=full,pacing=recorded/10",
        "model=gpt-4o,strategy=window:2,cache_key=none",
    )
    full, window = experiment.variants.order_by("position")
    assert experiment.status == ExperimentStatus.DRAFT and experiment.turns_total == 12
    assert full.prediction["calls"] == window.prediction["calls"] == 6
    assert window.prediction["peak_prompt_tokens"] < full.prediction["peak_prompt_tokens"]
    assert Decimal(window.prediction["cost"]) < Decimal(full.prediction["cost"])
    spend = Decimal(full.prediction["cost"]) + Decimal(window.prediction["cost"])
    assert experiment.predicted_spend == spend
    replay = Replay.objects.get(variant=full, original__title="Orders 0")
    # Recorded gaps of a minute, divided by 10; the first call goes at once.
    assert [step["gap"] for step in replay.plan] == [0.0, 6.0, 6.0]
    assert [step["request"][-1] for step in replay.plan] == [1, 3, 5]
    # Cold first, then the growing prefix hits, in 128-token steps (prefix_128).
    cached = [step["predicted"]["cached_tokens"] for step in replay.plan]
    assert cached[0] == 0 and 0 < cached[1] <= cached[2] and cached[2] % 128 == 0
    # Each variant has its own key per conversation: nothing shared with another run.
    key = experiments.cache_key_for(full, replay.original)  # type: ignore[arg-type]
    assert key and experiment.code.hex[:16] in key and "-v0-" in key
    assert experiments.cache_key_for(window, replay.original) is None  # type: ignore[arg-type]
    # Nothing is written for the replays before the start.
    assert not Conversation.objects.filter(source="replay").exists()


def test_a_replay_is_predicted_for_the_reply_it_asks_for_not_the_originals_billed_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The original's reported output (here a reasoning model's 2,589 tokens) is what the
    what-if keeps for the original; a replay asks for the recorded reply's length
    (max_tokens) and is predicted for that, so measured and predicted stay comparable, even
    from a transcript that carries the reported outputs."""
    import dataclasses
    from functools import partial

    from conversations import selectors
    from conversations.engine.types import Usage

    monkeypatch.setattr(
        experiments,
        "conversation_transcript",
        partial(selectors.conversation_transcript, reported_output=True),
    )

    predicted = []
    for reported in (False, True):
        membership = MembershipFactory.create(role=Role.ANALYST)
        organization = membership.organization
        (conversation,) = conversations_stored(organization, count=1, turns=2)
        if reported:
            transcript = selectors.conversation_transcript(conversation)
            calls = [
                dataclasses.replace(
                    c, usage=Usage(prompt_tokens=10, completion_tokens=2_589, total_tokens=2_599)
                )
                for c in transcript.calls or []
            ]
            conversation.delete()
            with transaction.atomic():
                transcripts_store(
                    organization=organization,
                    transcripts=[dataclasses.replace(transcript, calls=calls, external_id="r")],
                )
            conversation = Conversation.objects.get(organization=organization)
        experiment = experiments.experiment_create(
            organization=organization,
            user=None,
            conversations=[conversation],
            variants=[variant_parse("model=gpt-4o")],
            connection=connection_of(organization),
        )
        plan = Replay.objects.get(variant__experiment=experiment).plan
        assert all(s["predicted"]["completion_tokens"] == s["max_tokens"] for s in plan)
        predicted.append(experiment.variants.get().prediction["cost"])
        if reported:  # the transcript the experiment read did carry them
            outputs = [
                c.output
                for c in selectors.conversation_transcript(conversation, reported_output=True).calls
                or []
            ]
            assert outputs and all(o is not None and o.completion_tokens == 2_589 for o in outputs)
    assert predicted[0] == predicted[1]


def test_it_refuses_what_it_cannot_run(settings: Settings) -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    organization = membership.organization
    conversations = conversations_stored(organization, count=3, turns=1)
    connection = connection_of(organization)
    settings.COSTLAB_EXPERIMENT_MAX_CONVERSATIONS = 2
    with pytest.raises(ExperimentInvalid, match="at most 2"):
        experiments.experiment_create(
            organization=organization,
            user=None,
            conversations=conversations,
            variants=[variant_parse("model=gpt-4o")],
            connection=connection,
        )
    other = MembershipFactory.create().organization
    with pytest.raises(ExperimentInvalid, match="not this organization's"):
        experiments.experiment_create(
            organization=other,
            user=None,
            conversations=conversations[:1],
            variants=[variant_parse("model=gpt-4o")],
            connection=connection_of(other),
        )
    with pytest.raises(ExperimentInvalid, match="no connection named 'prod'"):
        experiments.experiment_create(
            organization=organization,
            user=None,
            conversations=conversations[:1],
            variants=[variant_parse("model=gpt-4o,connection=prod")],
            connection=None,
        )
    assert not Experiment.objects.exists()


def test_the_command_names_a_bad_argument() -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    slug = membership.organization.slug
    with pytest.raises(CommandError, match="no organization"):
        call_command("experiment_run", "--org=nope", "--conversations=x", "--variant=model=x")
    with pytest.raises(CommandError, match="no conversation 'x'"):
        call_command("experiment_run", f"--org={slug}", "--conversations=x", "--variant=model=x")


def test_the_new_experiment_page_offers_the_overviews_filtered_conversations(
    client: Client,
) -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    organization = membership.organization
    conversations_stored(organization, count=2, turns=1)
    client.force_login(membership.user)
    url = reverse("experiment_new", args=[organization.slug])
    offered = client.get(url + "?model=gpt-4o").content.decode()
    assert offered.count('name="conversations"') == 2
    assert (
        client.get(url + "?model=gpt-3.5-turbo").content.decode().count('name="conversations"') == 0
    )
    # Predict with none checked: refused, and the same two are offered again to check
    # (the list held only the checked ones: none).
    refused = client.post(url + "?model=gpt-4o", {"variants": "model=gpt-4o-mini"})
    assert refused.status_code == 400
    assert refused.content.decode().count('name="conversations"') == 2
    viewer = MembershipFactory.create(organization=organization, role=Role.VIEWER)
    client.force_login(viewer.user)
    assert client.get(url).status_code == 403


def test_the_new_experiment_page_picks_the_only_connection_and_no_other(client: Client) -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    organization = membership.organization
    only = connection_of(organization)
    client.force_login(membership.user)
    url = reverse("experiment_new", args=[organization.slug])
    assert f'<option value="{only.pk}" selected>' in client.get(url).content.decode()
    other = connection_of(organization, name="another")
    page = client.get(url).content.decode()
    for connection in (only, other):  # two: the user chooses, and is told to
        assert f'<option value="{connection.pk}">' in page
    assert '<option value="" selected>Choose a connection…</option>' in page


def test_the_csv_neutralises_cells_a_spreadsheet_would_run(client: Client) -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    experiment = draft(membership, "model=gpt-4o,label=@SUM(A1)", count=1, turns=2)
    Conversation.objects.filter(organization=membership.organization).update(
        title='=HYPERLINK("http://evil.example","x")'
    )
    Experiment.objects.filter(pk=experiment.pk).update(name="-2+3")
    client.force_login(membership.user)
    response = client.get(
        reverse("experiment_csv", args=[membership.organization.slug, experiment.code])
    )
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:4] == ["variant", "conversation", "title", "turn"]
    assert len(rows) == 1 + 2
    assert [row[3] for row in rows[1:]] == ["1", "2"]  # from 1, as the chart and exports
    for row in rows[1:]:
        assert row[0] == "'@SUM(A1)"
        assert row[2] == '\'=HYPERLINK("http://evil.example","x")'
        assert row[4] == "pending"
    for cell in (cell for row in rows for cell in row):
        assert cell[:1] not in ("=", "+", "@", "\t", "\r")


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@A1", "\tx", "\rx"])
def test_it_quotes_every_formula_lead(value: str) -> None:
    # The experiment CSV writes through the exports' writer (conversations/csv_export.py).
    from conversations.csv_export import csv_lines

    _header, line = csv_lines(["text", "number"], [[value, -1]])
    assert next(csv.reader([line])) == ["'" + value, "-1"]  # numbers stay numbers


def test_the_results_page_stops_polling_once_finished(client: Client) -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    experiment = draft(membership, count=1, turns=1)
    client.force_login(membership.user)
    url = reverse("experiment_detail", args=[membership.organization.slug, experiment.code])
    page = client.get(url).content.decode()
    assert 'id="experiment-start"' in page and "Start the experiment" in page
    # The prediction reads as money, as the results table does (it was the Decimal's text cut
    # at ten characters, and a prediction of $0 read "unpriced").
    variant = experiment.variants.get()
    cost = Decimal(str(variant.prediction["cost"]))
    assert f'data-predicted-cost="{variant.prediction["cost"]}">{usd(cost)}</td>' in page
    Experiment.objects.filter(pk=experiment.pk).update(status=ExperimentStatus.RUNNING)
    polled = client.get(url, headers={"HX-Request": "true"})
    assert polled.status_code == 200 and 'hx-trigger="every 1s"' in polled.content.decode()
    Experiment.objects.filter(pk=experiment.pk).update(status=ExperimentStatus.SUCCEEDED)
    assert client.get(url, headers={"HX-Request": "true"}).status_code == 286


def test_it_sets_time_limits_and_late_acks_on_the_experiment_task(settings: Settings) -> None:
    from calls import tasks

    task = tasks.experiment_run
    assert (task.soft_time_limit, task.time_limit) == (
        tasks.EXPERIMENT_SOFT_TIME_LIMIT,
        tasks.EXPERIMENT_TIME_LIMIT,
    )
    # Past the soft limit the threads finish their call (at most the call task's own limit).
    assert tasks.EXPERIMENT_TIME_LIMIT - tasks.EXPERIMENT_SOFT_TIME_LIMIT >= tasks.CALL_TIME_LIMIT
    assert task.acks_late is True and task.reject_on_worker_lost is True
    beat = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert beat["calls.tasks.experiments_sweep"]["schedule"] == settings.COSTLAB_JOB_SWEEP_SECONDS


@pytest.mark.django_db(transaction=True)
def test_a_run_that_breaks_fails_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from calls import tasks
    from costlab import jobs

    sent: list[tuple[str, tuple[object, ...]]] = []
    monkeypatch.setattr(jobs, "enqueue", lambda name, *args: sent.append((name, args)))
    membership = MembershipFactory.create(role=Role.ANALYST)
    experiment = draft(membership, count=1, turns=1)
    experiments.experiment_start(experiment=experiment, membership=membership, confirmed=True)
    assert sent == [(jobs.EXPERIMENT_RUN, (experiment.pk,))]
    # Its replayed conversation deleted under it: the run cannot record its turns.
    Conversation.objects.filter(source="replay").delete()
    with pytest.raises(AssertionError):
        tasks.experiment_run(experiment.pk)
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.FAILED
    assert experiment.error.startswith("the run broke")


def test_a_responses_api_conversation_is_predicted_as_the_chat_call_it_is_replayed_as() -> None:
    """A replay goes out through Chat Completions: its prediction counts chat's framing (a
    function tool costs 6 tokens more there than in the Responses API on gpt-4o)."""
    membership = MembershipFactory.create(role=Role.ANALYST)
    organization = membership.organization
    tool = {
        "type": "function",
        "function": {
            "name": "order_status",
            "description": "Where an order is",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        },
    }
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Where is order 7?"},
        {"role": "assistant", "content": "It left the warehouse today."},
    ]
    call = Call(
        request=[0], response=1, model="gpt-4o", tools=[tool], responses_api=True,
        started_at=datetime(2026, 11, 2, tzinfo=UTC),
    )  # fmt: skip
    with transaction.atomic():
        transcripts_store(
            organization=organization,
            transcripts=[Transcript(messages=messages, calls=[call], title="r", model="gpt-4o")],
        )
    experiment = experiments.experiment_create(
        organization=organization,
        user=None,
        conversations=list(Conversation.objects.filter(organization=organization)),
        variants=[variant_parse("model=gpt-4o")],
        connection=connection_of(organization),
    )
    [step] = Replay.objects.get(variant__experiment=experiment).plan
    profile = default_profile("gpt-4o")
    chat = count_request(messages[:1], profile=profile, tools=[tool])
    assert count_request(messages[:1], profile=profile, tools=[tool], responses_api=True) != chat
    assert step["predicted"]["prompt_tokens"] == chat


def test_the_results_chart_opens_on_the_conversation_with_the_most_turns(client: Client) -> None:
    """It opened on the first conversation by code: often a one-turn one, one point."""
    membership = MembershipFactory.create(role=Role.ANALYST)
    organization = membership.organization
    transcripts = []
    for name, turns in (("A one-turn chat", 1), ("B four turns", 4), ("C two turns", 2)):
        messages: list[dict[str, Any]] = [{"role": "system", "content": f"{name}. " * 300}]
        calls = []
        for turn in range(turns):
            messages.append({"role": "user", "content": f"Question {turn}?"})
            calls.append(Call(request=list(range(len(messages))), response=len(messages)))
            messages.append({"role": "assistant", "content": f"Answer {turn}."})
        transcripts.append(Transcript(messages=messages, calls=calls, title=name, model="gpt-4o"))
    transcripts_store(organization=organization, transcripts=transcripts)
    stored = list(Conversation.objects.filter(organization=organization).order_by("title"))
    # Codes that put the longest last (the first by code was the old default).
    for conversation, code in zip(stored, ("1" * 32, "f" * 32, "2" * 32), strict=True):
        Conversation.objects.filter(pk=conversation.pk).update(code=uuid.UUID(code))
        conversation.code = uuid.UUID(code)
    experiment = experiments.experiment_create(
        organization=organization,
        user=None,
        conversations=stored,
        # Two variants replay each turn twice: a turn still counts once in the picker.
        variants=[variant_parse("model=gpt-4o"), variant_parse("model=gpt-4o-mini")],
        connection=connection_of(organization),
    )
    client.force_login(membership.user)
    url = reverse("experiment_detail", args=[organization.slug, experiment.code])
    page = client.get(url).content.decode()
    selected = re.findall(r'<option value="([^"]+)"\s+selected>', page)
    assert selected == [str(stored[1].code)]  # "B four turns"
    # Listed by title (they were by code), each with its turns.
    labels = re.findall(r'<option value="[^"]+"\s*(?:selected)?>([^<]+)</option>', page)
    assert labels == ["A one-turn chat (1 turn)", "B four turns (4 turns)", "C two turns (2 turns)"]
    shorter = str(stored[0].code)  # asked for: kept
    asked = client.get(url, {"conversation": shorter}).content.decode()
    assert re.findall(r'<option value="([^"]+)"\s+selected>', asked) == [shorter]


def test_an_unnamed_experiment_is_named_by_when_it_was_made(client: Client) -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    experiment = draft(membership, count=1, turns=1)
    experiment.name = ""
    experiment.created = datetime(2026, 11, 30, 14, 5, tzinfo=UTC)
    experiment.save()
    client.force_login(membership.user)
    slug = membership.organization.slug
    listed = client.get(reverse("experiments", args=[slug])).content.decode()
    assert ">Experiment of 2026-11-30 14:05</a>" in listed
    assert f">{experiment.code}</a>" not in listed
    page = client.get(reverse("experiment_detail", args=[slug, experiment.code])).content.decode()
    assert "<h1>Experiment of 2026-11-30 14:05</h1>" in page
    experiment.name = "window on support"
    experiment.save()
    listed = client.get(reverse("experiments", args=[slug])).content.decode()
    assert ">window on support</a>" in listed


def test_two_conversations_of_one_title_are_told_apart_in_the_chart_picker() -> None:
    from collections import Counter

    from calls.views import _chart_choices

    originals = [
        ("b" * 32, "Imported transcript"),
        ("a" * 32, "Imported transcript"),
        ("c" * 32, "x"),
    ]
    turns = Counter({"a" * 32: 3, "b" * 32: 1, "c" * 32: 2})
    assert _chart_choices(originals, turns) == [
        ("a" * 32, "Imported transcript (3 turns) #aaaaaaaa"),
        ("b" * 32, "Imported transcript (1 turn) #bbbbbbbb"),
        ("c" * 32, "x (2 turns)"),
    ]
