"""Chat messages in OpenAI chat format, validated and normalized the same way for every
format, so that one message read from two places compares equal.

Normalizing means: keep only what the API renders into tokens (role, content, name,
tool_calls, tool_call_id, function_call, refusal, audio), drop keys that are null, and
always carry `content` (None when an assistant message only calls tools). An API response
message (`"refusal": null, "annotations": []`) and the same message re-sent in the next
request then compare equal, which the api_log grouping relies on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from conversations.engine.types import Call, ChatMessage

from .errors import describe
from .records import Record

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_OPTIONAL_KEYS = ("name", "tool_calls", "tool_call_id", "function_call", "refusal", "audio")
# An assistant message may leave content null only when it carries one of these instead.
_CONTENT_STANDINS = ("tool_calls", "function_call", "refusal", "audio")
# Unix times above this are milliseconds (1e11 seconds is the year 5138).
_MILLISECONDS_FROM = 1e11


def normalize_message(raw: Any, record: Record, field: str) -> ChatMessage:
    """Validate one message; `field` is its JSON path (`messages[2]`) for errors."""
    if not isinstance(raw, dict):
        raise record.error(f"expected a message object, got {describe(raw)}", field)
    role = raw.get("role")
    if role is None:
        raise record.error("missing role", f"{field}.role")
    if role not in ROLES:
        expected = ", ".join(ROLES)
        raise record.error(f"unknown role {role!r} (expected {expected})", f"{field}.role")
    message: ChatMessage = {"role": role}
    for key in _OPTIONAL_KEYS:
        value = raw.get(key)
        if value is None or value == []:
            continue
        message[key] = _checked_optional(key, value, record, f"{field}.{key}")
    content = raw.get("content")
    if content is None:
        if role != "assistant":
            state = "is null" if "content" in raw else "is missing"
            raise record.error(
                f"content {state} (a {role} message needs content)", f"{field}.content"
            )
        if not any(key in message for key in _CONTENT_STANDINS):
            raise record.error(
                "content is missing and the assistant message has no tool_calls, "
                "function_call or refusal",
                f"{field}.content",
            )
    message["content"] = _checked_content(content, record, f"{field}.content")
    return message


def _checked_content(content: Any, record: Record, field: str) -> Any:
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise record.error(
            f"content must be a string, a list of parts or null, got {describe(content)}", field
        )
    for i, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise record.error("expected a content part object with a 'type'", f"{field}[{i}]")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise record.error("a text part needs a string 'text'", f"{field}[{i}].text")
    return content


def _checked_optional(key: str, value: Any, record: Record, field: str) -> Any:
    if key in ("name", "tool_call_id", "refusal"):
        if not isinstance(value, str):
            raise record.error(f"expected a string, got {describe(value)}", field)
    elif key == "tool_calls":
        if not isinstance(value, list):
            raise record.error(f"expected a list of tool calls, got {describe(value)}", field)
        for i, call in enumerate(value):
            if not isinstance(call, dict):
                raise record.error(
                    f"expected a tool call object, got {describe(call)}", f"{field}[{i}]"
                )
    elif not isinstance(value, dict):
        raise record.error(f"expected an object, got {describe(value)}", field)
    return value


def parse_time(value: Any) -> datetime | None:
    """Unix seconds (or milliseconds), or an ISO 8601 string, as an aware UTC datetime.
    None when absent or unreadable: callers warn, a bad timestamp is never fatal."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > _MILLISECONDS_FROM else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def calls_from_messages(
    messages: list[ChatMessage],
    *,
    model: str | None = None,
    tools: list[dict[str, Any]] | None = None,
    location: str = "",
) -> list[Call]:
    """Turns of a transcript without request logs (design.md 2.5): each assistant message
    closes a call whose request is every message before it; messages after the last
    assistant message form a final, pending request."""
    calls: list[Call] = []
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            calls.append(
                Call(
                    request=list(range(i)), response=i, model=model, tools=tools, location=location
                )
            )
    last = calls[-1].response if calls else -1
    if last is not None and last < len(messages) - 1:
        calls.append(
            Call(
                request=list(range(len(messages))),
                response=None,
                model=model,
                tools=tools,
                location=location,
            )
        )
    return calls


def metadata_tags(metadata: Any) -> dict[str, str]:
    """A record's `metadata` object as conversation tags: its text and number values (the
    API's metadata is string to string; anything nested is not a tag)."""
    if not isinstance(metadata, dict):
        return {}
    return {
        str(key)[:100]: str(value)[:300]
        for key, value in metadata.items()
        if isinstance(value, str | int | float) and not isinstance(value, bool)
    }
