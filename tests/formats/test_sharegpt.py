from collections.abc import Callable
from pathlib import Path

import pytest

from conversations.engine.types import Transcript
from conversations.formats import ParseError

Parse = Callable[..., list[Transcript]]


def test_it_reads_the_fastchat_oracle(oracles: Path, parse: Parse) -> None:
    transcripts = parse(oracles / "fastchat_dummy_conversation_sharegpt.json")
    assert len(transcripts) == 500
    assert sum(len(t.messages) for t in transcripts) == 2000
    first = transcripts[0]
    assert first.external_id == "identity_0"
    assert first.messages[:2] == [
        {"role": "user", "content": "Who are you?"},
        {
            "role": "assistant",
            "content": "I am Vicuna, a language model trained by researchers from Large "
            "Model Systems Organization (LMSYS).",
        },
    ]
    assert first.location == "fastchat_dummy_conversation_sharegpt.json record 1"


def test_it_names_the_record_and_field_of_an_unknown_speaker(samples: Path, parse: Parse) -> None:
    with pytest.raises(ParseError) as caught:
        parse(samples / "sharegpt_unknown_from.json")
    err = caught.value
    assert (err.unit, err.line, err.field) == ("record", 2, "conversations[2].from")
    assert str(err).startswith(
        "sharegpt_unknown_from.json record 2, field conversations[2].from: unknown speaker 'bot'"
    )


def test_it_maps_tool_turns_system_prompts_and_role_turns(samples: Path, parse: Parse) -> None:
    tools, roles = parse(samples / "sharegpt_variants.jsonl")
    assert [m["role"] for m in tools.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert tools.messages[0]["content"] == "You can call functions."
    assert any("function_call turn(s) kept as assistant text" in w for w in tools.warnings)
    assert any("'tools'" in w for w in tools.warnings)
    assert roles.messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert roles.model == "gpt-4o"


def test_it_requires_a_string_value(tmp_path: Path, parse: Parse) -> None:
    path = tmp_path / "s.json"
    path.write_text('[{"conversations": [{"from": "human", "value": 3}]}]')
    with pytest.raises(ParseError) as caught:
        parse(path, format="sharegpt")
    assert caught.value.field == "conversations[0].value"
