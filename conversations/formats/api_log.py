"""API request/response logs: one chat.completions call per JSONL line (or per item of a
JSON array), as teams log them around their client.

Accepted line shape::

    {
      "request":  {...chat.completions request body: model, messages, tools, ...},
      "response": {...chat.completion object: id, model, created, choices, usage, ...},
      "conversation_id": "c-42",          # optional, also metadata.conversation_id
      "timestamp": 1734986202,            # optional: unix s/ms or ISO 8601; or "started_at"
      "latency_ms": 850,                  # optional
      "api_key_id": "key-ci",             # optional: api_key_id, api_key_name or api_key
      "project": "proj-search"            # optional: project, project_id or openai_project
    }

Aliases: the request body may be under `request`, `request_body` or `body`, the response
under `response` or `response_body`; a `{"body": {...}}` wrapper around either (as in
Batch output) is unwrapped. Per line, the Call gets: request = the body's messages;
response = choices[0].message (other choices warned about); model from the response,
else the request; service_tier from the response, else the request; prompt_cache_key,
tools, response_format and max_completion_tokens/max_tokens from the request; usage from
the response (cached and reasoning tokens included); started_at from `timestamp`, else
the response's `created`; latency_ms; external_id = the response id. A line with no
response, or a response holding `error`, becomes a pending call with a warning; a refused
call keeps the request messages that can be rendered and names the others in a warning.
Usage is validated by usage.py. A Responses API line (`input` in the request, or a
`response` object) is read by responses.py into the same shape.

Grouping into conversations: by `conversation_id` (top level, top-level
`metadata.conversation_id`, or the request body's `metadata.conversation_id`) when
given; otherwise by prefix continuity: a call whose request starts with an open
conversation's last request plus its response continues it (the longest such match
wins, the oldest conversation on a tie), else it opens a new one. `user` is not used: one
user has many conversations. Calls are taken in file order. A Responses call whose
`previous_response_id` names an earlier line continues that line's conversation, its
request being that call's request and reply (less its instructions) after its own
instructions and input; one with a `conversation` continues that conversation's last call.

Storage: each conversation stores a message once. A request message maps to the message
it matches in the conversation's previous call (request + response), in order; others
(a new user turn, a summary replacing trimmed history) are appended. A prefix flow of n
calls stores about 2n messages. Memory: every conversation stays open until the end of
the input (logs interleave conversations and nothing marks an end), costing memory
linear in its distinct messages, not in the size of the log.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from conversations.engine.types import Call, ChatMessage, Transcript

from .completions import (
    call_from,
    lenient_request_messages,
    reported_usage,
    request_messages,
    response_message,
)
from .errors import describe
from .messages import parse_time
from .records import Record, record_object
from .responses import is_responses_call, responses_exchange
from .usage import Warn

_REQUEST_KEYS = ("request", "request_body", "body")
_RESPONSE_KEYS = ("response", "response_body")
_TIME_KEYS = ("timestamp", "started_at")


@dataclass(slots=True)
class _Entry:
    """One log line, validated; `call.request`/`call.response` are filled on grouping."""

    request: list[ChatMessage]
    response: ChatMessage | None
    call: Call
    conversation_id: str | None
    warnings: list[str]
    previous_response_id: str | None = None  # Responses API: the call this one continues
    instructions: int = 0  # Responses API: request[:instructions] are the instructions
    stateful: bool = False  # Responses API: the server holds the earlier context
    responses_api: bool = False


@dataclass(slots=True)
class _Conversation:
    key: str | None
    location: str
    messages: list[ChatMessage] = field(default_factory=list)
    times: list[datetime | None] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    thread: list[int] = field(default_factory=list)  # the last call's request + response
    thread_fps: list[bytes] = field(default_factory=list)
    instructions: set[int] = field(default_factory=set)  # Responses instructions' messages

    def add(self, entry: _Entry, fps: list[bytes], response_fp: bytes | None) -> None:
        call = entry.call
        # Greedy in-order matching against the previous call: a prefix flow matches every
        # position; a trimmed window skips the dropped messages and still reuses the rest.
        positions: dict[bytes, list[int]] = {}
        for position, fp in enumerate(self.thread_fps):
            positions.setdefault(fp, []).append(position)
        indexes: list[int] = []
        cursor = 0
        for message, fp in zip(entry.request, fps, strict=True):
            found = positions.get(fp, [])
            i = bisect_left(found, cursor)
            if i < len(found):
                indexes.append(self.thread[found[i]])
                cursor = found[i] + 1
            else:
                indexes.append(self._append(message, call.started_at))
        call.request = indexes
        self.instructions.update(indexes[: entry.instructions])
        self.thread, self.thread_fps = list(indexes), list(fps)
        if entry.response is not None and response_fp is not None:
            call.response = self._append(entry.response, _received_at(call))
            self.thread.append(call.response)
            self.thread_fps.append(response_fp)
        self.calls.append(call)
        self.warnings.extend(entry.warnings)

    def add_continued(
        self, entry: _Entry, fps: list[bytes], response_fp: bytes | None, base: list[int]
    ) -> None:
        """A call whose earlier context the API kept (`previous_response_id`, or a Responses
        `conversation`): its request is `base` (that context, less its instructions) after
        its own instructions, then its new input."""
        call = entry.call
        head = [self._append(m, call.started_at) for m in entry.request[: entry.instructions]]
        self.instructions.update(head)
        kept = [i for i in base if i not in self.instructions]
        new = [self._append(m, call.started_at) for m in entry.request[entry.instructions :]]
        call.request = [*head, *kept, *new]
        self.thread = list(call.request)
        self.thread_fps = []  # the next call matches by id, not by content
        if entry.response is not None and response_fp is not None:
            call.response = self._append(entry.response, _received_at(call))
            self.thread.append(call.response)
        self.calls.append(call)
        self.warnings.extend(entry.warnings)

    def _append(self, message: ChatMessage, when: datetime | None) -> int:
        self.messages.append(message)
        self.times.append(when)
        return len(self.messages) - 1

    def transcript(self) -> Transcript:
        models = [call.model for call in self.calls if call.model]
        starts = [call.started_at for call in self.calls if call.started_at is not None]
        return Transcript(
            messages=self.messages,
            calls=self.calls,
            external_id=self.key,
            model=models[-1] if models else None,
            created_at=min(starts) if starts else None,
            message_times=self.times if starts else None,
            location=self.location,
            warnings=self.warnings,
        )


def parse_api_log(records: Iterable[Record]) -> Iterator[Transcript]:
    conversations: list[_Conversation] = []
    by_id: dict[str, _Conversation] = {}
    # Conversations without an id, keyed by the chain hash of their last request + response.
    by_prefix: dict[bytes, list[_Conversation]] = {}
    # Responses API: a response id -> its conversation and that call's request + response.
    by_response: dict[str, tuple[_Conversation, list[int]]] = {}

    def opened(key: str | None, location: str) -> _Conversation:
        conversation = by_id.get(key) if key is not None else None
        if conversation is None:
            conversation = _Conversation(key, location)
            conversations.append(conversation)
            if key is not None:
                by_id[key] = conversation
        return conversation

    for record in records:
        entry = log_entry(record)
        fps = [_fingerprint(message) for message in entry.request]
        chain = _chain(fps)
        response_fp = None if entry.response is None else _fingerprint(entry.response)
        previous = entry.previous_response_id
        if previous is not None and previous in by_response:
            conversation, base = by_response[previous]
            conversation.add_continued(entry, fps, response_fp, base)
        elif entry.stateful:
            if previous is not None:
                entry.warnings.append(
                    f"{record.location}: previous_response_id {previous!r} is not in this log: "
                    "the context it carries is unknown and not counted"
                )
            conversation = opened(entry.conversation_id or previous, record.location)
            # A `conversation` holds every earlier item; an unknown previous response, nothing
            # costlab can see.
            base = conversation.thread if previous is None else []
            conversation.add_continued(entry, fps, response_fp, base)
        elif entry.conversation_id is not None:
            conversation = opened(entry.conversation_id, record.location)
            conversation.add(entry, fps, response_fp)
        else:
            conversation = _continued(by_prefix, chain) or opened(None, record.location)
            conversation.add(entry, fps, response_fp)
            key = chain[-1] if response_fp is None else _link(chain[-1], response_fp)
            by_prefix.setdefault(key, []).append(conversation)
        if entry.responses_api and entry.call.external_id is not None:
            by_response[entry.call.external_id] = (conversation, list(conversation.thread))
    for conversation in conversations:
        yield conversation.transcript()


def _continued(
    by_prefix: dict[bytes, list[_Conversation]], chain: list[bytes]
) -> _Conversation | None:
    for key in reversed(chain):
        waiting = by_prefix.get(key)
        if waiting:
            conversation = waiting.pop(0)
            if not waiting:
                del by_prefix[key]
            return conversation
    return None


def _fingerprint(message: ChatMessage) -> bytes:
    canonical = json.dumps(message, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=16).digest()


def _link(previous: bytes, fp: bytes) -> bytes:
    return hashlib.blake2b(previous + fp, digest_size=16).digest()


def _chain(fps: list[bytes]) -> list[bytes]:
    """Hash of every prefix of a request: chain[k] identifies its first k + 1 messages."""
    out: list[bytes] = []
    previous = b""
    for fp in fps:
        previous = _link(previous, fp)
        out.append(previous)
    return out


def _received_at(call: Call) -> datetime | None:
    if call.started_at is not None and call.latency_ms is not None:
        return call.started_at + timedelta(milliseconds=call.latency_ms)
    return call.started_at


def log_entry(record: Record) -> _Entry:
    """Validate one log line into its messages and a Call (indexes not yet assigned)."""
    obj = record_object(record)
    body_path, body = _envelope(obj, _REQUEST_KEYS)
    if body is None:
        raise record.error(
            "missing the request body (expected 'request', 'request_body' or 'body')"
        )
    warnings: list[str] = []

    def warn(text: str) -> None:
        warnings.append(f"{record.location}: {text}")

    response_path, response = _envelope(obj, _RESPONSE_KEYS)
    if response is not None and not isinstance(response, dict):
        raise record.error(f"expected the response object, got {describe(response)}", response_path)
    response = response or {}
    if is_responses_call(body, response):
        exchange = responses_exchange(body, body_path, response, response_path, record, warn)
        entry = _Entry(
            exchange.request,
            exchange.response,
            exchange.call,
            exchange.conversation_id or _conversation_id(obj, body),
            warnings,
            exchange.previous_response_id,
            exchange.instructions,
            stateful=exchange.previous_response_id is not None
            or exchange.conversation_id is not None,
            responses_api=True,
        )
        _timing(entry.call, obj, warn)
        _account(entry.call, obj, body)
        return entry
    # A call OpenAI refused may hold a request it could not read either: keep what can be
    # rendered as a pending call rather than refusing the whole log.
    if response.get("error"):
        request = lenient_request_messages(body, record, body_path, warn)
    else:
        request = request_messages(body, record, body_path)
    message = response_message(response, record, response_path, warn)
    usage = reported_usage(response, record, response_path, warn)
    call = call_from(
        body if isinstance(body, dict) else {}, response, usage=usage, location=record.location
    )
    _timing(call, obj, warn)
    _account(call, obj, body)
    return _Entry(request, message, call, _conversation_id(obj, body), warnings)


_API_KEY_FIELDS = ("api_key_id", "api_key_name", "api_key")
_PROJECT_FIELDS = ("project", "project_id", "openai_project")


def _redacted(field: str, value: str) -> str:
    """A key's id or name as logged. The `api_key` field, or anything shaped like a secret
    (sk-...), may hold the key itself: only its last four characters are kept, as costlab
    shows its own keys."""
    if field == "api_key" or value.startswith("sk-"):
        return f"{'sk-' if value.startswith('sk-') else ''}...{value[-4:]}"
    return value


def _account(call: Call, obj: dict[str, Any], body: Any) -> None:
    """The API key and project the line names (top level, or the body's `metadata`)."""
    holders = [obj]
    metadata = body.get("metadata") if isinstance(body, dict) else None
    if isinstance(metadata, dict):
        holders.append(metadata)
    for fields, attribute in ((_API_KEY_FIELDS, "api_key"), (_PROJECT_FIELDS, "project")):
        for holder in holders:
            field = next((f for f in fields if isinstance(holder.get(f), str) and holder[f]), None)
            if field is not None:
                value = holder[field]
                setattr(
                    call, attribute, _redacted(field, value) if attribute == "api_key" else value
                )
                break


def _timing(call: Call, obj: dict[str, Any], warn: Warn) -> None:
    call.started_at = _started_at(obj, warn) or call.started_at
    latency = obj.get("latency_ms")
    if isinstance(latency, (int, float)) and not isinstance(latency, bool):
        call.latency_ms = round(latency)


def _envelope(obj: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        # A transport wrapper ({"status_code", "body": {...}}) around the real object.
        if (
            isinstance(value, dict)
            and isinstance(value.get("body"), dict)
            and not {"messages", "choices", "error"} & value.keys()
        ):
            return f"{key}.body", value["body"]
        return key, value
    return keys[0], None


def _started_at(obj: dict[str, Any], warn: Warn) -> datetime | None:
    for key in _TIME_KEYS:
        value = obj.get(key)
        if value is not None:
            parsed = parse_time(value)
            if parsed is None:
                warn(f"unreadable {key} {value!r}, ignored")
            return parsed
    return None


def _conversation_id(obj: dict[str, Any], body: Any) -> str | None:
    candidates = [obj.get("conversation_id")]
    for holder in (obj, body if isinstance(body, dict) else {}):
        metadata = holder.get("metadata")
        if isinstance(metadata, dict):
            candidates.append(metadata.get("conversation_id"))
    for value in candidates:
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return None
