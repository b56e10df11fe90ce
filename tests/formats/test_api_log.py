import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conversations.engine.types import Transcript
from conversations.formats import ParseError

Parse = Callable[..., list[Transcript]]


def test_it_groups_a_growing_conversation_by_prefix_continuity(samples: Path, parse: Parse) -> None:
    trip, unrelated = parse(samples / "api_log_prefix.jsonl")
    assert trip.calls is not None and unrelated.calls is not None
    assert len(trip.calls) == 3
    # 1 + 3 + 5 request messages were sent, plus 3 replies: stored once that is 6.
    assert len(trip.messages) == 6
    assert [(c.request, c.response) for c in trip.calls] == [
        ([0], 1),
        ([0, 1, 2], 3),
        ([0, 1, 2, 3, 4], 5),
    ]
    assert [(c.request, c.response) for c in unrelated.calls] == [([0, 1], 2)]
    assert unrelated.messages[2] == {"role": "assistant", "content": "Bonjour"}


def test_it_keeps_what_each_call_reported(samples: Path, parse: Parse) -> None:
    trip, _ = parse(samples / "api_log_prefix.jsonl")
    assert trip.calls is not None
    first, second, third = trip.calls
    assert first.model == "gpt-4o-2024-08-06"  # the response's model, not the request's alias
    assert first.service_tier == "default"  # the response's tier, not the request's "auto"
    assert first.prompt_cache_key == "user-7"
    assert (first.max_output_tokens, second.max_output_tokens) == (300, 250)
    assert first.started_at == datetime(2025, 5, 1, 10, 0, tzinfo=UTC)
    assert (first.latency_ms, second.latency_ms) == (640, 910)
    assert first.external_id == "chatcmpl-1"
    assert first.location == "api_log_prefix.jsonl line 1"
    # No timestamp on the last line: the response's `created` is used.
    assert third.started_at == datetime.fromtimestamp(1746093720, tz=UTC)
    assert third.usage is not None
    assert (third.usage.prompt_tokens, third.usage.cached_tokens) == (2006, 1920)
    assert (third.usage.completion_tokens, third.usage.reasoning_tokens) == (100, 64)
    assert third.service_tier == "flex"
    assert trip.model == "o4-mini-2025-04-16"
    assert trip.created_at == first.started_at
    assert trip.message_times is not None
    assert trip.message_times[1] == datetime(2025, 5, 1, 10, 0, 0, 640000, tzinfo=UTC)


def test_it_groups_by_conversation_id_even_when_history_was_trimmed(
    samples: Path, parse: Parse
) -> None:
    tcp, greeting = parse(samples / "api_log_conversation_id.jsonl")
    assert (tcp.external_id, greeting.external_id) == ("c-1", "c-2")
    assert tcp.calls is not None and greeting.calls is not None
    # Call 2 replaced the history with a summary; call 3 slid the window. The system
    # prompt and the kept turns map to the stored messages, new ones are appended.
    assert [(c.request, c.response) for c in tcp.calls] == [
        ([0, 1], 2),
        ([0, 3, 4], 5),
        ([0, 4, 5, 6], 7),
    ]
    assert tcp.messages[3]["content"].startswith("Summary so far")
    assert len(tcp.messages) == 8


def test_it_keeps_a_failed_call_as_pending_with_a_warning(samples: Path, parse: Parse) -> None:
    _, greeting = parse(samples / "api_log_conversation_id.jsonl")
    assert greeting.calls is not None
    assert [(c.request, c.response) for c in greeting.calls] == [([0], 1), ([0, 1, 2], None)]
    assert greeting.warnings == [
        "api_log_conversation_id.jsonl line 4: the call failed (Rate limit reached): "
        "kept as a pending call"
    ]


def test_it_accepts_the_other_envelopes(samples: Path, parse: Parse) -> None:
    one, two, three = parse(samples / "api_log_variants.jsonl")
    assert one.calls is not None and two.calls is not None and three.calls is not None
    assert one.calls[0].external_id == "v1"
    assert two.calls[0].external_id == "v2"  # {"status_code", "body"} wrappers unwrapped
    assert two.messages[1]["content"] == "2"
    assert "2 choices: only the first is kept" in two.warnings[0]
    assert three.calls[0].response is None
    assert any("no response logged" in w for w in three.warnings)
    assert any("unreadable timestamp 'not a time'" in w for w in three.warnings)
    # Legacy `functions` are counted as the tools they are shown as.
    assert three.calls[0].tools == [{"type": "function", "function": {"name": "f"}}]


def test_it_stores_a_long_prefix_flow_linearly(tmp_path: Path, parse: Parse) -> None:
    history: list[dict[str, str]] = [{"role": "system", "content": "Be kind."}]
    lines = []
    for turn in range(200):
        history.append({"role": "user", "content": f"question {turn}"})
        reply = {"role": "assistant", "content": f"answer {turn}"}
        lines.append(
            json.dumps(
                {"request": {"messages": history}, "response": {"choices": [{"message": reply}]}}
            )
        )
        history = [*history, reply]
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(lines))
    [transcript] = parse(path, format="api_log")
    assert len(transcript.messages) == 401
    assert transcript.calls is not None and len(transcript.calls) == 200
    assert transcript.calls[-1].request == list(range(400))


def test_it_does_not_merge_an_identical_first_turn_into_a_finished_conversation(
    tmp_path: Path, parse: Parse
) -> None:
    def line(messages: list[dict[str, str]], reply: str) -> str:
        response = {"choices": [{"message": {"role": "assistant", "content": reply}}]}
        return json.dumps({"request": {"messages": messages}, "response": response})

    hi = {"role": "user", "content": "hi"}
    hello = {"role": "assistant", "content": "hello"}
    path = tmp_path / "twice.jsonl"
    path.write_text(
        "\n".join(
            [
                line([hi], "hello"),
                line([hi], "hello"),  # the same opening, a second session
                line([hi, hello, {"role": "user", "content": "a"}], "A"),
                line([hi, hello, {"role": "user", "content": "b"}], "B"),
            ]
        )
    )
    first, second = parse(path, format="api_log")
    assert [m["content"] for m in first.messages] == ["hi", "hello", "a", "A"]
    assert [m["content"] for m in second.messages] == ["hi", "hello", "b", "B"]


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"response": {}}', None, "missing the request body"),
        ('{"request": {"model": "gpt-4o"}}', "request.messages", "a chat.completions request"),
        (
            '{"request": {"messages": [{"role": "bot", "content": "x"}]}}',
            "request.messages[0].role",
            "unknown role",
        ),
        (
            '{"request": {"messages": [{"role": "user", "content": "x"}]}, "response": [1]}',
            "response",
            "got array",
        ),
    ],
)
def test_it_names_what_is_wrong_with_a_line(
    tmp_path: Path, parse: Parse, line: str, field: str | None, message: str
) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(
        '{"request": {"messages": [{"role": "user", "content": "ok"}]}}\n' + line + "\n"
    )
    with pytest.raises(ParseError) as caught:
        parse(path, format="api_log")
    assert (caught.value.line, caught.value.field) == (2, field)
    assert message in caught.value.message


def test_it_keeps_a_refused_call_with_an_unrenderable_request_as_pending(
    tmp_path: Path, parse: Parse
) -> None:
    refused = {
        "request": {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "bot", "content": "not a role"},
                {"role": "user"},
            ],
        },
        "response": {"error": {"message": "Invalid value: 'bot'", "type": "invalid_request_error"}},
    }
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(refused) + "\n")
    (transcript,) = parse(path, format="api_log")
    assert transcript.calls is not None
    (call,) = transcript.calls
    assert call.response is None  # pending
    assert [transcript.messages[i]["content"] for i in call.request] == ["be brief"]
    joined = "\n".join(transcript.warnings)
    assert "request.messages[1].role: unknown role 'bot'" in joined
    assert "request.messages[2].content: content is missing" in joined
    assert "Invalid value: 'bot'" in joined and "pending" in joined


def test_it_imports_a_reply_withheld_by_the_content_filter(fixtures: Path, parse: Parse) -> None:
    (transcript,) = parse(fixtures / "real" / "edge-cases" / "openllmetry.no-message.jsonl")
    assert transcript.calls is not None
    (call,) = transcript.calls
    assert call.response is not None
    assert transcript.messages[call.response] == {"role": "assistant", "content": ""}
    assert call.usage is not None
    assert (call.usage.prompt_tokens, call.usage.completion_tokens) == (15, 19)
    assert any("finish_reason 'content_filter'" in w for w in transcript.warnings)


def test_it_keeps_a_tool_choice_that_costs_tokens(tmp_path: Path, parse: Parse) -> None:
    """A named function and "none" cost prompt tokens and are kept; "auto" is not."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    reply = {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}
    lines = []
    for n, choice in enumerate(["none", "auto", {"type": "function", "function": {"name": "f"}}]):
        messages = [{"role": "user", "content": f"question {n}"}]
        request = {"messages": messages, "tools": tools, "tool_choice": choice}
        lines.append(json.dumps({"request": request, "response": reply}))
    path = tmp_path / "choices.jsonl"
    path.write_text("\n".join(lines))
    choices = [call.tool_choice for t in parse(path, format="api_log") for call in t.calls or []]
    assert choices == ["none", None, {"type": "function", "function": {"name": "f"}}]
