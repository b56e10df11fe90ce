"""Chat transcripts: `{"messages": [...]}` objects, one per line (chat_jsonl, the fine-tuning
format) or as a JSON array or a single object (chat_json).

Record fields: `messages` (required, OpenAI chat format), and when present `model`, `id`,
`title`, `created`/`created_at`/`timestamp` (unix seconds or ISO 8601) and `tools`.
Per message, `timestamp` or `created_at` fills Transcript.message_times. Fine-tuning only
keys such as `weight` are dropped: they are never sent to the model.

Turns are left to the importer (calls=None, design.md 2.5) unless the record defines
`tools`: Transcript has no place for them, so the turns are built here with each call
carrying the tool definitions it would have sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from conversations.engine.types import ChatMessage, Transcript

from .errors import describe
from .messages import calls_from_messages, metadata_tags, normalize_message, parse_time
from .records import Record, record_object

_CREATED_KEYS = ("created", "created_at", "timestamp")
_MESSAGE_TIME_KEYS = ("timestamp", "created_at")


def parse_chat(records: Iterable[Record]) -> Iterator[Transcript]:
    for record in records:
        yield chat_transcript(record)


def chat_transcript(record: Record) -> Transcript:
    obj = record_object(record)
    raw_messages = obj.get("messages")
    if raw_messages is None:
        keys = ", ".join(sorted(obj)[:8]) or "none"
        raise record.error(f"missing field (the record's keys are: {keys})", "messages")
    if not isinstance(raw_messages, list):
        raise record.error(f"expected a list of messages, got {describe(raw_messages)}", "messages")
    if not raw_messages:
        raise record.error("no messages", "messages")

    warnings: list[str] = []
    messages: list[ChatMessage] = []
    times: list[datetime | None] = []
    for i, raw in enumerate(raw_messages):
        messages.append(normalize_message(raw, record, f"messages[{i}]"))
        times.append(_first_time(raw, _MESSAGE_TIME_KEYS, f"messages[{i}]", warnings))

    model = obj.get("model") if isinstance(obj.get("model"), str) else None
    # Tool definitions are part of every prompt: they must reach the turns, or the
    # estimate of each request is short by the size of the schemas.
    tools = _tools(obj, record)
    # Without tools the importer rebuilds the same turns itself: building them here too cost
    # a twentieth of a 50 MB import (each request lists every earlier message's index).
    calls = (
        calls_from_messages(messages, model=model, tools=tools, location=record.location)
        if tools
        else None
    )
    return Transcript(
        messages=messages,
        calls=calls,
        external_id=_text(obj.get("id")),
        title=_text(obj.get("title")) or "",
        model=model,
        created_at=_first_time(obj, _CREATED_KEYS, "", warnings),
        message_times=times if any(t is not None for t in times) else None,
        location=record.location,
        warnings=warnings,
        tags=metadata_tags(obj.get("metadata")),
    )


def _first_time(obj: Any, keys: tuple[str, ...], path: str, warnings: list[str]) -> datetime | None:
    if not isinstance(obj, dict):
        return None
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        parsed = parse_time(value)
        if parsed is None:
            where = f"{path}.{key}" if path else key
            warnings.append(f"{where}: unreadable time {value!r}, ignored")
        return parsed
    return None


def _tools(obj: dict[str, Any], record: Record) -> list[dict[str, Any]] | None:
    tools = obj.get("tools")
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise record.error("expected a list of tool definitions", "tools")
    return tools


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)
