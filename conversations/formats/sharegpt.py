"""ShareGPT: `[{"id", "conversations": [{"from": "human", "value": "..."}, ...]}]` (a JSON
array, a single object, or JSON Lines).

Speakers: human/user -> user; gpt/assistant/chatgpt/bard/bing/model -> assistant;
system -> system; observation/tool/function -> tool; function_call -> an assistant message
whose content is the call's text (ShareGPT keeps no structured tool calls). Any other
speaker is an error. Turns written as OpenAI messages (`role`/`content`) are accepted too,
and so is a record-level `system` prompt (LLaMA-Factory's variant).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from conversations.engine.types import ChatMessage, Transcript

from .errors import describe
from .messages import normalize_message
from .records import Record, record_object

SPEAKERS = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}


def parse_sharegpt(records: Iterable[Record]) -> Iterator[Transcript]:
    for record in records:
        yield sharegpt_transcript(record)


def sharegpt_transcript(record: Record) -> Transcript:
    obj = record_object(record)
    turns = obj.get("conversations")
    if not isinstance(turns, list):
        got = (
            "missing field" if turns is None else f"expected a list of turns, got {describe(turns)}"
        )
        raise record.error(got, "conversations")

    warnings: list[str] = []
    messages: list[ChatMessage] = []
    system = obj.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    calls_as_text = 0
    for i, turn in enumerate(turns):
        field = f"conversations[{i}]"
        # Some converters keep the ShareGPT envelope but write OpenAI-style turns.
        if isinstance(turn, dict) and "from" not in turn and "role" in turn:
            messages.append(normalize_message(turn, record, field))
            continue
        messages.append(_turn_message(turn, record, field))
        calls_as_text += turn.get("from") == "function_call"
    if not messages:
        raise record.error("no turns", "conversations")
    if calls_as_text:
        warnings.append(
            f"{calls_as_text} function_call turn(s) kept as assistant text: ShareGPT has no "
            "structured tool calls, so their token count is an approximation"
        )
    if obj.get("tools"):
        warnings.append("tool definitions ('tools') are not imported from ShareGPT records")
    model = obj.get("model")
    return Transcript(
        messages=messages,
        external_id=None if obj.get("id") is None else str(obj["id"]),
        model=model if isinstance(model, str) else None,
        location=record.location,
        warnings=warnings,
    )


def _turn_message(turn: Any, record: Record, field: str) -> ChatMessage:
    if not isinstance(turn, dict):
        raise record.error(f"expected a turn object, got {describe(turn)}", field)
    speaker = turn.get("from")
    role = SPEAKERS.get(speaker) if isinstance(speaker, str) else None
    if role is None:
        if speaker is None:
            raise record.error("missing speaker", f"{field}.from")
        expected = ", ".join(SPEAKERS)
        raise record.error(f"unknown speaker {speaker!r} (expected {expected})", f"{field}.from")
    value = turn.get("value")
    if not isinstance(value, str):
        got = "missing" if value is None else f"expected a string, got {describe(value)}"
        raise record.error(got, f"{field}.value")
    return {"role": role, "content": value}
