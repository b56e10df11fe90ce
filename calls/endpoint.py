"""costlab's own OpenAI-compatible endpoint: POST /v1/chat/completions and GET /v1/models,
served by the same web server, so demos, tests and CI call models with no network.

Its `usage` is what costlab's engine bills (calls/simulated.py); faults on demand are in
calls/protocol.py. Callers authenticate with a bearer key: any non-empty key in development
mode, an issued EndpointKey otherwise. Each key is one simulated organization.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from costlab import throttle
from costlab.security import client_address

from . import protocol, selectors
from .request_body import BodyReader
from .simulated import request_read, simulate_usage

# A modelled latency this long, or any fault, lets go of the database connection first.
RELEASE_BEFORE_SECONDS = 0.5


def _error(status: int, message: str, **fields: Any) -> JsonResponse:
    return JsonResponse(protocol.error_body(message, **fields), status=status)


def _caller(request: HttpRequest) -> selectors.EndpointCaller | None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return selectors.endpoint_caller(key=key.strip())


def _unauthorized() -> JsonResponse:
    # Never echo the key back, not even masked: it may be a real provider's.
    return _error(
        401,
        "Incorrect API key provided. Development mode accepts any key; otherwise use one "
        "issued by `manage.py endpoint_key`.",
        code="invalid_api_key",
    )


def _key_limit() -> throttle.Limit:
    # The log-in limit per address protects the endpoint's keys too: a guesser gets as many
    # tries at a key as at a password.
    return throttle.Limit(
        "endpoint-address",
        settings.COSTLAB_LOGIN_FAILURES_PER_ADDRESS,
        settings.COSTLAB_LOGIN_WINDOW_SECONDS,
    )


def _authenticated(request: HttpRequest) -> selectors.EndpointCaller | JsonResponse:
    """The caller of a valid key, or the response to send: 401 for a bad key (counted per
    address), 429 with Retry-After once an address failed too often; a refused attempt
    checks no key."""
    address = client_address(request)
    wait = throttle.retry_after(limit=_key_limit(), subject=address)
    if wait:
        response = _error(
            429,
            f"Too many requests with an invalid API key from this address; try again in "
            f"{wait} seconds.",
            code="rate_limit_exceeded",
        )
        response["Retry-After"] = str(wait)
        return response
    caller = _caller(request)
    if caller is None:
        throttle.failure_record(limit=_key_limit(), subject=address)
        return _unauthorized()
    return caller


@csrf_exempt
def models(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return _error(405, f"Method {request.method} not allowed on /v1/models.")
    caller = _authenticated(request)
    if isinstance(caller, JsonResponse):
        return caller
    names = selectors.endpoint_model_names(organization_id=caller.organization_id)
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "costlab"} for n in names]
    return JsonResponse({"object": "list", "data": data})


def _parse(raw: bytes, reader: BodyReader) -> dict[str, Any]:
    return protocol.request_parse(raw, reader=reader)


@csrf_exempt
def chat_completions(request: HttpRequest) -> HttpResponseBase:
    if request.method != "POST":
        return _error(405, f"Method {request.method} not allowed on /v1/chat/completions.")
    caller = _authenticated(request)
    if isinstance(caller, JsonResponse):
        return caller
    raw = request.body
    try:
        body = request_read(caller.org_key, raw, _parse)
        fault = protocol.fault_requested(request.headers, org_key=caller.org_key, raw_body=raw)
    except protocol.RequestInvalid as invalid:
        return _error(invalid.status, invalid.message, param=invalid.param, code=invalid.code)
    model = selectors.endpoint_model(organization_id=caller.organization_id, model=body["model"])
    if model is None:
        return _error(
            404,
            f"The model `{body['model']}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if fault is not None and fault.kind == "429":
        response = _error(
            429,
            "Rate limit reached (X-Costlab-Fault: 429). Please try again later.",
            kind="requests",
            code="rate_limit_exceeded",
        )
        response["Retry-After"] = f"{fault.retry_after:g}"
        return response
    if fault is not None and fault.kind == "500":
        return _error(
            500,
            "The server had an error while processing your request (X-Costlab-Fault: 500).",
            kind="server_error",
        )
    now = time.time()
    simulated = simulate_usage(
        org_key=caller.org_key,
        body=body,
        now=now,
        profile=model.profile,
        policy=model.policy,
        retention_seconds=settings.COSTLAB_ENDPOINT_RETENTION_SECONDS,
        default_reply_tokens=settings.COSTLAB_ENDPOINT_REPLY_TOKENS,
    )
    completion = protocol.Completion.new(
        model=body["model"], tier=protocol.service_tier(body), call=simulated, now=now
    )
    wait = protocol.latency_seconds(
        simulated,
        base_ms=settings.COSTLAB_ENDPOINT_LATENCY_MS,
        hit_speedup=settings.COSTLAB_ENDPOINT_HIT_SPEEDUP,
    )
    if fault is not None and fault.kind == "timeout":
        wait = settings.COSTLAB_ENDPOINT_TIMEOUT_FAULT_SECONDS
    pause = (
        settings.COSTLAB_ENDPOINT_SLOW_CHUNK_MS / 1000 if fault and fault.kind == "slow" else 0.0
    )
    if fault is not None or wait >= RELEASE_BEFORE_SECONDS:
        _database_release()
    if body.get("stream"):
        stream = _stream(completion, wait=wait, pause=pause, usage=protocol.include_usage(body))
        streamed = StreamingHttpResponse(stream, content_type="text/event-stream")
        streamed["Cache-Control"] = "no-cache"
        return streamed
    time.sleep(wait + pause * 4)
    return JsonResponse(completion.body())


def _database_release() -> None:
    """What follows only sleeps (modelled latency, faults) and answers: the database is done
    with. A connection held through a 90 s "timeout" fault is one taken from every other
    request (and one a test database cannot be dropped with). A short sleep keeps it: a new
    PostgreSQL session per call cost more than the call's own work."""
    if not connection.in_atomic_block:
        connection.close()


def _stream(
    completion: protocol.Completion, *, wait: float, pause: float, usage: bool
) -> Iterator[bytes]:
    time.sleep(wait)  # the time to the first token
    for number, chunk in enumerate(completion.chunks(usage=usage)):
        if pause and number:
            time.sleep(pause)
        yield protocol.sse(chunk)
    yield protocol.sse("[DONE]")
