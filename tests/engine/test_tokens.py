"""Token counting against the API-verified cookbook figures, offline."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import tiktoken.load

from conversations.engine import tokens
from conversations.engine.render import render_tokens
from conversations.engine.tokens import (
    ModelProfile,
    count_request,
    default_profile,
    encode_message,
    get_encoding,
)


def _cookbook(oracles: Path) -> dict[str, Any]:
    cookbook: dict[str, Any] = json.loads((oracles / "cookbook_token_counts.json").read_text())
    return cookbook


def _is_alias_mismatch(case: dict[str, Any]) -> bool:
    return "MISMATCH" in case.get("note", "")


def test_it_reproduces_every_api_count_of_the_cookbook(oracles: Path) -> None:
    cases = _cookbook(oracles)["cases"]
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
    [case] = [c for c in _cookbook(oracles)["cases"] if _is_alias_mismatch(c)]
    messages = case["messages"]
    assert count_request(messages, profile=default_profile("gpt-3.5-turbo")) == 129
    assert count_request(messages, profile=default_profile("gpt-3.5-turbo-0301")) == 127
    assert case["counted_by_api"] == 127


def test_it_encodes_the_cookbook_example_ids(oracles: Path) -> None:
    printed = _cookbook(oracles)["other_printed_outputs"]
    for name in ("o200k_base", "cl100k_base"):
        expected = printed[f"{name} encode('tiktoken is great!')"]
        assert get_encoding(name).encode("tiktoken is great!") == expected
        for text, ids in printed["token_ids"].items():
            if name in ids:
                assert get_encoding(name).encode(text) == ids[name]


def test_it_loads_vocabularies_without_the_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network was touched")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name in ("cl100k_base", "o200k_base"):
        fresh = get_encoding.__wrapped__(name)  # bypass the cache: really load again
        assert fresh.encode("tiktoken is great!")[-1] == 0
    assert list(tmp_path.iterdir()) == []


def test_it_refuses_a_vocabulary_whose_hash_differs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    forged = tmp_path / "cl100k_base.tiktoken.gz"
    forged.write_bytes(gzip.compress(b"IQ== 0\n"))
    monkeypatch.setattr(tokens, "_vocabulary_path", lambda name: forged)
    with pytest.raises(tokens.VocabularyError, match="sha256"):
        get_encoding.__wrapped__("cl100k_base")


def test_it_picks_profiles_by_model_family() -> None:
    assert default_profile("gpt-4o-2024-08-06").encoding == "o200k_base"
    assert default_profile("gpt-4.1-nano").context_window == 1_047_576
    assert default_profile("o3-mini").encoding == "o200k_base"
    assert default_profile("gpt-5-mini").max_output_tokens == 128_000
    gpt4 = default_profile("gpt-4-0613")
    assert (gpt4.encoding, gpt4.func_init, gpt4.context_window) == ("cl100k_base", 10, 8_192)
    assert default_profile("gpt-4o").func_init == 7
    legacy = default_profile("gpt-3.5-turbo-0301")
    assert (legacy.tokens_per_message, legacy.tokens_per_name) == (4, -1)
    assert default_profile("openai/gpt-3.5-turbo").encoding == "cl100k_base"
    assert default_profile("some-local-model") == ModelProfile()
    assert default_profile(None).encoding == "o200k_base"


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
    assert len(encoded.tokens) == 3 + 1 + expected_body  # overhead + role + body
    tool = encode_message({"role": "tool", "tool_call_id": "c1", "content": "sunny"}, profile)
    sunny = len(enc.encode("sunny"))
    assert len(tool.tokens) == 3 + len(enc.encode("tool")) + len(enc.encode("c1")) + sunny
    assert tool.body == sunny  # the tool call id is not completion text
    refusal = encode_message({"role": "assistant", "content": None, "refusal": "No."}, profile)
    assert refusal.body == len(enc.encode("No."))


def test_it_counts_text_parts_like_plain_content() -> None:
    profile = default_profile("gpt-4o")
    parts = [{"type": "text", "text": "first part"}, {"type": "text", "text": " second"}]
    as_parts = encode_message({"role": "user", "content": parts}, profile)
    enc = get_encoding("o200k_base")
    assert as_parts.body == len(enc.encode("first part")) + len(enc.encode(" second"))


def test_it_counts_a_json_schema_response_format() -> None:
    profile = default_profile("gpt-4o")
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    messages = [{"role": "user", "content": "hi"}]
    plain = count_request(messages, profile=profile)
    with_schema = count_request(messages, profile=profile, response_format=response_format)
    compact = json.dumps(schema, separators=(",", ":"))
    assert with_schema - plain == len(get_encoding("o200k_base").encode(compact))
    assert (
        count_request(messages, profile=profile, response_format={"type": "json_object"}) == plain
    )


def test_it_renders_exactly_as_many_tokens_as_it_counts(oracles: Path) -> None:
    for case in _cookbook(oracles)["cases"]:
        profile = default_profile(case["model"])
        rendered = render_tokens(case["messages"], profile=profile, tools=case.get("tools"))
        assert len(rendered) == count_request(
            case["messages"], profile=profile, tools=case.get("tools")
        )


def test_it_keeps_overheads_configurable() -> None:
    # Seed 001: gpt-4.1-nano reported 18 prompt tokens where the cookbook rule gives 26.
    messages = [
        {"role": "system", "content": "Eres un asistente útil."},
        {"role": "user", "content": "¿Cuál es la capital de Francia?"},
    ]
    cookbook = count_request(messages, profile=default_profile("gpt-4.1-nano"))
    assert cookbook == 26
    lean = ModelProfile(tokens_per_message=0, reply_priming=0)
    assert count_request(messages, profile=lean) == cookbook - 2 * 3 - 3


PACKED_TEXTS = [
    "Hello, world!",
    "a user typing <|endoftext|> and <|im_start|> means text, not a special token",
    "naïve café — 東京 🚀 \u200b tabs\tand\nnewlines",
    " " * 300 + "x" * 5000,
    "0123456789" * 50,
]


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
def test_it_packs_exactly_the_tokens_encode_ordinary_gives(encoding: str) -> None:
    enc = get_encoding(encoding)
    for text in PACKED_TEXTS:
        expected = enc.encode_ordinary(text)
        packed = tokens._packer(encoding)(text)
        assert tokens.unpack(packed) == expected
        assert len(packed) == 4 * len(expected)
    # negative placeholders and real ids round-trip through the packed form
    assert tokens.unpack(tokens.pack([tokens.START, 199_999, -(10**6) - 2**30 + 1])) == [
        tokens.START,
        199_999,
        -(10**6) - 2**30 + 1,
    ]


def test_it_encodes_a_shared_system_prompt_once_and_counts_it_the_same() -> None:
    profile = default_profile("gpt-4o")
    prompt = "You are a careful assistant. " * 200
    tokens._shared_text_packed.cache_clear()
    first = encode_message({"role": "system", "content": prompt}, profile)
    second = encode_message({"role": "system", "content": prompt}, profile)
    assert tokens._shared_text_packed.cache_info().hits == 1
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
