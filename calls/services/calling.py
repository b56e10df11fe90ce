"""The call service: every chat-completions call costlab makes goes through
`chat_completion_call` (design.md 2.9).

It calls with the official `openai` SDK (its own retries off: each attempt is recorded here),
stream or not, with `stream_options.include_usage` so a streamed call gets its usage. 429
waits as long as Retry-After says; 5xx, 408/409, timeouts and dropped connections back off
exponentially with jitter; anything else (401, 400, 404 model, insufficient_quota) fails at
once with the API's message. Attempts are bounded, each one a CallAttempt row written before
it is sent. The connection's rpm/tpm budget is taken before each attempt.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import openai
from django.conf import settings
from django.utils import timezone
from openai import Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ..models import ApiCall, AttemptOutcome, CallAttempt, CallStatus, ProviderConnection
from .budgets import budget_settle, budget_take
from .connections import connection_api_key
from .updates import Insert, Update, instance_row, instance_saved, row_update, rows_write_together

logger = logging.getLogger(__name__)

Sleep = Callable[[float], None]
# Told a streaming attempt's parts received so far, after each chunk that brought text, and
# [] when an attempt failed (calls/services/partials.py ReplyPartial): the chat page shows
# them as they come.
Progress = Callable[[Sequence[str]], None]
CLIENTS_KEPT = 32
# The longest a call waits in all (budgets, Retry-After, backoff): below the task's soft limit.
MAX_WAIT_SECONDS = 240.0
# Retried as transient, as the SDK itself would: timeouts, conflicts, server errors.
RETRY_STATUSES = frozenset({408, 409})


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    prompt_cache_key: str | None = None
    max_completion_tokens: int | None = None
    # Further body fields sent as they are (a replay's tools, response_format,
    # prompt_cache_retention, prompt_cache_options).
    extra: dict[str, Any] | None = None

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "messages": self.messages}
        if self.stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}
        if self.prompt_cache_key:
            params["prompt_cache_key"] = self.prompt_cache_key
        if self.max_completion_tokens:
            params["max_completion_tokens"] = self.max_completion_tokens
        if self.extra:
            # Through extra_body: fields newer than the installed SDK's signature still go.
            params["extra_body"] = dict(self.extra)
        return params

    def body(self) -> dict[str, Any]:
        """The JSON body `create(**self.params())` sends, keys in the order it writes them
        (tests/calls/test_call_service.py compares the bytes), without `extra`: the SDK
        merges that in last, as it does `extra_body`."""
        body: dict[str, Any] = {"model": self.model}
        if self.stream:
            body["stream"] = True
        body["messages"] = self.messages
        if self.max_completion_tokens:
            body["max_completion_tokens"] = self.max_completion_tokens
        if self.prompt_cache_key:
            body["prompt_cache_key"] = self.prompt_cache_key
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def estimated_tokens(self) -> int:
        """What the budget charges up front: ~4 characters a token, plus the output limit
        (the API's own limiter counts the same way)."""
        chars = sum(len(str(m.get("content") or "")) for m in self.messages)
        return chars // 4 + len(self.messages) * 4 + (self.max_completion_tokens or 0)


@dataclass(frozen=True)
class CallResult:
    content: str
    usage: dict[str, Any] | None
    service_tier: str | None
    response_id: str
    model: str
    finish_reason: str | None
    started_at: datetime  # when the successful attempt was sent
    latency_ms: int
    ttft_ms: int | None
    # The CallAttempt that got this result, and its time to the first token (or to the
    # whole answer): what attempt_succeeded writes.
    attempt_id: int | None = None
    attempt_ttft_ms: int | None = None


def attempt_succeeded(result: CallResult) -> None:
    """Mark the attempt that got `result` as answered. chat_completion_call does it itself
    unless told the caller will, inside the transaction that records what came of the call
    (one commit fewer; a worker killed before that commit leaves the attempt "sent", as
    one killed mid-request does, and the next delivery's attempt gets the turn)."""
    if result.attempt_id is None:  # not a result of chat_completion_call
        return
    row_update(model=CallAttempt, pk=result.attempt_id, values=attempt_values(result))


def attempt_values(result: CallResult) -> dict[str, Any]:
    """The columns attempt_succeeded writes to the attempt that got `result`."""
    return {
        "outcome": AttemptOutcome.OK,
        "status_code": 200,
        "latency_ms": result.latency_ms,
        "ttft_ms": result.attempt_ttft_ms,
        "usage": result.usage,
        "response_id": result.response_id[:200],
    }


def call_succeeded(
    call: ApiCall, result: CallResult, *, cost: Decimal | None, reply: str = "", turn: Any = None
) -> Update:
    """The update that marks `call` answered by `result` (`turn`: its turn's id, or the
    Written key of the step that writes it; `reply`: the text kept on the call, which a
    chat turn keeps as its message instead)."""
    values = {
        "status": CallStatus.SUCCEEDED,
        "finished_at": timezone.now(),
        "latency_ms": result.latency_ms,
        "ttft_ms": result.ttft_ms,
        "usage": result.usage,
        "service_tier": (result.service_tier or "")[:20],
        "cost": cost,
        "reply": reply,
        "turn": turn,
        "error": "",
    }
    return Update(ApiCall, call.pk, values)


class CallNotClaimed(Exception):
    """The call was finished meanwhile (by another delivery of its task): nothing was sent."""


# The update that marks the call running and counts its first attempt, written with that
# attempt's row (one statement on PostgreSQL); it changes nothing when the call is no longer
# waiting (chats.api_call_run).
Claim = Update


class CallFailed(Exception):
    """The call gave up: `message` is the API's own when it sent one."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


@dataclass(frozen=True)
class _Verdict:
    outcome: str
    retry: bool
    status_code: int | None
    message: str
    retry_after: float | None = None


class _Clients:
    """One SDK client per connection version and process: its HTTP pool keeps connections
    alive across calls. The key lives in the client's memory only."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: OrderedDict[tuple[int, str, str], openai.OpenAI] = OrderedDict()

    def get(self, connection: ProviderConnection) -> openai.OpenAI:
        version = (connection.pk, connection.updated.isoformat(), connection.api_key_encrypted)
        with self.lock:
            client = self.clients.get(version)
            if client is not None:
                self.clients.move_to_end(version)
                return client
        client = openai.OpenAI(
            api_key=connection_api_key(connection),
            base_url=connection.base_url,
            organization=connection.openai_organization or None,
            project=connection.openai_project or None,
            max_retries=0,
            timeout=settings.COSTLAB_CALL_TIMEOUT_SECONDS,
            default_headers={str(k): str(v) for k, v in connection.extra_headers.items()} or None,
        )
        # Left empty, the SDK would fill these from OPENAI_ORG_ID/OPENAI_PROJECT_ID of the
        # worker's environment and send them to whatever endpoint the connection names.
        client.organization = connection.openai_organization or None
        client.project = connection.openai_project or None
        with self.lock:
            self.clients[version] = client
            while len(self.clients) > CLIENTS_KEPT:
                self.clients.popitem(last=False)
        return client


_clients = _Clients()


def clients_forget() -> None:
    """Drop the SDK clients this process keeps (tests; settings changes)."""
    with _clients.lock:
        _clients.clients.clear()


def _retry_after(response: Any) -> float | None:
    """Seconds from a response's retry-after-ms or Retry-After (seconds or an HTTP date)."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    millis = str(headers.get("retry-after-ms") or "")
    if millis:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = str(headers.get("retry-after") or "")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, (parsed - timezone.now()).total_seconds())


def _verdict(error: Exception) -> _Verdict:
    if isinstance(error, openai.APITimeoutError):
        return _Verdict(AttemptOutcome.TIMEOUT, True, None, "the request timed out")
    if isinstance(error, openai.APIConnectionError):
        return _Verdict(AttemptOutcome.CONNECTION_ERROR, True, None, _connection_failed(error))
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        message = error.message
        if status == 429:
            if getattr(error, "code", None) == "insufficient_quota":  # waiting will not help
                return _Verdict(AttemptOutcome.CLIENT_ERROR, False, status, message)
            wait = _retry_after(error.response)
            return _Verdict(AttemptOutcome.RATE_LIMITED, True, status, message, wait)
        if status >= 500 or status in RETRY_STATUSES:
            return _Verdict(AttemptOutcome.SERVER_ERROR, True, status, message)
        return _Verdict(AttemptOutcome.CLIENT_ERROR, False, status, message)
    raise error


def _connection_failed(error: openai.APIConnectionError) -> str:
    """Where the connection went and why it failed: the SDK's own text is only
    "Connection error.", its cause (httpx's, the system's) says "Connection refused" or a
    name that does not resolve. The address only: a query string could hold a secret."""
    cause = error.__cause__ or error.__context__
    reason = str(cause).strip() if cause is not None else ""
    request = getattr(error, "request", None)
    url = getattr(request, "url", None)
    where = f" to {url.scheme}://{url.netloc.decode()}" if url is not None else ""
    return f"connection failed{where}: {reason or str(error)}"


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter after failed attempt `attempt` (1-based): half the
    step fixed, half random, so workers that failed together do not retry together."""
    step = min(
        float(settings.COSTLAB_CALL_BACKOFF_MAX_SECONDS),
        float(settings.COSTLAB_CALL_BACKOFF_SECONDS) * 2.0 ** (attempt - 1),
    )
    return step / 2 + random.uniform(0, step / 2)


# What create() passes for a chat completion: the bearer key only (not an admin key the
# worker's environment may hold).
_SECURITY: Any = {"bearer_auth": True}


def _post(client: openai.OpenAI, request: ChatRequest) -> Any:
    """The request create(**request.params()) makes, through the SDK's own request path
    (client.post: its auth, headers, timeout, error types and Stream[ChatCompletionChunk]),
    minus create()'s walk of the body against its typed dicts, which reads every message of
    the history on every call (a quarter of a worker's CPU per chat call). The bytes sent
    are create()'s (a test compares them)."""
    options: Any = {"security": _SECURITY}
    if request.extra:
        options["extra_json"] = dict(request.extra)
    if request.stream:
        return client.post(
            "/chat/completions",
            cast_to=ChatCompletion,
            body=request.body(),
            options=options,
            stream=True,
            stream_cls=Stream[ChatCompletionChunk],
        )
    return client.post(
        "/chat/completions", cast_to=ChatCompletion, body=request.body(), options=options
    )


def _send(
    client: openai.OpenAI, request: ChatRequest, started: float, progress: Progress | None = None
) -> tuple[CallResult, int]:
    """One HTTP request; returns the result and the time to its first token (ms)."""
    sent_at = timezone.now()
    if not request.stream:
        response = _post(client, request)
        elapsed = int((time.monotonic() - started) * 1000)
        choice = response.choices[0] if response.choices else None
        result = CallResult(
            content=(choice.message.content or "") if choice else "",
            usage=response.usage.model_dump(mode="json", exclude_unset=True)
            if response.usage
            else None,
            service_tier=response.service_tier,
            response_id=response.id,
            model=response.model,
            finish_reason=choice.finish_reason if choice else None,
            started_at=sent_at,
            latency_ms=elapsed,
            ttft_ms=elapsed,
        )
        return result, elapsed
    parts: list[str] = []
    first: int | None = None
    usage = tier = finish = None
    response_id = model = ""
    for chunk in _post(client, request):
        response_id, model = chunk.id or response_id, chunk.model or model
        tier = chunk.service_tier or tier
        if chunk.usage is not None:
            usage = chunk.usage.model_dump(mode="json", exclude_unset=True)
        for choice in chunk.choices:
            if choice.delta.content:
                if first is None:
                    first = int((time.monotonic() - started) * 1000)
                parts.append(choice.delta.content)
                if progress is not None:
                    progress(parts)
            finish = choice.finish_reason or finish
    elapsed = int((time.monotonic() - started) * 1000)
    result = CallResult(
        content="".join(parts),
        usage=usage,
        service_tier=tier,
        response_id=response_id,
        model=model,
        finish_reason=finish,
        started_at=sent_at,
        latency_ms=elapsed,
        ttft_ms=first,
    )
    return result, first if first is not None else elapsed


def _wait_for_budget(
    connection: ProviderConnection, request: ChatRequest, sleep: Sleep, deadline: float
) -> int:
    """Block until the connection's budget admits this request; the tokens charged."""
    while True:
        take = budget_take(connection=connection, tokens=request.estimated_tokens())
        if take.taken:
            return take.tokens
        if time.monotonic() + take.wait_seconds > deadline:
            raise CallFailed(
                f"the connection's rate budget would make this call wait {take.wait_seconds:.0f} s"
            )
        sleep(take.wait_seconds)


def chat_completion_call(
    *,
    call: ApiCall,
    connection: ProviderConnection,
    request: ChatRequest,
    sleep: Sleep = time.sleep,
    max_wait_seconds: float = MAX_WAIT_SECONDS,
    record_success: bool = True,
    claim: Claim | None = None,
    progress: Progress | None = None,
) -> CallResult:
    """Make the call, retrying what can be retried; every attempt becomes a CallAttempt of
    `call`. Raises CallFailed with the API's message when it gives up. `record_success`
    off: the caller marks the answered attempt itself (attempt_succeeded). `claim`: run in
    the first attempt's transaction in place of its count update (one commit for both);
    raises CallNotClaimed, nothing sent, when it says no. `progress`: told the text of a
    streamed reply as it comes (each attempt from its start)."""
    client = _clients.get(connection)
    deadline = time.monotonic() + max_wait_seconds
    attempts = settings.COSTLAB_CALL_MAX_ATTEMPTS
    last = "no attempt made"
    for number in range(1, attempts + 1):
        charged = _wait_for_budget(connection, request, sleep, deadline)
        counting, claim = claim or _attempt_count(call), None
        attempt = _attempt_open(call, number, counting)
        if attempt is None:  # not claimed: nothing was written
            budget_settle(connection=connection, charged=charged, used=0)
            raise CallNotClaimed
        started = time.monotonic()
        try:
            result, first = _send(client, request, started, progress)
        except openai.OpenAIError as error:
            verdict = _verdict(error)
            if progress is not None:
                progress([])  # a stream cut short: its text is not the reply
            budget_settle(connection=connection, charged=charged, used=0)
            _attempt_fail(attempt, verdict, started)
            last = verdict.message
            if not verdict.retry:
                raise CallFailed(verdict.message, status_code=verdict.status_code) from None
            if number == attempts:
                break
            wait = _next_wait(verdict, number)
            too_long = wait > settings.COSTLAB_CALL_MAX_RETRY_AFTER_SECONDS
            if too_long or time.monotonic() + wait > deadline:
                raise CallFailed(
                    f"{verdict.message} (asked to wait {wait:.0f} s: more than allowed)",
                    status_code=verdict.status_code,
                ) from None
            CallAttempt.objects.filter(pk=attempt.pk).update(wait_ms=int(wait * 1000))
            sleep(wait)
            continue
        used = int((result.usage or {}).get("total_tokens") or 0)
        budget_settle(connection=connection, charged=charged, used=used)
        result = dataclasses.replace(result, attempt_id=attempt.pk, attempt_ttft_ms=first)
        if record_success:
            attempt_succeeded(result)
        return result
    raise CallFailed(f"gave up after {attempts} attempts: {last}")


def _attempt_count(call: ApiCall) -> Update:
    return Update(ApiCall, call.pk, {}, increment=("attempt_count",))


def _attempt_open(call: ApiCall, number: int, counting: Update) -> CallAttempt | None:
    """The attempt's row and the update of its call that counts it (and claims the call,
    the first time), all or nothing: one statement on PostgreSQL, in no transaction of its
    own (no BEGIN and COMMIT round trips). None when the update changed no row (the call
    was finished meanwhile); else the call takes the update's values."""
    attempt = CallAttempt(call=call, number=number)
    changed, pk = rows_write_together(
        [counting, Insert(CallAttempt, [instance_row(attempt)], when=0)]
    )
    if not changed:
        return None
    for name, value in counting.values.items():
        setattr(call, name, value)
    return instance_saved(attempt, pk)


def _next_wait(verdict: _Verdict, number: int) -> float:
    if verdict.retry_after is not None:
        # Honour the server's word; a refusal to wait that long is the caller's (deadline).
        return verdict.retry_after
    return backoff_seconds(number)


def _attempt_fail(attempt: CallAttempt, verdict: _Verdict, started: float) -> None:
    attempt.outcome = verdict.outcome
    attempt.status_code = verdict.status_code
    attempt.error = verdict.message[:2000]
    attempt.latency_ms = int((time.monotonic() - started) * 1000)
    attempt.retry_after_seconds = verdict.retry_after
    attempt.save(
        update_fields=["outcome", "status_code", "error", "latency_ms", "retry_after_seconds"]
    )
    logger.info("call %s attempt %s: %s", attempt.call_id, attempt.number, verdict.outcome)
