"""bench/calls.py's end-to-end floor: its chats' calls through the same frameworks (Celery's
publish, worker and prefork child, the openai SDK, HTTP, the endpoint under runserver) with
none of costlab's own database work.

bench/calls.py starts `celery -A bench.calls_floor worker` (cwd the checkout, the end-to-end
part's flags): costlab's Celery app, with every production task, plus `chat_call` below, which
lives here so that calls/, conversations/ and costlab/ know nothing of it. The task makes one
chat-completions call as the real worker makes it (calls/services/calling.py: `ChatRequest`,
`_send` and `_post`, through an `openai.OpenAI` client built as `_Clients.get` builds one,
max_retries=0, one per process) with the body a bench chat sends at that turn: the same model,
system prompt and questions (bench/calls.py's `chat_start`: one random sequence, questions
drawn in the order they are sent), stream off, max_completion_tokens, a prompt_cache_key per
chat of the same length, and for each earlier turn the endpoint's reply, which is
deterministic (calls/simulated.py: its seed is the question's checksum) and so derived here:
a chat's turns may run in either prefork child, which share no memory. The real worker reads
the same messages back from PostgreSQL. The task's arguments are small: the chat's number and
its questions so far (the real task's is one id).

It touches no database: no claim, attempt, messages read, analysis, turn, usage or rollups.
The endpoint's own key check and model lookup, in the web server, stay (they are the
endpoint's, cached there for seconds). It says it is done by an RPUSH of "<chat> <outcome>" to
a Redis list (the broker's database) that the bench BLPOPs; the outcome is "ok" when the reply
is the one derived here, which checks the derivation on every call.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Sequence
from functools import cache
from typing import Any

import django
from django.apps import apps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costlab.settings")
# The task takes its time limits from calls.tasks, whose import needs the apps; the worker's
# Django fixup would set them up at this point anyway (before the task modules are imported).
# Set up already (the bench, a test): not again, which would configure logging once more.
if not apps.ready:
    django.setup()

import openai
import redis
from django.conf import settings

from bench.calls import CHAT_MODEL, CHAT_REPLY_TOKENS, chat_start
from calls import simulated
from calls.services.calling import ChatRequest, _send
from calls.tasks import CALL_SOFT_TIME_LIMIT, CALL_TIME_LIMIT
from conversations.engine.profiles import default_profile
from costlab.celery import app

TASK = "bench.calls_floor.chat_call"
# Set by bench/calls.py for the floor's worker: the endpoint's base URL, the bench's key (the
# end-to-end part's connection's), and the Redis list each finished call is pushed to.
BASE_URL_ENV = "COSTLAB_BENCH_FLOOR_BASE_URL"
API_KEY_ENV = "COSTLAB_BENCH_FLOOR_API_KEY"
DONE_ENV = "COSTLAB_BENCH_FLOOR_DONE"
OK = "ok"


@cache
def system_prompt() -> str:
    return chat_start()[1]


@cache
def _encoding() -> str:
    # The endpoint counts with the price book's profile of the model; the default one is the
    # same for the bench's model (each call's outcome says so: see chat_call).
    return default_profile(CHAT_MODEL).encoding


def reply(question: str) -> str:
    """The endpoint's reply to a turn whose last message is `question` (calls/simulated.py's
    simulate_usage: its seed, and a reply of exactly the call's max_completion_tokens)."""
    seed = simulated._seed([{"role": "user", "content": question}])
    return simulated.reply_text(_encoding(), CHAT_REPLY_TOKENS, seed=seed)


def cache_key(chat: int) -> str:
    """The chat's prompt_cache_key: a real chat's is its code, a UUID's 36 characters."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"costlab-bench-floor/{chat}"))


def chat_request(chat: int, questions: Sequence[str]) -> ChatRequest:
    """The request of the chat's turn after `questions` (the warm-up first): what the real
    worker builds from the chat's row and its messages read back."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt()}]
    for number, question in enumerate(questions):
        if number:
            messages.append({"role": "assistant", "content": reply(questions[number - 1])})
        messages.append({"role": "user", "content": question})
    return ChatRequest(
        model=CHAT_MODEL,
        messages=messages,
        stream=False,
        prompt_cache_key=cache_key(chat),
        max_completion_tokens=CHAT_REPLY_TOKENS,
    )


class _Process:
    """What a worker process keeps across calls, made in the process that uses it (a prefork
    child: never inherited through the fork): the SDK client, whose HTTP pool keeps its
    connection alive, and the Redis client the outcomes go through."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sdk: openai.OpenAI | None = None
        self.done: redis.Redis | None = None

    def client(self) -> openai.OpenAI:
        with self.lock:
            if self.sdk is None:
                # As calling._Clients.get builds it for a connection without organization,
                # project or extra headers (the bench's).
                self.sdk = openai.OpenAI(
                    api_key=os.environ[API_KEY_ENV],
                    base_url=os.environ[BASE_URL_ENV],
                    organization=None,
                    project=None,
                    max_retries=0,
                    timeout=settings.COSTLAB_CALL_TIMEOUT_SECONDS,
                    default_headers=None,
                )
                self.sdk.organization = None
                self.sdk.project = None
            return self.sdk

    def redis(self) -> redis.Redis:
        with self.lock:
            if self.done is None:
                self.done = redis.Redis.from_url(settings.CELERY_BROKER_URL)
            return self.done


_process = _Process()


def outcome_send(chat: int, outcome: str) -> None:
    _process.redis().rpush(os.environ[DONE_ENV], f"{chat} {outcome}")


@app.task(
    name=TASK,
    # calls.tasks.api_call_run's options (tests/calls/test_bench_floor.py compares them): the
    # late ack and the time limits are part of what the worker does per task.
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=CALL_SOFT_TIME_LIMIT,
    time_limit=CALL_TIME_LIMIT,
)
def chat_call(chat: int, questions: list[str]) -> None:
    outcome = "not sent"
    try:
        request = chat_request(chat, questions)
        result, _ = _send(_process.client(), request, time.monotonic())
        outcome = OK if result.content == reply(questions[-1]) else "another reply"
    except openai.OpenAIError as error:  # a real call is recorded failed: no retry here
        outcome = f"failed: {error}"
    finally:
        outcome_send(chat, outcome)
