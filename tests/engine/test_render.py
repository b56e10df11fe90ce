"""Requests into tokens: the cookbook's API-verified counts, and incremental rendering that
encodes each message once, yet is identical to rendering from scratch."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conversations.engine.cache import block_hashes
from conversations.engine.messages import EARLY_TOKENS
from conversations.engine.profiles import default_profile
from conversations.engine.render import (
    TranscriptRenderer,
    count_request,
    priming_tokens,
    render_tokens,
)
from conversations.engine.types import ChatMessage
from conversations.engine.vocabulary import get_encoding

from .conftest import conversation, cookbook

REAL = Path(__file__).resolve().parent.parent / "fixtures" / "real"

WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def _is_alias_mismatch(case: dict[str, Any]) -> bool:
    return "MISMATCH" in case.get("note", "")


def test_it_reproduces_every_api_count_of_the_cookbook(oracles: Path) -> None:
    cases = cookbook(oracles)["cases"]
    checked = set()
    for case in cases:
        if _is_alias_mismatch(case):
            continue  # the notebook's alias pointed at another snapshot; next test
        counted = count_request(
            case["messages"], profile=default_profile(case["model"]), tools=case.get("tools")
        )
        assert counted == case["counted_by_api"], (case["model"], case["kind"])
        checked.add((case["model"], case["counted_by_api"]))
    assert {
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
        ("gpt-4", 129),
        ("gpt-4-0613", 129),
        ("gpt-3.5-turbo", 129),
        ("gpt-3.5-turbo-0301", 127),
        ("gpt-4o", 101),
        ("gpt-4o-mini", 101),
        ("gpt-4", 105),
        ("gpt-3.5-turbo", 105),
    } <= checked


def test_it_explains_the_one_cookbook_mismatch(oracles: Path) -> None:
    # In mid-2023 the `gpt-3.5-turbo` alias still served -0301 (API: 127) while the notebook's
    # function assumed -0613 rules (129). Today's alias follows -0613/-0125 rules, and the
    # API's 127 is exactly what the -0301 profile gives.
    [case] = [c for c in cookbook(oracles)["cases"] if _is_alias_mismatch(c)]
    messages = case["messages"]
    assert count_request(messages, profile=default_profile("gpt-3.5-turbo")) == 129
    assert count_request(messages, profile=default_profile("gpt-3.5-turbo-0301")) == 127
    assert case["counted_by_api"] == 127


def test_it_counts_a_json_schema_response_format_as_the_api_reported() -> None:
    # tests/fixtures/real/ruby_llm.jsonl line 34: gpt-4.1-nano reported 41 prompt tokens.
    profile = default_profile("gpt-4.1-nano")
    schema = {
        "type": "object",
        "properties": {"country": {"type": "string"}},
        "required": ["country"],
        "additionalProperties": False,
    }
    spec = {"name": "response", "schema": schema, "strict": True}
    response_format = {"type": "json_schema", "json_schema": spec}
    messages = [{"role": "user", "content": "What country is Paris in?"}]
    assert count_request(messages, profile=profile, response_format=response_format) == 41
    # Keywords that constrained decoding enforces are not shown to the model.
    constrained = {**schema, "properties": {"country": {"type": "string", "format": "email"}}}
    spec = {**spec, "schema": {**constrained, "minProperties": 1}}
    response_format = {"type": "json_schema", "json_schema": spec}
    assert count_request(messages, profile=profile, response_format=response_format) == 41
    plain = count_request(messages, profile=profile)
    assert (
        count_request(messages, profile=profile, response_format={"type": "json_object"}) == plain
    )


def test_it_counts_a_json_schema_format_without_its_name_on_the_gpt5_family() -> None:
    # tests/fixtures/real/ruby_llm.jsonl line 241 (gpt-5-nano, 51 reported) and fantasy.jsonl
    # line 125 (gpt-5, 95 reported): the name is not counted once more, nor 2 tokens beside.
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "number"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    spec = {"name": "PersonSchemaClass", "schema": schema, "strict": True}
    response_format = {"type": "json_schema", "json_schema": spec}
    messages: list[ChatMessage] = [
        {"role": "user", "content": "Generate a person named Alice who is 28 years old"}
    ]
    nano = default_profile("gpt-5-nano")
    assert count_request(messages, profile=nano, response_format=response_format) == 51
    renamed = {"type": "json_schema", "json_schema": {**spec, "name": "response"}}
    assert count_request(messages, profile=nano, response_format=renamed) == 51 - 2
    described = {
        "name": "Person",
        "strict": True,
        "description": "A person with name, age, and city",
        "schema": {
            "additionalProperties": False,
            "properties": {
                "age": {"description": "The person's age", "type": "integer"},
                "city": {"description": "The city where the person lives", "type": "string"},
                "name": {"description": "The person's name", "type": "string"},
            },
            "required": ["name", "age", "city"],
            "type": "object",
        },
    }
    asked: list[ChatMessage] = [
        {
            "role": "user",
            "content": "Generate information about a person named Alice who is 30 years old "
            "and lives in Paris.",
        }
    ]
    gpt5 = default_profile("gpt-5")
    person = {"type": "json_schema", "json_schema": described}
    assert count_request(asked, profile=gpt5, response_format=person) == 95
    # "PersonSchemaClass" is 2 tokens longer than "response": the heading shows it once on
    # the gpt-5 family (above), twice elsewhere (heading and once more)
    other = default_profile("gpt-4.1-nano")
    with_name = count_request(messages, profile=other, response_format=response_format)
    assert with_name - count_request(messages, profile=other, response_format=renamed) == 4


def test_it_renders_exactly_as_many_tokens_as_it_counts(oracles: Path) -> None:
    for case in cookbook(oracles)["cases"]:
        profile = default_profile(case["model"])
        rendered = render_tokens(case["messages"], profile=profile, tools=case.get("tools"))
        assert len(rendered) == count_request(
            case["messages"], profile=profile, tools=case.get("tools")
        )


def _check(renderer: TranscriptRenderer, request: list[int], **header: Any) -> None:
    known = header.pop("known", 0)
    messages = [renderer.messages.messages[i] for i in request]
    rendered = renderer.render(request, known=known, **header)
    scratch = render_tokens(messages, profile=renderer.profile, **header)
    assert (
        rendered.length
        == len(scratch)
        == count_request(messages, profile=renderer.profile, **header)
    )
    assert list(rendered.blocks) == block_hashes(scratch)
    assert list(rendered.source.tokens(0, rendered.length)) == scratch


def test_it_renders_a_growing_conversation_like_from_scratch() -> None:
    transcript = conversation(15)
    renderer = TranscriptRenderer(transcript.messages, default_profile("gpt-4o"))
    for end in range(2, len(transcript.messages), 2):
        _check(renderer, list(range(end)))


@pytest.mark.parametrize("step", [4, 5, 7, 16])
def test_its_blocks_are_as_from_scratch_whether_or_not_reply_priming_closes_one(
    step: int,
) -> None:
    # A call whose reply priming closes no block takes a shortcut (render._snapshot): both
    # kinds of call, with blocks small enough that each comes up, hash as from scratch.
    transcript = conversation(15)
    profile = default_profile("gpt-4o")
    renderer = TranscriptRenderer(transcript.messages, profile, step=step)
    priming = len(priming_tokens(profile))
    closes = set()
    for end in range(2, len(transcript.messages), 2):
        rendered = renderer.render(list(range(end)))
        scratch = render_tokens(transcript.messages[:end], profile=profile)
        assert list(rendered.blocks) == block_hashes(scratch, step=step)
        assert rendered.block_list() == block_hashes(scratch, step=step)
        closes.add(rendered.length // step > (rendered.length - priming) // step)
    assert closes == {True, False}


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-5-mini", "o3-mini"])
def test_it_makes_each_prompt_a_prefix_of_the_next(model: str) -> None:
    # reply priming is the opening of the assistant message that follows, also on reasoning
    # models whose priming stops before the channel their assistant messages name
    transcript = conversation(6)
    profile = default_profile(model)
    prompts = [
        render_tokens(transcript.messages[:end], profile=profile)
        for end in range(2, len(transcript.messages), 2)
    ]
    for shorter, longer in itertools.pairwise(prompts):
        assert longer[: len(shorter)] == shorter


@pytest.mark.pure_python  # spies on calls a compiled module makes directly
def test_it_trusts_a_known_history_only_for_the_previous_request_on_its_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`known` skips comparing the history with the previous request (a caller that only
    grows it vouches for it), and only then: after a render on another header, or with a
    `known` that is not the previous request's length, the history is compared and a wrong
    `known` changes nothing."""
    import conversations.engine.render as render_module

    compared: list[int] = []
    real = render_module._common_prefix

    def spy(a: list[int], b: list[int]) -> int:
        if a:  # (a render from scratch compares nothing)
            compared.append(len(a))
        return real(a, b)

    monkeypatch.setattr(render_module, "_common_prefix", spy)
    transcript = conversation(8)
    renderer = TranscriptRenderer(transcript.messages, default_profile("gpt-4o"))
    _check(renderer, [0, 1])
    _check(renderer, [0, 1, 2, 3], known=2)  # the previous request, grown
    assert compared == []
    _check(renderer, [0, 1, 2, 3, 4, 5], tools=WEATHER, known=4)  # another header
    _check(renderer, [0, 1, 2, 3, 4, 5, 6, 7], known=6)  # the latest render was on it
    _check(renderer, [0, 3, 4, 5], known=3)  # not the previous request's length
    assert compared == [4, 8]


def test_it_renders_windows_tools_and_released_tokens_correctly() -> None:
    transcript = conversation(12)
    renderer = TranscriptRenderer(transcript.messages, default_profile("gpt-4o"))
    for end in range(6, len(transcript.messages), 2):
        _check(renderer, [0, *range(end - 4, end)])  # a sliding window forks the chain
        _check(renderer, list(range(end)), tools=WEATHER)  # alternating tool sets
    renderer.release()
    _check(renderer, [0, 1, 2, 3])  # read back after release: re-encoded on demand


def test_it_maps_tokens_back_to_messages() -> None:
    transcript = conversation(3)
    renderer = TranscriptRenderer(transcript.messages, default_profile("gpt-4o"))
    rendered = renderer.render([0, 1, 2, 3], tools=WEATHER)
    source = rendered.source
    header = len(render_tokens([], profile=renderer.profile, tools=WEATHER)) - 3
    assert source.message_at(0) is None  # the tools block
    assert source.message_at(header) == 0
    assert source.message_at(rendered.length - 4) == 3
    assert source.message_at(rendered.length - 1) is None  # reply priming


def test_it_names_the_position_in_the_request_not_the_stored_index() -> None:
    transcript = conversation(8)
    renderer = TranscriptRenderer(transcript.messages, default_profile("gpt-4o"))
    rendered = renderer.render([5, 6, 7])  # a request that starts at the sixth stored message
    source = rendered.source
    assert source.message_at(4) == 0  # past the first message's 3-token header
    assert source.message_at(rendered.length - 4) == 2


def test_it_encodes_each_message_at_most_twice_under_a_sliding_window(
    encoded: list[ChatMessage],
) -> None:
    # manual flow: tokens are dropped once hashed; the first fork switches to keeping them
    transcript = conversation(20)
    renderer = TranscriptRenderer(transcript.messages, default_profile("gpt-4o"))
    for end in range(2, 14, 2):
        renderer.render(list(range(end)))
    for end in range(14, len(transcript.messages), 2):
        renderer.render([0, *range(end - 6, end)])
    assert len(encoded) <= 2 * len(transcript.messages)


@pytest.mark.pure_python  # spies on calls a compiled module makes directly
def test_it_keeps_the_early_messages_tokens_for_diagnosis_after_release(
    encoded: list[ChatMessage],
) -> None:
    transcript = conversation(40)
    renderer = TranscriptRenderer(transcript.messages, default_profile("gpt-4o"))
    rendered = [renderer.render(list(range(end))) for end in range(2, 81, 2)]
    assert rendered[-1].length > 2 * EARLY_TOKENS  # some messages start late
    renderer.release()
    first_pass = len(encoded)
    scratch = render_tokens(transcript.messages[:80], profile=renderer.profile)
    encoded.clear()
    early = rendered[-1].source.tokens(0, EARLY_TOKENS)
    assert early == scratch[:EARLY_TOKENS]
    assert encoded == []  # read back without encoding anything again
    late = rendered[-1].source.tokens(rendered[-1].length - 200, rendered[-1].length)
    assert late == scratch[-200:]
    assert 0 < len(encoded) < first_pass  # the late messages come back re-encoded


def test_it_does_not_keep_a_long_early_message_after_release() -> None:
    # a shared 10k-token system prompt starts at token 0 but is longer than EARLY_TOKENS:
    # keeping it in every transcript would cost 40 kB each
    long_prompt = "costly words " * 6000
    messages: list[ChatMessage] = [
        {"role": "system", "content": long_prompt},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    renderer = TranscriptRenderer(messages, default_profile("gpt-4o"))
    renderer.render([0, 1])
    assert renderer.messages.length(0) > EARLY_TOKENS
    renderer.release()
    kept = [renderer.messages._tokens[i] is not None for i in range(3)]
    assert kept == [False, False, False]  # the user message starts after EARLY_TOKENS too
    short = TranscriptRenderer(conversation(3).messages, default_profile("gpt-4o"))
    short.render([0, 1])
    short.release()
    assert short.messages._tokens[0] is not None and short.messages._tokens[1] is not None


def test_it_counts_a_forced_tool_choice_after_the_reply_priming() -> None:
    # tests/fixtures/real/openllmetry.jsonl line 32: gpt-3.5-turbo-0125 reported 100.
    def described(text: str, kind: str) -> dict[str, object]:
        return {"description": text, "type": kind}

    taste = {**described("List of taste characteristics", "array"), "items": {"type": "string"}}
    parameters = {
        "properties": {
            "name": described("The name of the food item", "string"),
            "healthy": described("Whether the food is good for you", "boolean"),
            "calories": described("Estimated calories per serving", "integer"),
            "taste_profile": taste,
        },
        "required": ["name", "healthy", "calories", "taste_profile"],
        "type": "object",
    }
    function = {"name": "FoodAnalysis", "description": "", "parameters": parameters}
    tools = [{"type": "function", "function": function}]
    forced = {"type": "function", "function": {"name": "FoodAnalysis"}}
    messages = [{"role": "user", "content": "Analyze the following food item: avocado"}]
    profile = default_profile("gpt-3.5-turbo-0125")
    assert count_request(messages, profile=profile, tools=tools, tool_choice=forced) == 100
    free = count_request(messages, profile=profile, tools=tools)
    # " to=functions.FoodAnalysis" (6 tokens) and 4 of framing
    assert free == 90
    # a suffix: the messages' tokens, hence the next request's prefix, are unchanged
    with_choice = render_tokens(messages, profile=profile, tools=tools, tool_choice=forced)
    assert with_choice[:free] == render_tokens(messages, profile=profile, tools=tools)
    # the gpt-5 family answers a forced choice at no cost
    gpt5 = default_profile("gpt-5-nano")
    assert count_request(messages, profile=gpt5, tools=tools, tool_choice=forced) == (
        count_request(messages, profile=gpt5, tools=tools)
    )


def test_it_counts_reasoning_models_like_harmony_chats() -> None:
    # The reply priming stops after the role (one token fewer than gpt-4o's), and an earlier
    # assistant message names its channel (two more): tests/fixtures/real/ruby_llm.jsonl.
    messages: list[ChatMessage] = [{"role": "user", "content": "What's 2 + 2?"}]
    history: list[ChatMessage] = [
        *messages,
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3 + 3?"},
    ]
    gpt4o, gpt5 = default_profile("gpt-4o"), default_profile("gpt-5-nano")
    assert count_request(messages, profile=gpt5) == count_request(messages, profile=gpt4o) - 1
    assert count_request(history, profile=gpt5) == count_request(history, profile=gpt4o) + 1


def test_it_joins_the_tools_to_the_system_text() -> None:
    # The blank line before the tools block is its own token after a letter, folded into
    # the text's last token after "." (crewai.jsonl line 214 vs line 138).
    tools = [{"type": "function", "function": {"name": "f", "description": "Do it."}}]
    profile = default_profile("gpt-4.1-mini")

    def header(system: str) -> int:
        messages: list[ChatMessage] = [{"role": "system", "content": system}]
        return count_request(messages, profile=profile, tools=tools) - count_request(
            messages, profile=profile
        )

    assert header("Your goal is: test goal2") == header("Your goal is: test goal.") + 1


def test_it_counts_earlier_structured_replies_after_the_priming() -> None:
    # tests/fixtures/real/ruby_llm.jsonl line 35: gpt-4.1-nano reported 61 prompt tokens.
    schema = {
        "type": "object",
        "properties": {"country": {"type": "string"}},
        "required": ["country"],
        "additionalProperties": False,
    }
    spec = {"name": "response", "schema": schema, "strict": True}
    response_format = {"type": "json_schema", "json_schema": spec}
    messages: list[ChatMessage] = [
        {"role": "user", "content": "What country is Paris in?"},
        {"role": "assistant", "content": '{"country":"France"}'},
        {"role": "user", "content": "What about Berlin?"},
    ]
    profile = default_profile("gpt-4.1-nano")
    assert count_request(messages, profile=profile, response_format=response_format) == 61
    # a suffix: the prompt without it is the same tokens as ever
    plain = render_tokens(messages, profile=profile, response_format=response_format)
    first = render_tokens(messages[:1], profile=profile, response_format=response_format)
    assert plain[: len(first)] == first


def test_it_counts_a_tool_choice_of_none_outside_the_gpt5_family() -> None:
    # tests/fixtures/real/openai-dotnet.jsonl line 110: gpt-4o-mini reported 59 with "none".
    parameters = {"type": "object", "properties": {"word": {"type": "string"}}}
    function = {
        "description": "gets an arbitrary number assigned to a given word",
        "name": "get_number_for_word",
        "parameters": parameters,
    }
    tools = [{"type": "function", "function": function}]
    messages: list[ChatMessage] = [
        {"role": "user", "content": "What's the number for the word 'banana'?"}
    ]
    mini = default_profile("gpt-4o-mini")
    assert count_request(messages, profile=mini, tools=tools, tool_choice="none") == 59
    assert count_request(messages, profile=mini, tools=tools) == 58
    gpt5 = default_profile("gpt-5-nano")
    assert count_request(messages, profile=gpt5, tools=tools, tool_choice="none") == (
        count_request(messages, profile=gpt5, tools=tools)
    )


def _fantasy_weather_tools(**extra: Any) -> list[dict[str, Any]]:
    """The one tool of tests/fixtures/real/fantasy.jsonl's o4-mini requests (`extra`: the
    fields a recording adds to the function, as it sent them)."""
    parameters = {
        "properties": {"location": {"description": "the city", "type": "string"}},
        "required": ["location"],
        "type": "object",
    }
    function = {
        "name": "weather",
        **extra,
        "description": "Get weather information for a location",
        "parameters": parameters,
    }
    return [{"type": "function", "function": function}]


def test_it_saves_nothing_for_o4_mini_tools_after_a_system_message() -> None:
    # tests/fixtures/real/fantasy.jsonl line 9 (and 11, 51, 53): o4-mini reported 64 prompt
    # tokens; the 4 tokens that other models save when the tools join the system text
    # (gpt-4o, the gpt-5 family) would make it 60.
    tools = _fantasy_weather_tools(strict=False)
    messages: list[ChatMessage] = [
        {"content": "You are a helpful assistant", "role": "system"},
        {"content": "What's the weather in Florence,Italy?", "role": "user"},
    ]
    o4 = default_profile("o4-mini-2025-04-16")
    assert o4.tools_system_saving == 0
    assert count_request(messages, profile=o4, tools=tools, tool_choice="auto") == 64


def test_it_counts_o4_mini_tool_rounds_like_the_gpt5_family() -> None:
    # tests/fixtures/real/fantasy.jsonl line 52: o4-mini reported 95 prompt tokens for the
    # request of line 51 (64) plus one call of `weather` and its result.
    tools = _fantasy_weather_tools()
    call = {
        "id": "call_gcwOMtZgMBLlxt6yBBUtJAXo",
        "function": {"arguments": '{"location":"Florence, Italy"}', "name": "weather"},
        "type": "function",
    }
    messages: list[ChatMessage] = [
        {"content": "You are a helpful assistant", "role": "system"},
        {"content": "What's the weather in Florence,Italy?", "role": "user"},
        {"tool_calls": [call], "role": "assistant"},
        {"content": "40 C", "tool_call_id": "call_gcwOMtZgMBLlxt6yBBUtJAXo", "role": "tool"},
    ]
    o4 = default_profile("o4-mini-2025-04-16")
    assert o4.tool_round_tokens == default_profile("gpt-5").tool_round_tokens == 9
    assert count_request(messages, profile=o4, tools=tools, tool_choice="auto") == 95


def test_it_counts_an_undescribed_function_one_token_fewer_on_the_gpt5_family() -> None:
    # tests/fixtures/real/pydantic-ai.jsonl line 130: gpt-5-mini reported 126 prompt tokens
    # for one parameterless function with `"description": ""` (127 by its text); gpt-4o
    # counts such a function by its text (pydantic-ai.jsonl line 9).
    parameters = {"additionalProperties": False, "properties": {}, "type": "object"}
    bare = {"description": "", "name": "get_mixed_content", "parameters": parameters}
    tools = [{"function": bare, "type": "function"}]
    messages: list[ChatMessage] = [
        {
            "content": "Call the get_mixed_content tool and describe what you received.",
            "role": "user",
        }
    ]
    mini = default_profile("gpt-5-mini-2025-08-07")
    assert count_request(messages, profile=mini, tools=tools, tool_choice="auto") == 126
    by_text = replace(mini, undescribed_function_tokens=0)
    assert count_request(messages, profile=by_text, tools=tools) == 127
    assert default_profile("gpt-4o").undescribed_function_tokens == 0
    # a custom tool is no function: nothing taken off
    custom = [{"type": "custom", "custom": {"name": "math_exp"}}]
    assert count_request(messages, profile=mini, tools=custom) == count_request(
        messages, profile=by_text, tools=custom
    )


def test_it_counts_text_beside_tool_calls_as_a_message_of_its_own() -> None:
    # tests/fixtures/real/dd-trace-py.jsonl line 142: gpt-4o reported 151 prompt tokens for an
    # assistant message with text and a call (4 short when counted as one message).
    line = (REAL / "dd-trace-py.jsonl").read_text().splitlines()[141]
    request = json.loads(line)["request"]
    messages: list[ChatMessage] = request["messages"]
    assert messages[4]["content"] and messages[4]["tool_calls"]
    gpt4o = default_profile("gpt-4o-2024-08-06")
    assert count_request(messages, profile=gpt4o) == 151
    assert len(render_tokens(messages, profile=gpt4o)) == 151
    without_text = [*messages[:4], {**messages[4], "content": None}, *messages[5:]]
    text = len(get_encoding(gpt4o.encoding).encode_ordinary(messages[4]["content"]))
    assert count_request(without_text, profile=gpt4o) == 151 - text - 4


def _responses_gap(request: dict[str, Any], model: str) -> int:
    """What a request costs read as a Responses call less the same read as a chat call."""
    profile = default_profile(model)
    chat = count_request(profile=profile, **request)
    return count_request(profile=profile, responses_api=True, **request) - chat


WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_it_counts_responses_tools_6_fewer_and_2_fewer_beside_instructions() -> None:
    user: list[ChatMessage] = [{"role": "user", "content": "Weather in Vienna?"}]
    instructed: list[ChatMessage] = [{"role": "developer", "content": "Be brief."}, *user]
    assert _responses_gap({"messages": user, "tools": WEATHER}, "gpt-4o-mini") == -6
    assert _responses_gap({"messages": instructed, "tools": WEATHER}, "gpt-4.1") == -2
    # the gpt-5 family: no tools preamble, whatever precedes the tools
    gpt5 = default_profile("gpt-5-mini")
    assert gpt5.tools_preamble == 82
    assert _responses_gap({"messages": user, "tools": WEATHER}, "gpt-5-mini") == -82
    assert _responses_gap({"messages": user}, "gpt-5-mini") == 0


def test_it_counts_a_responses_json_schema_format_its_name_and_5_fewer() -> None:
    schema = {"type": "object", "properties": {"value": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "NumberAnswer", "schema": schema}}
    user: list[ChatMessage] = [{"role": "user", "content": "12 + 12?"}]
    name = len(get_encoding("o200k_base").encode("NumberAnswer"))
    assert _responses_gap({"messages": user, "response_format": fmt}, "gpt-4o-mini") == -(name + 5)


def test_it_counts_each_responses_tool_result_one_more() -> None:
    def round_(n: int) -> list[ChatMessage]:
        function = {"name": "get_weather", "arguments": '{"city":"Vienna"}'}
        call = {"id": f"c{n}", "type": "function", "function": function}
        return [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{n}", "content": "Sunny"},
        ]

    user: list[ChatMessage] = [{"role": "user", "content": "Weather in Vienna?"}]
    for rounds in (1, 3):
        messages = user + [m for n in range(rounds) for m in round_(n)]
        request = {"messages": messages, "tools": WEATHER}
        assert _responses_gap(request, "gpt-4o") == rounds - 6
        profile = default_profile("gpt-4o")
        rendered = render_tokens(messages, profile=profile, tools=WEATHER, responses_api=True)
        assert len(rendered) == count_request(
            messages, profile=profile, tools=WEATHER, responses_api=True
        )
