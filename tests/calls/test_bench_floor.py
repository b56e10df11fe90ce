"""bench/calls_floor.py, bench/calls.py's end-to-end floor, sends what a bench chat's real
worker sends: the same bodies (but the chat's prompt_cache_key, of the same length), its
replies derived as the endpoint writes them, and no statement of its own. Its task has the
real task's options, the worker's per-task work the floor measures."""

from __future__ import annotations

import dataclasses
import importlib
import json
from types import ModuleType
from typing import Any

import openai
import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from pytest_django import Settings

from calls import selectors, tasks
from calls.models import ApiCall, CallStatus, ProviderConnection
from calls.services import calling, chats
from calls.services.connections import ConnectionSettings, connection_api_key, connection_create
from conversations.models import Message
from tests.factories import OrganizationFactory

from .conftest import in_process_client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("in_process")]


def bench(name: str) -> ModuleType:
    # Imported by name, as the floor's worker imports it (`celery -A bench.calls_floor`).
    return importlib.import_module(f"bench.{name}")


def body_text(request: calling.ChatRequest) -> str:
    return json.dumps(request.body(), separators=(",", ":"), ensure_ascii=False)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> list[calling.ChatRequest]:
    """Every request made through calling._post, which the real worker and the floor's task
    both send through; the endpoint served in this process."""
    settings.COSTLAB_ENDPOINT_LATENCY_MS = 0
    # The endpoint's own key and model lookups are cached (seconds) in its process: kept for
    # the whole test, so the floor's calls below find them cached, as they do in the bench.
    monkeypatch.setattr(selectors, "KEY_CACHE_SECONDS", 3600.0)
    requests: list[calling.ChatRequest] = []
    post = calling._post

    def recorded(client: openai.OpenAI, request: calling.ChatRequest) -> Any:
        requests.append(request)
        return post(client, request)

    def client(connection: ProviderConnection) -> openai.OpenAI:
        return in_process_client(key=connection_api_key(connection))

    monkeypatch.setattr(calling, "_post", recorded)
    monkeypatch.setattr(calling._clients, "get", client)
    return requests


def test_it_sends_a_real_bench_chats_bodies_without_a_statement(
    sent: list[calling.ChatRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls_bench, floor = bench("calls"), bench("calls_floor")
    rng, system_prompt = calls_bench.chat_start()
    questions = [calls_bench.CHAT_WARM_UP] + [
        calls_bench._text(rng, calls_bench.CHAT_QUESTION_WORDS) for _ in range(3)
    ]
    organization = OrganizationFactory.create()
    connection = connection_create(
        organization=organization,
        user=None,
        settings=ConnectionSettings(name="built-in", base_url="http://testserver/v1"),
        api_key=calls_bench.CHAT_API_KEY,
    )
    chat = chats.chat_create(  # as bench/calls.py's end-to-end part makes its chats
        organization=organization,
        user=None,
        options=chats.ChatOptions(
            connection=connection,
            model=calls_bench.CHAT_MODEL,
            system_prompt=system_prompt,
            stream=False,
            max_completion_tokens=calls_bench.CHAT_REPLY_TOKENS,
        ),
    )
    for question in questions:
        call = chats.chat_message_send(chat=chat, text=question)
        tasks.api_call_run(call.pk)
        call.refresh_from_db()
        assert call.status == CallStatus.SUCCEEDED, call.error
    answers = Message.objects.filter(conversation=chat.conversation, role="assistant")
    replies = [m.data["content"] for m in answers.order_by("index")]
    real = list(sent)
    assert len(real) == len(questions)
    sent.clear()

    outcomes: list[tuple[int, str]] = []
    monkeypatch.setattr(
        floor, "outcome_send", lambda chat, outcome: outcomes.append((chat, outcome))
    )
    monkeypatch.setattr(
        floor._process, "client", lambda: in_process_client(key=calls_bench.CHAT_API_KEY)
    )
    with CaptureQueriesContext(db_connection) as queries:
        for turn in range(len(questions)):
            floor.chat_call(7, questions[: turn + 1])
    assert [query["sql"] for query in queries.captured_queries] == []
    assert outcomes == [(7, floor.OK)] * len(questions)  # each reply the one derived
    assert [floor.reply(question) for question in questions] == replies
    assert ApiCall.objects.count() == len(questions)  # the real chat's only
    for made, floor_made in zip(real, sent, strict=True):
        assert made.prompt_cache_key == str(chat.code)
        assert floor_made.prompt_cache_key is not None
        assert len(floor_made.prompt_cache_key) == len(made.prompt_cache_key)
        same_key = dataclasses.replace(floor_made, prompt_cache_key=str(chat.code))
        assert body_text(same_key) == body_text(made)
        assert made.extra is floor_made.extra is None


def test_it_gives_its_task_the_real_tasks_options() -> None:
    floor = bench("calls_floor")
    for option in ("acks_late", "reject_on_worker_lost", "soft_time_limit", "time_limit"):
        assert getattr(floor.chat_call, option) == getattr(tasks.api_call_run, option), option
    assert floor.chat_call.name == floor.TASK
