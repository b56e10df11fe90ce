"""The endpoint's request checks: each refusal, its message and its param, whether the body
is read whole or after a known history (where only the new messages are checked)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from calls import protocol
from calls.request_body import BodyReader
from calls.simulated import SimulatedCall

SYSTEM = {"role": "system", "content": "S"}
USER = {"role": "user", "content": "u"}

# (the body, the message refused with, its param)
REFUSED: list[tuple[Any, str, str | None]] = [
    ([], "The request body must be a JSON object.", None),
    ("text", "The request body must be a JSON object.", None),
    ({"messages": [USER]}, "you must provide a model parameter", "model"),
    ({"model": "", "messages": [USER]}, "you must provide a model parameter", "model"),
    ({"model": 4, "messages": [USER]}, "you must provide a model parameter", "model"),
    ({"model": ["m"], "messages": [USER]}, "you must provide a model parameter", "model"),
    ({"model": "m"}, "'messages' must be a non-empty array.", "messages"),
    ({"model": "m", "messages": []}, "'messages' must be a non-empty array.", "messages"),
    ({"model": "m", "messages": {"0": USER}}, "'messages' must be a non-empty array.", "messages"),
    ({"model": "m", "messages": "hi"}, "'messages' must be a non-empty array.", "messages"),
]
NO_ROLE = [{}, {"role": None}, {"role": 1}, {"role": ["user"]}, "user", None, 3, [USER]]
LIMIT_REFUSED = [0, -1, True, False, 1.0, 120.5, "120", [1], {"n": 1}]
LIMIT_TAKEN = [1, 120, 10**30, None]


# (as OpenAI's errors word them, e.g. "... expected an integer, but got a decimal number
# instead.": written out here, not read from the module)
JSON_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a decimal number",
    type(None): "null",
}
CHECKED_FIELDS = (
    "max_completion_tokens",
    "max_tokens",
    "service_tier",
    "tools",
    "response_format",
    "prompt_cache_key",
)


def _moved_on(text: str) -> str:
    return re.sub(r"messages\[(\d+)\]", lambda m: f"messages[{int(m.group(1)) + 2}]", text)


def _refusal(body: Any, *, reader: BodyReader | None = None) -> tuple[str, str | None]:
    with pytest.raises(protocol.RequestInvalid) as refused:
        protocol.request_parse(json.dumps(body).encode(), reader=reader)
    return refused.value.message, refused.value.param


def _cases() -> list[tuple[Any, str, str | None]]:
    cases = list(REFUSED)
    for bad in NO_ROLE:
        # The first message with no role is named, by its place in the whole list.
        for messages, number in (
            ([bad], 0),
            ([SYSTEM, USER, bad], 2),
            ([SYSTEM, bad, bad], 1),
            ([SYSTEM, bad, USER, bad], 1),
        ):
            message = f"Invalid value for 'messages[{number}]': a message needs a role."
            cases.append(({"model": "m", "messages": messages}, message, f"messages[{number}]"))
    for name in ("max_completion_tokens", "max_tokens"):
        for value in LIMIT_REFUSED:
            message = f"Invalid '{name}': expected an integer of at least 1."
            cases.append(({"model": "m", "messages": [USER], name: value}, message, name))
    for name, expected, values in (
        ("tools", "an array", [{"type": "function"}, "f", 1, True]),
        ("response_format", "an object", ["json_object", [{"type": "json_object"}], 2.5]),
        ("prompt_cache_key", "a string", [42, True, ["k"], {"k": 1}]),
    ):
        for value in values:
            got = JSON_TYPE_NAMES[type(value)]
            message = f"Invalid type for '{name}': expected {expected}, but got {got} instead."
            cases.append(({"model": "m", "messages": [USER], name: value}, message, name))
    for item in ("f", None):
        tools = [{"type": "function", "function": {"name": "f"}}, item]
        got = JSON_TYPE_NAMES[type(item)]
        message = f"Invalid type for 'tools[1]': expected an object, but got {got} instead."
        cases.append(({"model": "m", "messages": [USER], "tools": tools}, message, "tools[1]"))
    for calls in (1, "call", {"id": "c"}):
        got = JSON_TYPE_NAMES[type(calls)]
        message = (
            f"Invalid type for 'messages[1].tool_calls': expected an array, but got {got} instead."
        )
        sent = [SYSTEM, {"role": "assistant", "content": None, "tool_calls": calls}]
        cases.append(({"model": "m", "messages": sent}, message, "messages[1].tool_calls"))
    # The engine's marker of a message it stands in for: never from a client.
    sent = [SYSTEM, {"role": "user", "content": "u", "costlab_synthetic_tokens": 10**38}]
    message = "Unknown parameter: 'messages[1].costlab_synthetic_tokens'."
    cases.append(
        ({"model": "m", "messages": sent}, message, "messages[1].costlab_synthetic_tokens")
    )
    for tier in ("fast", "", 1, 0.5, False, ["default"], "Default"):
        body = {"model": "m", "messages": [USER], "service_tier": tier}
        cases.append((body, f"Invalid 'service_tier': {tier!r}.", "service_tier"))
    return cases


@pytest.mark.parametrize(("body", "message", "param"), _cases())
def test_each_refusal_says_what_is_wrong_whole_or_after_a_known_history(
    body: Any, message: str, param: str | None
) -> None:
    assert _refusal(body) == (message, param)
    assert _refusal(body, reader=BodyReader()) == (message, param)
    if isinstance(body, dict) and isinstance(body.get("messages"), list) and body["messages"]:
        # Read on after a kept history: the messages it repeats were checked, the new ones
        # are, and a message is still named by its place in the whole list.
        reader = BodyReader()
        known = {**body, "model": "m", "messages": [SYSTEM, USER]}
        for name in CHECKED_FIELDS:
            known.pop(name, None)
        protocol.request_parse(json.dumps(known, separators=(",", ":")).encode(), reader=reader)
        grown = {**body, "messages": [SYSTEM, USER, *body["messages"]]}
        raw = json.dumps(grown, separators=(",", ":")).encode()
        # (a message named by its place: two places further on)
        message = _moved_on(message)
        param = _moved_on(param) if param is not None else None
        with pytest.raises(protocol.RequestInvalid) as refused:
            protocol.request_parse(raw, reader=reader)
        assert (refused.value.message, refused.value.param) == (message, param)


@pytest.mark.parametrize("value", LIMIT_TAKEN)
@pytest.mark.parametrize("tier", [None, "auto", *protocol.SERVICE_TIERS])
def test_a_request_within_the_checks_is_taken(value: Any, tier: str | None) -> None:
    body = {"model": "m", "messages": [SYSTEM, {"role": "x"}], "max_tokens": value}
    body["max_completion_tokens"] = value
    body["service_tier"] = tier
    raw = json.dumps(body).encode()
    assert protocol.request_parse(raw) == body
    assert protocol.request_parse(raw, reader=BodyReader()) == body


def test_a_completion_id_is_24_hex_digits_and_new_each_time() -> None:
    call = SimulatedCall(
        prompt_tokens=1,
        cached_tokens=0,
        completion_tokens=1,
        write_tokens=None,
        reply="x",
        finish_reason="stop",
        reason=None,
    )
    ids = {
        protocol.Completion.new(model="m", tier="default", call=call, now=0.0).id
        for _ in range(100)
    }
    assert len(ids) == 100
    assert all(len(i) == 33 and i.startswith("chatcmpl-") and int(i[9:], 16) >= 0 for i in ids)
