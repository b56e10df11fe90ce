"""JSON and table output for the `analyze` management command."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from conversations.engine.analysis import analyze
from conversations.engine.pricing import Rates
from conversations.engine.profiles import ModelProfile
from conversations.engine.report import analysis_to_json, render_table
from conversations.engine.types import Call, Transcript

from .conftest import conversation

ProfileFor = Callable[[str | None], ModelProfile]
RatesFor = Callable[[Call, int], Rates | None]


def _analysis(profile_for: ProfileFor, rates_for: RatesFor) -> tuple[Transcript, dict[str, Any]]:
    transcript = conversation(3, gap_seconds=None)
    transcript.title = "Pricing chat"
    transcript.messages.append({"role": "user", "content": "still there?"})
    analysis = analyze(
        [transcript], profile_for=profile_for, rates_for=rates_for, retention_seconds=300
    )
    return transcript, analysis_to_json(analysis)


def test_it_writes_the_documented_json_shape(profile_for: ProfileFor, rates_for: RatesFor) -> None:
    _, data = _analysis(profile_for, rates_for)
    json.dumps(data)  # serializable as is
    assert set(data) == {"conversations", "totals", "warnings"}
    [conv] = data["conversations"]
    assert set(conv) == {"id", "title", "model", "turns", "totals", "warnings"}
    assert (conv["id"], conv["title"], conv["model"]) == ("c", "Pricing chat", "gpt-4o")
    for turn in conv["turns"]:
        assert set(turn) == {
            "index",
            "prompt_tokens",
            "cached_tokens",
            "completion_tokens",
            "estimated_prompt_tokens",
            "reported_prompt_tokens",
            "simulated_cached_tokens",
            "reported_cached_tokens",
            "cost",
            "cumulative_cost",
            "cache_source",
            "miss_reason",
        }
        assert isinstance(turn["cost"], str) and isinstance(turn["cumulative_cost"], str)
    assert conv["turns"][0]["miss_reason"]["kind"] == "cold"
    assert conv["turns"][1]["miss_reason"] is None
    pending = conv["turns"][-1]
    assert pending["index"] == 3 and pending["completion_tokens"] == 0
    totals = data["totals"]
    assert totals["calls"] == 4 and totals["pending_calls"] == 1
    assert totals["timestamps_missing"] is True
    assert totals["cost"] == conv["turns"][-1]["cumulative_cost"]
    for key in (
        "prompt_tokens",
        "cached_tokens",
        "completion_tokens",
        "request_hit_rate",
        "token_hit_rate",
        "unpriced_calls",
        "cost_no_cache",
    ):
        assert key in totals


def test_it_writes_null_for_unknown_prices(profile_for: ProfileFor) -> None:
    transcript = conversation(2)
    analysis = analyze(
        [transcript], profile_for=profile_for, rates_for=lambda c, n: None, retention_seconds=300
    )
    data = analysis_to_json(analysis)
    turn = data["conversations"][0]["turns"][0]
    assert turn["cost"] is None and turn["cumulative_cost"] is None
    assert data["totals"]["cost"] is None
    assert data["totals"]["unpriced_models"] == ["gpt-4o"]


def test_it_renders_an_aligned_table_with_reasons_in_words(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    transcript = conversation(3, gap_seconds=None)
    transcript.messages.append({"role": "user", "content": "still there?"})
    analysis = analyze(
        [transcript], profile_for=profile_for, rates_for=rates_for, retention_seconds=300
    )
    table = render_table(analysis)
    lines = table.splitlines()
    header = next(line for line in lines if line.strip().startswith("turn"))
    rows = lines[lines.index(header) + 1 : lines.index(header) + 5]
    assert "cold: first sight of this prefix" in rows[0]
    assert "pending request" in rows[3]
    # right-aligned numbers: every row ends its prompt column where the header does
    end = header.index("prompt") + len("prompt")
    assert all(row[end - 1].isdigit() and row[end] == " " for row in rows)
    assert "no timestamps" in table
    assert "All conversations (1)" in table


def test_it_prints_each_conversations_warnings_and_the_files_own(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    first, second = conversation(1), conversation(1, seed=2)
    first.location, first.warnings = "log.jsonl line 1", ["2 choices: only the first is kept"]
    second.location = "log.jsonl line 2"
    second.warnings = ["log.jsonl line 3: the call failed (rate limit): kept as a pending call"]
    analysis = analyze(
        [first, second], profile_for=profile_for, rates_for=rates_for, retention_seconds=300
    )
    file_warnings = ["upload.zip: ChatGPT export: 1 other member(s) skipped: notes.txt"]
    data = analysis_to_json(analysis, file_warnings)
    located = [
        "log.jsonl line 1: 2 choices: only the first is kept",
        "log.jsonl line 3: the call failed (rate limit): kept as a pending call",
    ]
    assert data["conversations"][0]["warnings"] == located[:1]
    assert data["conversations"][1]["warnings"] == located[1:]
    assert data["warnings"] == [*file_warnings, *located]
    lines = render_table(analysis, file_warnings).splitlines()
    # Each conversation's warnings right after its own totals, before the next one starts.
    at = lines.index(f"  warning: {located[0]}")
    assert lines.index(f"  warning: {located[1]}") > at
    second_header = next(
        i for i, line in enumerate(lines) if line.startswith("Conversation") and i > 0
    )
    assert at < second_header
    assert f"warning: {file_warnings[0]}" in lines


def test_it_shows_the_estimate_beside_what_the_api_reported(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    transcript = conversation(2)
    data = analysis_to_json(
        analyze([transcript], profile_for=profile_for, rates_for=rates_for, retention_seconds=300)
    )
    first, second = data["conversations"][0]["turns"]
    assert first["estimated_prompt_tokens"] == first["prompt_tokens"] > 1000
    assert (first["reported_prompt_tokens"], first["reported_cached_tokens"]) == (None, None)
    assert second["simulated_cached_tokens"] == second["cached_tokens"] > 0
