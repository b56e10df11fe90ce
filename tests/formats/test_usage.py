"""Reported usage validated at the door: a count is a non-negative integer below a sane
bound, or the file is refused with its line and field; disagreements are warnings."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conversations.engine.pricing import buckets_from_usage
from conversations.engine.types import Transcript
from conversations.formats import ParseError
from conversations.formats.usage import MAX_TOKENS

Parse = Callable[..., list[Transcript]]
OK_LINE = {
    "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": "ok"}]},
    "response": {
        "id": "chatcmpl-ok",
        "model": "gpt-4o",
        "choices": [{"message": {"role": "assistant", "content": "fine"}}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10},
    },
}


def _log(tmp_path: Path, usage: dict[str, Any]) -> Path:
    line = json.loads(json.dumps(OK_LINE))
    line["response"]["id"] = "chatcmpl-second"
    line["request"]["messages"][0]["content"] = "second"
    line["response"]["usage"] = usage
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(OK_LINE) + "\n" + json.dumps(line) + "\n")
    return path


@pytest.mark.parametrize(
    ("usage", "field", "message"),
    [
        ({"prompt_tokens": -5, "completion_tokens": 1}, "prompt_tokens", "cannot be negative"),
        ({"prompt_tokens": 1e30, "completion_tokens": 1}, "prompt_tokens", "1e+30"),
        ({"prompt_tokens": 10.5, "completion_tokens": 1}, "prompt_tokens", "10.5"),
        ({"prompt_tokens": 10, "completion_tokens": "ten"}, "completion_tokens", "'ten'"),
        ({"prompt_tokens": 10, "completion_tokens": True}, "completion_tokens", "boolean"),
        ({"prompt_tokens": MAX_TOKENS, "completion_tokens": 1}, "prompt_tokens", "not plausible"),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": -1},
            },
            "prompt_tokens_details.cached_tokens",
            "cannot be negative",
        ),
        (
            {"prompt_tokens": 10, "completion_tokens": 1, "completion_tokens_details": []},
            "completion_tokens_details",
            "expected an object",
        ),
        ({"total_tokens": 3}, None, "no prompt_tokens nor completion_tokens"),
    ],
)
def test_it_refuses_a_count_that_is_not_a_token_count(
    tmp_path: Path, parse: Parse, usage: dict[str, Any], field: str | None, message: str
) -> None:
    with pytest.raises(ParseError) as caught:
        parse(_log(tmp_path, usage), format="api_log")
    assert caught.value.file == "log.jsonl"
    assert caught.value.line == 2
    assert caught.value.field == "response.usage" + (f".{field}" if field else "")
    assert message in caught.value.message


def test_it_refuses_nan_and_infinity(tmp_path: Path, parse: Parse) -> None:
    for literal, shown in (("NaN", "nan"), ("Infinity", "inf")):
        path = tmp_path / "log.jsonl"
        line = json.dumps(OK_LINE).replace('"prompt_tokens": 8', f'"prompt_tokens": {literal}')
        path.write_text(line + "\n")
        with pytest.raises(ParseError) as caught:
            parse(path, format="api_log")
        assert caught.value.field == "response.usage.prompt_tokens"
        assert caught.value.line == 1
        assert f"got {shown}" in caught.value.message


def test_it_reads_a_string_holding_an_integer_with_a_warning(tmp_path: Path, parse: Parse) -> None:
    _ok, second = parse(_log(tmp_path, {"prompt_tokens": "100", "completion_tokens": 3}))
    assert second.calls is not None and second.calls[0].usage is not None
    assert second.calls[0].usage.prompt_tokens == 100  # never a silent 0
    assert any(
        "line 2" in w and "response.usage.prompt_tokens" in w and "'100'" in w
        for w in second.warnings
    )


def test_it_stores_a_disagreeing_total_as_reported_and_warns(tmp_path: Path, parse: Parse) -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 150}
    _ok, second = parse(_log(tmp_path, usage))
    assert second.calls is not None and second.calls[0].usage is not None
    reported = second.calls[0].usage
    assert reported.total_tokens == 150
    assert any("total_tokens: 150 reported" in w and "= 120" in w for w in second.warnings)
    # The buckets come from the parts: 120 tokens priced, none twice.
    assert buckets_from_usage(reported).total_tokens == 120


def test_it_keeps_cached_tokens_above_the_prompt_as_reported(tmp_path: Path, parse: Parse) -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 300},
    }
    _ok, second = parse(_log(tmp_path, usage))
    assert second.calls is not None and second.calls[0].usage is not None
    assert second.calls[0].usage.cached_tokens == 300
    assert any("cached_tokens: 300 cached of 100" in w for w in second.warnings)
    buckets = buckets_from_usage(second.calls[0].usage)
    assert (buckets.input_cached, buckets.input_uncached, buckets.total_tokens) == (100, 0, 120)


def test_it_accepts_null_details_as_absent(tmp_path: Path, parse: Parse) -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 1, "prompt_tokens_details": None}
    _ok, second = parse(_log(tmp_path, usage))
    assert second.calls is not None and second.calls[0].usage is not None
    assert (second.calls[0].usage.cached_tokens, second.warnings) == (0, [])


def test_it_names_the_output_line_of_a_batch_with_a_bad_count(tmp_path: Path, parse: Parse) -> None:
    inputs = tmp_path / "in.jsonl"
    outputs = tmp_path / "out.jsonl"
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    inputs.write_text(
        json.dumps(
            {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
        + "\n"
    )
    reply = {
        "choices": [{"message": {"role": "assistant", "content": "yo"}}],
        "usage": {"prompt_tokens": -1, "completion_tokens": 1},
    }
    outputs.write_text(
        json.dumps({"custom_id": "a", "response": {"status_code": 200, "body": reply}}) + "\n"
    )
    with pytest.raises(ParseError) as caught:
        parse(inputs, outputs)
    assert (caught.value.file, caught.value.line) == ("out.jsonl", 1)
    assert caught.value.field == "response.body.usage.prompt_tokens"
