from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conversations.engine.types import Transcript
from conversations.formats import ParseError

Parse = Callable[..., list[Transcript]]


def test_it_reads_the_fine_tuning_oracle(oracles: Path, parse: Parse) -> None:
    transcripts = parse(oracles / "openai_cookbook_toy_chat_fine_tuning.jsonl")
    assert len(transcripts) == 5
    assert sum(len(t.messages) for t in transcripts) == 19
    # No system message in example 3, no user message in example 4: both are valid.
    assert [m["role"] for m in transcripts[2].messages] == ["user", "assistant"]
    assert [m["role"] for m in transcripts[3].messages] == ["system", "assistant"]
    assert transcripts[4].location == "openai_cookbook_toy_chat_fine_tuning.jsonl line 5"
    assert all(t.calls is None for t in transcripts)


def test_it_reads_ids_titles_and_times(samples: Path, parse: Parse) -> None:
    first, _ = parse(samples / "chat_records.json")
    assert (first.external_id, first.title, first.model) == (
        "support-17",
        "Refund question",
        "gpt-4o-mini",
    )
    assert first.created_at == datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    assert first.message_times == [
        None,
        datetime(2025, 3, 1, 9, 0, tzinfo=UTC),
        datetime(2025, 3, 1, 9, 0, 3, tzinfo=UTC),
        None,
    ]
    assert first.warnings == ["messages[3].timestamp: unreadable time 'yesterday', ignored"]
    assert first.location == "chat_records.json record 1"
    # Time keys are metadata, not part of what was sent.
    assert first.messages[1] == {"role": "user", "content": "Can I get a refund?"}
    assert first.messages[3]["content"][1]["image_url"]["detail"] == "low"


def test_it_builds_turns_carrying_the_tools_of_the_record(samples: Path, parse: Parse) -> None:
    _, second = parse(samples / "chat_records.json")
    assert second.external_id == "18"
    assert second.calls is not None
    assert [(c.request, c.response) for c in second.calls] == [
        ([0], 1),
        ([0, 1, 2], 3),
        ([0, 1, 2, 3, 4], None),
    ]
    assert second.calls[0].tools is not None
    assert second.calls[0].tools[0]["function"]["name"] == "lookup_order"
    assert "weight" not in second.messages[3]


def test_it_explains_an_unknown_role(samples: Path, parse: Parse) -> None:
    with pytest.raises(ParseError) as caught:
        parse(samples / "chat_unknown_role.jsonl")
    assert str(caught.value) == (
        "chat_unknown_role.jsonl line 3, field messages[2].role: unknown role 'bot' "
        "(expected system, developer, user, assistant, tool, function)"
    )


def test_it_names_a_missing_content_field(samples: Path, parse: Parse) -> None:
    with pytest.raises(ParseError) as caught:
        parse(samples / "chat_missing_content.jsonl")
    assert (caught.value.line, caught.value.field) == (1, "messages[1].content")
    assert "content is missing" in caught.value.message


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"conversation": []}', "messages", "missing field"),
        ('{"messages": {}}', "messages", "expected a list of messages, got object"),
        ('{"messages": []}', "messages", "no messages"),
        ('{"messages": ["hi"]}', "messages[0]", "expected a message object, got string"),
    ],
)
def test_it_rejects_records_without_usable_messages(
    tmp_path: Path, parse: Parse, line: str, field: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ParseError) as caught:
        parse(path, format="chat_jsonl")
    assert caught.value.field == field
    assert message in caught.value.message


def test_it_rejects_a_record_that_is_not_an_object(tmp_path: Path, parse: Parse) -> None:
    path = tmp_path / "mixed.json"
    path.write_text('[{"messages": [{"role": "user", "content": "a"}]}, 5]')
    with pytest.raises(
        ParseError, match=r"mixed\.json record 2: expected a JSON object, got number"
    ):
        parse(path)
