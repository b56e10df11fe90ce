"""Plain data shared by the parsers (formats/), the engine and the Django layer.

Owns: the plain data every layer shares: Transcript, Call, Usage, ChatMessage.

Nothing here imports Django: parsers produce these objects, the engine analyses them,
services store them. Messages stay in OpenAI chat format (dicts) because that is what the
API renders into tokens; keeping them as-is means counting what was actually sent.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# An OpenAI chat-format message: {"role", "content", optional "name", "tool_calls",
# "tool_call_id", "refusal"}; content is a string, a list of parts, or None.
ChatMessage = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Usage:
    """A response's `usage` object, flattened. Overlaps are kept as the API reports them:
    prompt_tokens INCLUDES cached_tokens, completion_tokens INCLUDES reasoning_tokens."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int | None = None
    prompt_audio_tokens: int = 0
    completion_audio_tokens: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class ReportedOutput:
    """The output side of a call's reported usage: what its reply was billed for, reasoning
    and audio included. A variant that simulates the request (a strategy, a lever, a fix)
    keeps it: the reply is assumed the same, and the text of a reasoning model's reply is a
    fraction of what it billed (o4-mini: 2,589 output tokens for a short answer)."""

    completion_tokens: int
    reasoning_tokens: int = 0
    audio_tokens: int = 0

    @classmethod
    def of(cls, usage: Usage) -> ReportedOutput:
        return cls(usage.completion_tokens, usage.reasoning_tokens, usage.completion_audio_tokens)


@dataclass(slots=True)
class Call:
    """One API call: which messages it sent and which assistant message came back.

    `request` and `response` index into the owning Transcript.messages, so a prefix flow
    stores each message once however many calls re-send it (design.md 2.5)."""

    request: list[int]
    response: int | None  # None: a pending request that got no reply (yet)
    model: str | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    # The request's tool_choice when it names one function ({"type": "function", ...}): the
    # reply is then addressed to it, which costs prompt tokens (render.forced_call_tokens);
    # also "none", which costs one. "auto" and "required" cost nothing and are not kept.
    tool_choice: dict[str, Any] | str | None = None
    # A Responses API call (`/v1/responses`), read as a chat request: its tools and format
    # are framed differently (render.encode_tools).
    responses_api: bool = False
    prompt_cache_key: str | None = None
    service_tier: str | None = None  # from the RESPONSE when known (what was billed)
    started_at: datetime | None = None
    latency_ms: int | None = None
    max_output_tokens: int | None = None
    usage: Usage | None = None  # reported by the API; None when only estimated
    # A simulated variant of a reported call: its reply's reported output (prompt_simulated).
    output: ReportedOutput | None = None
    batch: bool = False  # Batch API: batch rates, no caching discount
    external_id: str | None = None  # response id, or batch custom_id
    location: str = ""  # "file.jsonl line 12": where this call came from, for errors
    cache_retention: str | None = None  # the request's prompt_cache_retention ("24h")
    # The request's prompt_cache_options (breakpoint models): {"mode": "explicit", "ttl": ...}
    cache_options: dict[str, Any] | None = None
    # Who the call was for: the request's `safety_identifier`, else its older `user` field.
    end_user: str | None = None
    # The API key (an id or a name, never the secret) and project a log line names.
    api_key: str | None = None
    project: str | None = None


@dataclass(slots=True)
class Transcript:
    """One conversation as parsed from a file."""

    messages: list[ChatMessage]
    calls: list[Call] | None = None  # None: rebuild turns from messages (design.md 2.5)
    external_id: str | None = None
    title: str = ""
    model: str | None = None
    created_at: datetime | None = None
    message_times: list[datetime | None] | None = None  # parallel to messages when known
    location: str = ""  # file (and zip entry) and line/record it came from
    warnings: list[str] = field(default_factory=list)
    # Free key/value metadata (a request's `metadata` object): the conversation's tags.
    tags: dict[str, str] = field(default_factory=dict)


_POSITION = re.compile(r" (?:line|record) \d+$")


def located_warnings(transcript: Transcript) -> list[str]:
    """The transcript's warnings, each with one location: a warning that names its own
    line already ("log.jsonl line 4: ...") keeps it, being more precise than the
    conversation's first line; the others get the transcript's location (or title).
    `analyze` and an import show the same strings."""
    where = transcript.location or transcript.title
    if not where:
        return list(transcript.warnings)
    source = _POSITION.sub("", where)
    return [w if w.startswith(source) else f"{where}: {w}" for w in transcript.warnings]


def prompt_simulated(call: Call, **changes: Any) -> Call:
    """`call` with its request side to be simulated (its reported usage set aside) and its
    reply's reported output kept, with `changes` applied (a strategy's request, a lever's
    cache key)."""
    output = ReportedOutput.of(call.usage) if call.usage is not None else call.output
    return dataclasses.replace(call, usage=None, output=output, **changes)
