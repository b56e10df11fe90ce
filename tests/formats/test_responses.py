"""Responses API logs (/v1/responses) read like chat logs: the corpus's real files, and
small hand-made lines for the chains and the edges."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conversations.engine.types import Transcript
from conversations.formats import ParseError

Parse = Callable[..., list[Transcript]]
REAL = Path(__file__).resolve().parent.parent / "fixtures" / "real"
RESPONSES_FILES = sorted(REAL.glob("*.responses.jsonl"))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("path", RESPONSES_FILES, ids=lambda p: p.name)
def test_it_imports_every_call_of_a_real_responses_log(path: Path, parse: Parse) -> None:
    lines = _lines(path)
    transcripts = parse(path)
    calls = [call for t in transcripts for call in t.calls or []]
    assert len(calls) == len(lines)
    # By line: a recorder may hold the same response id twice (a re-recorded test).
    by_line = {call.location: call for call in calls}
    for number, line in enumerate(lines, start=1):
        usage = line["response"]["usage"]
        call = by_line[f"{path.name} line {number}"]
        assert call.external_id == line["response"]["id"]
        assert call.usage is not None
        assert call.usage.prompt_tokens == usage["input_tokens"]
        assert call.usage.completion_tokens == usage["output_tokens"]
        details = usage.get("input_tokens_details") or {}
        assert call.usage.cached_tokens == (details.get("cached_tokens") or 0)
        reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
        assert call.usage.reasoning_tokens == reasoning
        assert call.response is not None  # every corpus call completed or stopped short
        assert call.responses_api  # counted by the Responses rules (render.py)


def test_it_chains_calls_by_previous_response_id_in_the_real_logs(parse: Parse) -> None:
    chained = 0
    for path in RESPONSES_FILES:
        lines = _lines(path)
        home = {}
        for transcript in parse(path):
            for call in transcript.calls or []:
                home[call.external_id] = (transcript, call)
        for line in lines:
            previous = line["request"].get("previous_response_id")
            if previous is None or previous not in home:
                continue
            chained += 1
            transcript, call = home[line["response"]["id"]]
            earlier_transcript, earlier = home[previous]
            assert earlier_transcript is transcript
            # The earlier call's reply is part of what this call sent.
            assert earlier.response in call.request
    assert chained >= 5


def _call(
    response_id: str,
    input_items: Any,
    output: list[dict[str, Any]],
    *,
    previous: str | None = None,
    instructions: str | None = None,
    conversation: str | None = None,
    usage: dict[str, Any] | None = None,
    **extra: Any,
) -> str:
    request: dict[str, Any] = {"model": "gpt-4.1", "input": input_items, **extra}
    if previous:
        request["previous_response_id"] = previous
    if instructions:
        request["instructions"] = instructions
    if conversation:
        request["conversation"] = conversation
    response = {
        "id": response_id,
        "object": "response",
        "created_at": 1750000000,
        "model": "gpt-4.1-2025-04-14",
        "status": "completed",
        "output": output,
        "usage": usage
        or {
            "input_tokens": 50,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 10,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 60,
        },
    }
    return json.dumps({"request": request, "response": response})


def _text(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def test_it_renders_instructions_tools_and_tool_round_trips(tmp_path: Path, parse: Parse) -> None:
    weather = {
        "type": "function",
        "name": "weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    call_item = {
        "type": "function_call",
        "call_id": "call_1",
        "name": "weather",
        "arguments": '{"city":"Paris"}',
    }
    path = tmp_path / "responses.jsonl"
    path.write_text(
        "\n".join(
            [
                _call(
                    "resp_1",
                    "Weather in Paris?",
                    [{"type": "reasoning", "summary": []}, call_item],
                    instructions="Be brief.",
                    tools=[weather, {"type": "web_search"}],
                    text={
                        "format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}
                    },
                ),
                _call(
                    "resp_2",
                    [{"type": "function_call_output", "call_id": "call_1", "output": "18C"}],
                    [_text("18C and sunny.")],
                    previous="resp_1",
                    instructions="Be very brief.",
                    tools=[weather],
                    usage={
                        "input_tokens": 80,
                        "input_tokens_details": {"cached_tokens": 64},
                        "output_tokens": 30,
                        "output_tokens_details": {"reasoning_tokens": 20},
                        "total_tokens": 110,
                    },
                ),
            ]
        )
    )
    (transcript,) = parse(path)
    assert transcript.calls is not None
    first, second = transcript.calls
    assert [transcript.messages[i] for i in first.request] == [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert first.response is not None
    reply = transcript.messages[first.response]
    assert reply["tool_calls"][0]["function"] == {
        "name": "weather",
        "arguments": '{"city":"Paris"}',
    }
    assert first.tools == [
        {
            "type": "function",
            "function": {k: v for k, v in weather.items() if k != "type"},
        }
    ]
    assert first.response_format is not None
    assert first.response_format["json_schema"]["name"] == "w"
    # The second call: its own instructions (the first's are not carried over), the earlier
    # input and reply, then the tool's output.
    assert [transcript.messages[i]["role"] for i in second.request] == [
        "developer",
        "user",
        "assistant",
        "tool",
    ]
    assert transcript.messages[second.request[0]]["content"] == "Be very brief."
    assert first.response in second.request
    assert second.usage is not None
    assert (second.usage.cached_tokens, second.usage.reasoning_tokens) == (64, 20)
    joined = "\n".join(transcript.warnings)
    assert "built-in tools not counted in estimates: 1 web_search" in joined


def test_it_groups_by_conversation_and_keeps_its_earlier_items(
    tmp_path: Path, parse: Parse
) -> None:
    path = tmp_path / "conv.jsonl"
    path.write_text(
        "\n".join(
            [
                _call("resp_a", "Hi", [_text("Hello")], conversation="conv_1"),
                _call("resp_x", "Unrelated", [_text("Sure")]),
                _call("resp_b", "And?", [_text("More")], conversation="conv_1"),
            ]
        )
    )
    conversation, unrelated = parse(path)
    assert conversation.external_id == "conv_1"
    assert conversation.calls is not None and unrelated.calls is not None
    assert [
        [conversation.messages[i]["content"] for i in c.request] for c in conversation.calls
    ] == [
        ["Hi"],
        ["Hi", "Hello", "And?"],
    ]
    assert len(unrelated.calls) == 1


def test_it_warns_about_a_previous_response_not_in_the_log(tmp_path: Path, parse: Parse) -> None:
    path = tmp_path / "orphan.jsonl"
    path.write_text(_call("resp_2", "Go on", [_text("OK")], previous="resp_gone") + "\n")
    (transcript,) = parse(path)
    assert transcript.external_id == "resp_gone"
    assert any(
        "previous_response_id 'resp_gone' is not in this log" in w for w in transcript.warnings
    )


def test_it_groups_a_stateless_client_by_prefix_continuity(tmp_path: Path, parse: Parse) -> None:
    path = tmp_path / "stateless.jsonl"
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
        {"role": "user", "content": "Bye"},
    ]
    path.write_text(
        "\n".join(
            [
                _call("resp_1", [history[0]], [_text("Hello")]),
                _call("resp_2", history, [_text("Goodbye")]),
            ]
        )
    )
    (transcript,) = parse(path)
    assert transcript.calls is not None
    assert [c.request for c in transcript.calls] == [[0], [0, 1, 2]]


def test_it_keeps_a_failed_response_as_pending(tmp_path: Path, parse: Parse) -> None:
    failed = json.loads(_call("resp_f", "Hi", []))
    failed["response"].update(status="failed", usage=None, error={"message": "server_error"})
    path = tmp_path / "failed.jsonl"
    path.write_text(json.dumps(failed) + "\n")
    (transcript,) = parse(path)
    assert transcript.calls is not None
    assert (transcript.calls[0].response, transcript.calls[0].usage) == (None, None)
    assert any("server_error" in w and "pending" in w for w in transcript.warnings)


def test_it_keeps_a_refused_call_with_unreadable_input_as_pending(
    tmp_path: Path, parse: Parse
) -> None:
    refused = json.loads(
        _call(
            "resp_r", [{"role": "user", "content": "fine"}, {"role": "robot", "content": "?"}], []
        )
    )
    refused["response"].update(
        status="failed", usage=None, error={"message": "Invalid value: 'robot'"}
    )
    path = tmp_path / "refused.jsonl"
    path.write_text(json.dumps(refused) + "\n")
    (transcript,) = parse(path)
    assert transcript.calls is not None
    (call,) = transcript.calls
    assert call.response is None
    assert [transcript.messages[i]["content"] for i in call.request] == ["fine"]
    assert any("request.input[1].role: unknown role 'robot'" in w for w in transcript.warnings)


def test_it_refuses_unreadable_input_in_a_call_that_succeeded(tmp_path: Path, parse: Parse) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(_call("resp_b", [{"role": "robot", "content": "?"}], [_text("ok")]) + "\n")
    with pytest.raises(ParseError) as caught:
        parse(path)
    assert (caught.value.line, caught.value.field) == (1, "request.input[0].role")
