import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conversations.engine.types import Transcript
from conversations.formats import ParseError

Parse = Callable[..., list[Transcript]]


def test_it_joins_the_oracle_pair_by_custom_id(oracles: Path, parse: Parse) -> None:
    # Output first: which file is which is read from the content, not the order.
    transcripts = parse(
        oracles / "litellm_batch_output_sample.jsonl",
        oracles / "litellm_batch_input_furniture.jsonl",
    )
    assert [t.external_id for t in transcripts] == ["request-1", "request-2"]
    usages = []
    for transcript in transcripts:
        assert transcript.calls is not None
        [call] = transcript.calls
        assert call.batch
        assert (call.request, call.response) == ([0, 1], 2)
        assert call.usage is not None
        usages.append((call.usage.prompt_tokens, call.usage.completion_tokens))
        assert transcript.warnings == []
    assert usages == [(20, 10), (22, 10)]
    assert transcripts[1].messages[0]["content"] == "You are an unhelpful assistant."
    assert transcripts[0].messages[2]["content"] == "Hello! How can I assist you today?"
    assert transcripts[0].calls is not None
    assert transcripts[0].calls[0].model == "gpt-4o-mini-2024-07-18"
    assert transcripts[0].calls[0].max_output_tokens == 10


def test_it_imports_an_output_file_alone_with_a_warning(oracles: Path, parse: Parse) -> None:
    [transcript] = parse(oracles / "openai_apiref_batch_output_example.jsonl")
    assert transcript.calls is not None
    [call] = transcript.calls
    assert call.usage is not None
    assert (call.usage.prompt_tokens, call.usage.completion_tokens, call.usage.total_tokens) == (
        24,
        15,
        39,
    )
    assert (call.request, call.response, call.model) == ([], 0, "gpt-4o-mini")
    assert "no batch input file given: the request messages are unknown" in transcript.warnings[0]


def test_it_keeps_failed_and_missing_requests_as_pending(samples: Path, parse: Parse) -> None:
    ok, missing, failed, orphan = parse(
        samples / "batch_input.jsonl", samples / "batch_output.jsonl"
    )
    assert [t.external_id for t in (ok, missing, failed, orphan)] == ["q-1", "q-2", "q-3", "q-9"]
    assert ok.calls is not None and ok.calls[0].usage is not None
    assert ok.calls[0].usage.cached_tokens == 1024
    assert ok.warnings == []
    for pending in (missing, failed):
        assert pending.calls is not None
        assert (pending.calls[0].request, pending.calls[0].response) == ([0, 1], None)
    assert missing.warnings == [
        "batch_input.jsonl line 2: q-2: no line in the batch output: kept as a pending call"
    ]
    assert failed.warnings == [
        "batch_output.jsonl line 1: q-3: status 400 (Invalid 'max_completion_tokens'): kept as a pending call"
    ]
    assert "not in the batch input file" in orphan.warnings[0]


def test_it_keeps_input_alone_as_pending_calls(samples: Path, parse: Parse) -> None:
    transcripts = parse(samples / "batch_input.jsonl")
    assert len(transcripts) == 3
    assert all("no batch output file given" in t.warnings[0] for t in transcripts)


def test_it_refuses_a_repeated_custom_id(samples: Path, parse: Parse) -> None:
    with pytest.raises(ParseError) as caught:
        parse(samples / "batch_duplicate.jsonl")
    assert (caught.value.line, caught.value.field) == (2, "custom_id")
    assert "repeats batch_duplicate.jsonl line 1" in caught.value.message


def test_it_refuses_batches_of_other_endpoints(samples: Path, parse: Parse) -> None:
    with pytest.raises(ParseError) as caught:
        parse(samples / "batch_embeddings_input.jsonl")
    assert caught.value.field == "url"
    assert "'/v1/embeddings'" in caught.value.message


def test_it_refuses_a_non_batch_file_named_as_batch(samples: Path, parse: Parse) -> None:
    with pytest.raises(ParseError, match="not a Batch API file"):
        parse(samples / "chat_unknown_role.jsonl", format="batch")


def _batch_files(tmp_path: Path, inputs: list[str], outputs: list[str]) -> tuple[Path, Path]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    reply = {
        "model": "gpt-4o-mini",
        "choices": [{"message": {"role": "assistant", "content": "yo"}}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
    }
    input_path, output_path = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    input_path.write_text(
        "".join(
            json.dumps(
                {"custom_id": c, "method": "POST", "url": "/v1/chat/completions", "body": body}
            )
            + "\n"
            for c in inputs
        )
    )
    output_path.write_text(
        "".join(
            json.dumps({"custom_id": c, "response": {"status_code": 200, "body": reply}}) + "\n"
            for c in outputs
        )
    )
    return input_path, output_path


def test_it_refuses_a_pair_that_shares_no_custom_id(tmp_path: Path, parse: Parse) -> None:
    pair = _batch_files(tmp_path, ["a", "b", "c"], ["x", "y"])
    with pytest.raises(ParseError) as caught:
        parse(*pair)
    assert caught.value.file == "in.jsonl + out.jsonl"
    assert "share no custom_id (3 input lines, 2 output lines)" in caught.value.message


def test_it_warns_with_the_counts_when_most_outputs_match_nothing(
    tmp_path: Path, parse: Parse
) -> None:
    warnings: list[str] = []
    transcripts = parse(
        *_batch_files(tmp_path, ["a", "b"], ["a", "x", "y"]), on_warning=warnings.append
    )
    assert len(transcripts) == 4  # a joined, b pending, x and y output-only
    assert warnings == [
        "in.jsonl + out.jsonl: 2 of 3 output lines match no input line (1 matched, 1 input "
        "lines without output): is this the output of another batch?"
    ]


def test_it_says_nothing_more_when_the_pair_matches(tmp_path: Path, parse: Parse) -> None:
    warnings: list[str] = []
    parse(*_batch_files(tmp_path, ["a", "b"], ["a", "b", "z"]), on_warning=warnings.append)
    assert warnings == []


def test_it_keeps_a_refused_batch_request_with_an_unrenderable_body_as_pending(
    tmp_path: Path, parse: Parse
) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}, {"role": "user"}],
    }
    inputs, outputs = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inputs.write_text(
        json.dumps(
            {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
        + "\n"
    )
    error = {"error": {"message": "messages[1]: missing content"}}
    outputs.write_text(
        json.dumps({"custom_id": "a", "response": {"status_code": 400, "body": error}}) + "\n"
    )
    (transcript,) = parse(inputs, outputs)
    assert transcript.calls is not None
    assert transcript.calls[0].response is None
    assert transcript.messages == [{"role": "user", "content": "hi"}]
    joined = "\n".join(transcript.warnings)
    assert "body.messages[1].content: content is missing" in joined
    assert "status 400 (messages[1]: missing content): kept as a pending call" in joined
