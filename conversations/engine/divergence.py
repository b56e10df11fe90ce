"""Why two requests' prefixes part: the first differing token, shown side by side, and the
cause named (issue 14, prefix breakers).

Owns: comparing two requests as the cache sees them (rendered by render.py: tools, then
response format, then messages) and naming the common causes of a broken prefix.

The cache simulator (cache.py) says where a prompt stopped matching the cached prefix; this
module says what changed there, from the two requests alone: a timestamp or an id in the
system prompt, tools in another order, a changed tool schema, a response_format that
changes, a changing prompt_cache_key, or some other message content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .profiles import ModelProfile
from .render import render_tokens
from .sequences import END, MESSAGE, START, TOOL
from .types import ChatMessage
from .vocabulary import get_encoding

CONTEXT_TOKENS = 12  # tokens shown before and from the divergence on each side

# What makes a prompt differ at every call without anyone meaning it to.
TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}|\d{1,2}:\d{2}(:\d{2})?|\b1[6-9]\d{8}(\d{3})?\b"
    r"|\b(mon|tue|wed|thu|fri|sat|sun)[a-z]*\b|\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
    r"[a-z]*\s+\d{1,2}\b",
    re.IGNORECASE,
)
IDENTIFIER = re.compile(
    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b|\b[0-9a-f]{12,}\b"
    r"|\b(req|id|usr|user|session|trace|run)[_-][\w-]+",
    re.IGNORECASE,
)

CAUSES = {
    "volatile_system": "timestamp or id in the system prompt",
    "system_changed": "the system prompt changes",
    "tools_order": "tools in a different order",
    "tool_schema": "a tool's schema changed",
    "tools_changed": "a different set of tools",
    "response_format": "response_format changes",
    "cache_key": "prompt_cache_key changes",
    "missing_cache_key": "no prompt_cache_key",
    "message_changed": "a message differs from the request before",
}


@dataclass(frozen=True, slots=True)
class RequestView:
    """One request as sent: its messages in order and what else renders before them."""

    messages: list[ChatMessage]
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    responses_api: bool = False  # a Responses API request (render.encode_tools)


@dataclass(frozen=True, slots=True)
class Side:
    """One request's text around the divergence: the shared tokens before it and its own
    tokens from it on."""

    before: str
    differing: str
    after: str = ""  # the end of the window both sides share again (not marked)


@dataclass(frozen=True, slots=True)
class Divergence:
    token: int | None  # None: the rendered requests are equal (or one is a prefix)
    message: int | None  # index within the request of the first differing message
    left: Side
    right: Side
    causes: list[str] = field(default_factory=list)

    @property
    def cause_labels(self) -> list[str]:
        return [CAUSES[c] for c in self.causes]


def _marker(token: int) -> str:
    """How a placeholder shows beside text: the chat format's framing, else a dot."""
    if token == START:
        return "<|start|>"
    if token == MESSAGE:
        return "<|message|>"
    if TOOL < token <= END:
        return "<|end|>"
    return "·"


def decode(encoding: Any, tokens: Sequence[int]) -> str:
    """Text of a rendered token run: real ids decoded together, placeholders as markers."""
    parts: list[str] = []
    run: list[int] = []
    for token in tokens:
        if token >= 0:
            run.append(token)
            continue
        if run:
            parts.append(encoding.decode(run))
            run = []
        parts.append(_marker(token))
    if run:
        parts.append(encoding.decode(run))
    return "".join(parts)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _tool_name(tool: dict[str, Any]) -> str:
    function = tool.get("function")
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return str(function["name"])
    return str(tool.get("name", ""))


def _tool_causes(a: list[dict[str, Any]] | None, b: list[dict[str, Any]] | None) -> list[str]:
    a, b = a or [], b or []
    if _canonical(a) == _canonical(b):
        return []
    names_a, names_b = [_tool_name(t) for t in a], [_tool_name(t) for t in b]
    if sorted(names_a) != sorted(names_b):
        return ["tools_changed"]
    by_name_a = {_tool_name(t): _canonical(t) for t in a}
    by_name_b = {_tool_name(t): _canonical(t) for t in b}
    causes = ["tools_order"] if names_a != names_b else []
    if by_name_a != by_name_b:
        causes.append("tool_schema")
    return causes


def _text(message: ChatMessage) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _volatile(text_a: str, text_b: str) -> bool:
    """Whether the two texts differ where a timestamp or an id sits: the differing span,
    widened to whole words, matches one of the patterns on both sides."""
    start = next(
        (i for i, (x, y) in enumerate(zip(text_a, text_b, strict=False)) if x != y),
        min(len(text_a), len(text_b)),
    )
    for text in (text_a, text_b):
        window = text[max(0, start - 24) : start + 40]
        if not (TIMESTAMP.search(window) or IDENTIFIER.search(window)):
            return False
    return True


def _message_causes(a: Sequence[ChatMessage], b: Sequence[ChatMessage]) -> tuple[int | None, str]:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if _canonical(x) == _canonical(y):
            continue
        if x.get("role") in ("system", "developer") and y.get("role") == x.get("role"):
            cause = "volatile_system" if _volatile(_text(x), _text(y)) else "system_changed"
            return index, cause
        return index, "message_changed"
    return None, ""


def _shared_end(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens the two windows end alike (at least one stays marked on each): a
    timestamp's window goes on into the text after it ("Z. You are the support"), which
    was marked as if it differed."""
    n = 0
    while n < min(len(a), len(b)) - 1 and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def compare_requests(left: RequestView, right: RequestView, *, profile: ModelProfile) -> Divergence:
    """Where `right` stops matching `left` (as rendered for the model), what each says from
    there, and why."""
    tokens_l = render_tokens(
        left.messages,
        profile=profile,
        tools=left.tools,
        response_format=left.response_format,
        responses_api=left.responses_api,
    )
    tokens_r = render_tokens(
        right.messages,
        profile=profile,
        tools=right.tools,
        response_format=right.response_format,
        responses_api=right.responses_api,
    )
    token = _first_difference(tokens_l, tokens_r)
    encoding = get_encoding(profile.encoding)
    at = token if token is not None else min(len(tokens_l), len(tokens_r))
    before = decode(encoding, tokens_l[max(0, at - CONTEXT_TOKENS) : at])
    windows = [tokens[at : at + CONTEXT_TOKENS] for tokens in (tokens_l, tokens_r)]
    same = _shared_end(*windows)
    sides = [
        Side(
            before,
            decode(encoding, window[: len(window) - same]),
            decode(encoding, window[len(window) - same :]),
        )
        for window in windows
    ]
    causes = _tool_causes(left.tools, right.tools)
    if _canonical(left.response_format) != _canonical(right.response_format):
        causes.append("response_format")
    message, cause = _message_causes(left.messages, right.messages)
    if cause and not causes:  # a header change shifts every message: name it alone
        causes.append(cause)
    if left.prompt_cache_key != right.prompt_cache_key:
        causes.append("cache_key")
    elif left.prompt_cache_key is None:
        causes.append("missing_cache_key")
    return Divergence(token, message, sides[0], sides[1], causes)
