"""Messages into tokens: the cookbook rule for every field, packed without per-token work."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.engine import messages
from conversations.engine.messages import encode_message
from conversations.engine.profiles import default_profile
from conversations.engine.sequences import unpack
from conversations.engine.types import ChatMessage
from conversations.engine.vocabulary import ENCODINGS, get_encoding


def test_it_counts_names_tool_calls_and_refusals() -> None:
    profile = default_profile("gpt-4o")
    enc = get_encoding("o200k_base")
    plain = encode_message({"role": "user", "content": "hello there"}, profile)
    named = encode_message({"role": "user", "content": "hello there", "name": "ann"}, profile)
    assert len(named.tokens) == len(plain.tokens) + len(enc.encode("ann")) + 1
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    encoded = encode_message(call, profile)
    expected_body = len(enc.encode("get_weather")) + len(enc.encode('{"city":"Paris"}'))
    assert encoded.body == expected_body
    # overhead + role + body, then the result's author (the function) and the round's framing
    result = len(enc.encode("get_weather")) + profile.tool_round_tokens
    assert len(encoded.tokens) == 3 + 1 + expected_body + result
    # the gpt-5 family: harmony's channel on the call (2) and 4 more per round
    gpt5 = encode_message(call, default_profile("gpt-5-mini"))
    assert len(gpt5.tokens) == len(encoded.tokens) + 2 + 4
    tool = encode_message({"role": "tool", "tool_call_id": "c1", "content": "sunny"}, profile)
    sunny = len(enc.encode("sunny"))
    assert len(tool.tokens) == 3 + len(enc.encode("tool")) + sunny  # the id is not shown
    assert tool.body == sunny
    refusal = encode_message({"role": "assistant", "content": None, "refusal": "No."}, profile)
    assert refusal.body == len(enc.encode("No."))


def test_it_counts_text_parts_like_plain_content() -> None:
    profile = default_profile("gpt-4o")
    parts = [{"type": "text", "text": "first part"}, {"type": "text", "text": " second"}]
    as_parts = encode_message({"role": "user", "content": parts}, profile)
    enc = get_encoding("o200k_base")
    assert as_parts.body == len(enc.encode("first part")) + len(enc.encode(" second"))


PACKED_TEXTS = [
    "Hello, world!",
    "a user typing <|endoftext|> and <|im_start|> means text, not a special token",
    "naïve café — 東京 🚀 \u200b tabs\tand\nnewlines",
    " " * 300 + "x" * 5000,
    "0123456789" * 50,
]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_it_packs_exactly_the_tokens_encode_ordinary_gives(encoding: str) -> None:
    enc = get_encoding(encoding)
    for text in PACKED_TEXTS:
        expected = enc.encode_ordinary(text)
        packed = messages._packer(encoding)(text)
        assert unpack(packed) == expected
        assert len(packed) == 4 * len(expected)


def test_it_encodes_a_shared_system_prompt_once_and_counts_it_the_same() -> None:
    profile = default_profile("gpt-4o")
    prompt = "You are a careful assistant. " * 200
    messages._shared_text_packed.cache_clear()
    first = encode_message({"role": "system", "content": prompt}, profile)
    second = encode_message({"role": "system", "content": prompt}, profile)
    assert messages._shared_text_packed.cache_info().hits == 1
    as_user = encode_message({"role": "user", "content": prompt}, profile)
    assert first.packed == second.packed
    assert first.body == as_user.body == len(get_encoding("o200k_base").encode_ordinary(prompt))
    assert first.length == as_user.length == first.body + 4  # START, role, MESSAGE, END


def test_it_counts_text_with_a_lone_surrogate_like_encode_ordinary() -> None:
    # JSON may carry half an emoji ("\ud83d"); tiktoken repairs it before encoding
    profile = default_profile("gpt-4o")
    text = "cut \ud83d emoji"
    encoded = encode_message({"role": "user", "content": text}, profile)
    assert encoded.body == len(get_encoding("o200k_base").encode_ordinary(text))
    assert encoded.length == encoded.body + 4


def _call(city: str) -> dict[str, Any]:
    arguments = f'{{"city": "{city}"}}'
    return {"id": city, "type": "function", "function": {"name": "w", "arguments": arguments}}


def test_it_counts_parallel_calls_as_one_multi_tool_use_call() -> None:
    profile = default_profile("gpt-4o")
    enc = get_encoding("o200k_base")
    both = encode_message(
        {"role": "assistant", "content": None, "tool_calls": [_call("Paris"), _call("Rome")]},
        profile,
    )
    wrapper = (
        '{"tool_uses":[{"recipient_name":"functions.w","parameters":{"city":"Paris"}},'
        '{"recipient_name":"functions.w","parameters":{"city":"Rome"}}]}'
    )
    assert both.body == len(enc.encode(wrapper))
    # framing and role only: the call's own cost is counted with its results
    assert len(both.tokens) == 3 + 1 + both.body
    # the gpt-5 family keeps the calls apart: two rounds
    gpt5 = default_profile("gpt-5-nano")
    apart = encode_message(
        {"role": "assistant", "content": None, "tool_calls": [_call("Paris"), _call("Rome")]},
        gpt5,
    )
    one = encode_message(
        {"role": "assistant", "content": None, "tool_calls": [_call("Paris")]}, gpt5
    )
    assert apart.body > one.body


def test_the_results_of_a_parallel_call_are_one_json_array() -> None:
    def result(city: str, content: str) -> ChatMessage:
        return {"role": "tool", "tool_call_id": city, "content": content}

    transcript: list[ChatMessage] = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [_call(c) for c in "ABC"]},
        result("A", '15°C, "dry"\n'),
        result("B", '{"temp":15,  "sky": "clear"}'),
        result("C", "[not json"),
        {"role": "assistant", "content": "Mild.", "tool_calls": [_call("D")]},
        result("D", "15°C"),
    ]
    places = messages.parallel_results(transcript)
    assert sorted(places) == [2, 3, 4]
    texts = [messages.parallel_result_text(transcript[i], places[i]) for i in (2, 3, 4)]
    # Python's json.dumps: non-ASCII escaped, quotes escaped, a JSON object as its value
    array = '["15\\u00b0C, \\"dry\\"\\n", {"temp": 15, "sky": "clear"}, "[not json"]'
    assert "".join(texts) == array
    profile = default_profile("gpt-4o-mini")
    enc = get_encoding("o200k_base")
    tokens = messages.MessageTokens(transcript, profile)
    # cut after each comma, the shares tokenize as the whole array; the first carries the
    # framing of the call and its results
    shares = sum(tokens.length(i) for i in (2, 3, 4))
    assert shares == len(enc.encode(array)) + messages.PARALLEL_TOKENS
    assert tokens.length(3) == len(enc.encode(texts[1]))
    # after a single call a result counts as sent
    assert tokens.length(6) == encode_message(transcript[6], profile).length
    # the gpt-5 family reads one array too, non-ASCII as is, with 4 framing tokens more (as
    # its single rounds cost 4 more)
    gpt5 = default_profile("gpt-5-nano")
    assert messages.parallel_framing(gpt5) == messages.PARALLEL_TOKENS + 4
    raw = [
        messages.parallel_result_text(transcript[i], places[i], escaped=False) for i in (2, 3, 4)
    ]
    assert "".join(raw) == array.replace("\\u00b0", "°")
    joined = messages.MessageTokens(transcript, gpt5)
    shares = sum(joined.length(i) for i in (2, 3, 4))
    assert shares == len(enc.encode("".join(raw))) + messages.PARALLEL_TOKENS + 4
    assert joined.length(2) != encode_message(transcript[2], gpt5).length
    # and the calls are one call of multi_tool_use.parallel, as on the other models
    calls = [call["function"] for call in transcript[1]["tool_calls"]]
    parallel_call = messages._parallel_call_text(calls)
    assert encode_message(transcript[1], gpt5).body == len(enc.encode(parallel_call))


def test_a_legacy_function_round_costs_what_a_tool_round_costs() -> None:
    profile = default_profile("gpt-4o-mini")
    arguments = '{"month": "February"}'
    tool_round: list[ChatMessage] = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "color_for", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "chartreuse"},
    ]
    legacy_round: list[ChatMessage] = [
        {"role": "assistant", "function_call": {"name": "color_for", "arguments": arguments}},
        {"role": "function", "name": "color_for", "content": "chartreuse"},
    ]

    def length(round_: list[ChatMessage]) -> int:
        return sum(encode_message(message, profile).length for message in round_)

    assert length(legacy_round) == length(tool_round)


def test_it_tokenizes_adjacent_text_parts_as_one_text() -> None:
    profile = default_profile("gpt-4.1-nano")
    parts = [
        {"type": "text", "text": "What's in this file?"},
        {"type": "text", "text": "<file name='ruby.txt'>Ruby is the best.</file>"},
    ]
    joined = "What's in this file?<file name='ruby.txt'>Ruby is the best.</file>"
    encoded = encode_message({"role": "user", "content": parts}, profile)
    assert encoded.body == len(get_encoding("o200k_base").encode(joined))


def test_it_counts_only_the_text_on_search_models() -> None:
    profile = default_profile("gpt-4o-search-preview-2025-03-11")
    enc = get_encoding("o200k_base")
    message = {"role": "user", "content": "What was a positive news story from today?"}
    # activeagent.jsonl line 83 reported 9 prompt tokens for this request
    assert len(encode_message(message, profile).tokens) == len(enc.encode(message["content"]))
    assert profile.reply_priming == 0


def test_it_writes_a_name_after_its_role_as_one_text() -> None:
    # `role:name`, tokenized together: the colon is the cookbook's token per name until it
    # merges ("user:user", tests/fixtures/real/openinference.jsonl lines 27-36, reported 15).
    profile = default_profile("gpt-4o")
    enc = get_encoding("o200k_base")
    plain = encode_message({"role": "user", "content": "What is the capital of France?"}, profile)
    same = encode_message(
        {"role": "user", "name": "user", "content": "What is the capital of France?"}, profile
    )
    assert len(enc.encode("user:user")) == 2
    assert len(same.tokens) == len(plain.tokens) + 1
    assert 3 + len(same.tokens) == 15  # with the reply priming: what OpenAI reported
    # the legacy gpt-3.5-turbo-0301 rule (the name replaces the role) is unchanged
    legacy = default_profile("gpt-3.5-turbo-0301")
    named = encode_message({"role": "user", "name": "user", "content": "hi"}, legacy)
    unnamed = encode_message({"role": "user", "content": "hi"}, legacy)
    assert len(named.tokens) == len(unnamed.tokens) + len(enc.encode("user")) - 1


def test_it_counts_a_rounds_function_name_as_it_tokenizes_after_functions() -> None:
    # "functions.calculator" is ".cal" + "culator": one token more than "calculator" alone,
    # where "functions.get_weather" keeps "get_weather"'s two (tests/fixtures/real/ruby_llm.jsonl
    # lines 6-43).
    profile = default_profile("gpt-4.1-nano")
    enc = get_encoding("o200k_base")

    def round_of(name: str) -> int:
        call = {"type": "function", "function": {"name": name, "arguments": "{}"}}
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        encoded = encode_message(message, profile)
        return len(encoded.tokens) - encoded.body

    assert len(enc.encode("calculator")) == 1
    assert round_of("calculator") == 3 + 1 + 2 + profile.tool_round_tokens
    assert round_of("get_weather") == 3 + 1 + 2 + profile.tool_round_tokens
