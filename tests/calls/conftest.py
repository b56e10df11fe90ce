from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from calls import selectors, simulated
from calls.services import calling
from conversations.engine.profiles import default_profile
from conversations.engine.render import count_request


@pytest.fixture(autouse=True)
def endpoint_fresh() -> Iterator[None]:
    """Every test starts with an endpoint that has seen nothing and reads prices afresh."""
    simulated.simulate_reset()
    selectors.endpoint_books_forget()
    calling.clients_forget()
    yield
    simulated.simulate_reset()
    selectors.endpoint_books_forget()
    calling.clients_forget()


def in_process_client(key: str = "sk-test-one", **options: Any) -> openai.OpenAI:
    """The official SDK talking to costlab's endpoint in this process (no socket): the
    request runs inside the test's transaction, like Django's test client."""
    django_app = get_wsgi_application()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        # Django's test client connects these again after each of its own requests.
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        return django_app(environ, start_response)

    transport = httpx2.WSGITransport(app=app)
    http = httpx2.Client(transport=transport, base_url="http://testserver")
    return openai.OpenAI(
        api_key=key, base_url="http://testserver/v1", http_client=http, max_retries=0, **options
    )


@pytest.fixture
def sdk(in_process: None) -> openai.OpenAI:
    return in_process_client()


@pytest.fixture
def in_process() -> Iterator[None]:
    """Requests served in the test's own thread must not close its database connection at
    their end, as Django's handler does (its test client disconnects the same signals)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def prompt_of(tokens: int, *, model: str = "gpt-4o", marker: str = "") -> list[dict[str, Any]]:
    """Messages that render to exactly `tokens` prompt tokens for `model` (" word" is one
    token in both encodings, so the system prompt is padded one token at a time)."""
    profile = default_profile(model)
    base = [{"role": "system", "content": marker}, {"role": "user", "content": "Hi."}]
    short = count_request(base, profile=profile)
    assert short <= tokens
    base[0]["content"] = marker + " word" * (tokens - short)
    assert count_request(base, profile=profile) == tokens
    return base


def complete(client: openai.OpenAI, **params: Any) -> ChatCompletion:
    """One non-streamed call (the SDK's overloads want literal message types; tests build
    plain dicts)."""
    response = client.chat.completions.create(**params)
    assert isinstance(response, ChatCompletion)
    return response


def stream(client: openai.OpenAI, **params: Any) -> list[ChatCompletionChunk]:
    return list(client.chat.completions.create(stream=True, **params))


def cached(response: ChatCompletion | ChatCompletionChunk) -> int:
    assert response.usage is not None and response.usage.prompt_tokens_details is not None
    return response.usage.prompt_tokens_details.cached_tokens or 0
