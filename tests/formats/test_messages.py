"""Validation and normalization shared by all formats."""

from datetime import UTC, datetime
from typing import Any

import pytest

from conversations.formats import ParseError
from conversations.formats.messages import calls_from_messages, normalize_message, parse_time
from conversations.formats.records import Record

RECORD = Record(value={}, file="chats.jsonl", number=7, unit="line")


def normalize(raw: Any) -> dict[str, Any]:
    return normalize_message(raw, RECORD, "messages[2]")


def test_it_makes_a_response_message_equal_to_the_same_message_resent() -> None:
    from_response: dict[str, Any] = {
        "role": "assistant",
        "content": "Hi",
        "refusal": None,
        "annotations": [],
    }
    resent = {"role": "assistant", "content": "Hi"}
    assert normalize(from_response) == normalize(resent) == {"role": "assistant", "content": "Hi"}


def test_it_keeps_tool_calls_and_a_null_assistant_content() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    message = normalize({"role": "assistant", "tool_calls": calls})
    assert message == {"role": "assistant", "content": None, "tool_calls": calls}


def test_it_keeps_parts_names_and_legacy_function_messages() -> None:
    parts = [{"type": "text", "text": "look"}, {"type": "input_audio", "input_audio": {}}]
    assert normalize({"role": "user", "name": "ana", "content": parts})["content"] == parts
    assert normalize({"role": "function", "name": "f", "content": "42"})["name"] == "f"


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"role": "bot", "content": "x"}, "messages[2].role", "unknown role 'bot'"),
        ({"content": "x"}, "messages[2].role", "missing role"),
        ({"role": "user"}, "messages[2].content", "content is missing"),
        ({"role": "system", "content": None}, "messages[2].content", "content is null"),
        ({"role": "assistant"}, "messages[2].content", "no tool_calls"),
        ({"role": "user", "content": 3}, "messages[2].content", "got number"),
        ({"role": "user", "content": [{"text": "x"}]}, "messages[2].content[0]", "'type'"),
        ({"role": "assistant", "tool_calls": "f"}, "messages[2].tool_calls", "list of tool"),
        ("hello", "messages[2]", "expected a message object, got string"),
    ],
)
def test_it_names_the_field_of_an_invalid_message(raw: Any, field: str, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        normalize(raw)
    assert caught.value.field == field
    assert message in caught.value.message
    assert str(caught.value).startswith(f"chats.jsonl line 7, field {field}: ")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1746093600, datetime(2025, 5, 1, 10, 0, tzinfo=UTC)),
        (1746093600000, datetime(2025, 5, 1, 10, 0, tzinfo=UTC)),
        ("2025-05-01T10:00:00Z", datetime(2025, 5, 1, 10, 0, tzinfo=UTC)),
        ("2025-05-01T12:00:00+02:00", datetime(2025, 5, 1, 10, 0, tzinfo=UTC)),
        ("1746093600", datetime(2025, 5, 1, 10, 0, tzinfo=UTC)),
        ("soon", None),
        (True, None),
    ],
)
def test_it_reads_unix_and_iso_times(value: Any, expected: datetime | None) -> None:
    assert parse_time(value) == expected


def test_it_builds_turns_with_a_trailing_pending_request() -> None:
    roles = ["system", "user", "assistant", "user", "assistant", "user"]
    messages = [{"role": role, "content": "x"} for role in roles]
    calls = calls_from_messages(messages)
    assert [(call.request, call.response) for call in calls] == [
        ([0, 1], 2),
        ([0, 1, 2, 3], 4),
        ([0, 1, 2, 3, 4, 5], None),
    ]
