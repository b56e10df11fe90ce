"""Whole-transcript analysis: turns, simulated caching, reported usage, pricing."""

from __future__ import annotations

import dataclasses
import gc
import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from conversations.engine import cache, render
from conversations.engine.analysis import (
    Analysis,
    CacheState,
    analyze,
    analyze_chunked,
    analyze_next,
    conversation_start,
    turns_from_messages,
)
from conversations.engine.cache import STEP, MissReason
from conversations.engine.pricing import Rates
from conversations.engine.profiles import ModelProfile, default_profile
from conversations.engine.render import count_request, render_tokens
from conversations.engine.types import Call, ChatMessage, Transcript, Usage
from conversations.engine.vocabulary import get_encoding

from .conftest import GPT_4O, T0, conversation, xs

ProfileFor = Callable[[str | None], ModelProfile]
RatesFor = Callable[[Call, int], Rates | None]


def run(
    transcripts: list[Transcript],
    profile_for: ProfileFor,
    rates_for: RatesFor,
    retention: int = 300,
    **kwargs: Any,
) -> Analysis:
    return analyze(
        transcripts,
        profile_for=profile_for,
        rates_for=rates_for,
        retention_seconds=retention,
        **kwargs,
    )


def known_times(transcript: Transcript) -> list[datetime]:
    return [t for t in transcript.message_times or [] if t is not None]


def test_it_builds_one_turn_per_assistant_message_and_a_pending_tail() -> None:
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "u3"},
    ]
    calls = turns_from_messages(messages)
    assert [(c.request, c.response) for c in calls] == [
        ([0, 1], 2),
        ([0, 1, 2, 3], 4),
        ([0, 1, 2, 3, 4, 5], None),
    ]
    assert [c.response for c in turns_from_messages(messages[:5])] == [2, 4]
    # a canned greeting with nothing before it is no API call
    assert turns_from_messages([{"role": "assistant", "content": "Hi!"}]) == []


def test_it_shows_a_pending_request_as_the_last_turn(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    transcript = conversation(3, gap_seconds=None)
    transcript.messages.append({"role": "user", "content": "and one more thing"})
    calls = run([transcript], profile_for, rates_for).conversations[0].calls
    assert [c.pending for c in calls] == [False, False, False, True]
    assert calls[-1].completion_tokens == 0
    assert calls[-1].prompt_tokens > calls[-2].prompt_tokens


def test_it_hits_the_128_floor_of_the_previous_turns_prompt(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    calls = run([conversation(12)], profile_for, rates_for).conversations[0].calls
    for previous, call in itertools.pairwise(calls):
        expected = previous.prompt_tokens // STEP * STEP
        assert call.simulated_cached_tokens == (expected if expected >= 1024 else 0)
        assert call.miss_reason is None or call.miss_reason.kind == "below_minimum"
    assert calls[0].miss_reason == MissReason("cold")
    assert sum(c.cached_tokens > 0 for c in calls) == len(calls) - 1


def test_it_finds_a_timestamp_changed_in_the_system_prompt(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    def session(clock: str, minutes: int) -> Transcript:
        system = f"{xs(1100)} Current time: {clock}. {xs(300)}"
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": "What changed?"},
            {"role": "assistant", "content": "Nothing."},
        ]
        times: list[datetime | None] = [T0 + timedelta(minutes=minutes)] * 3
        return Transcript(messages=messages, model="gpt-4o", message_times=times)

    first, second = session("10:31", 0), session("10:32", 1)
    analysis = run([first, second], profile_for, rates_for)
    call = analysis.conversations[1].calls[0]
    profile = default_profile("gpt-4o")
    before = render_tokens(first.messages[:2], profile=profile)
    after = render_tokens(second.messages[:2], profile=profile)
    diverged = next(i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b)
    assert call.miss_reason == MissReason("prefix_changed", token=diverged, message=0)
    assert call.cached_tokens == diverged // STEP * STEP >= 1024
    assert call.miss_reason.describe() == f"prefix changed at token {diverged:,} (message 0)"


def test_it_shares_the_cache_across_an_organizations_conversations(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    first, second = conversation(2, seed=1), conversation(2, seed=2)
    second.messages[0] = first.messages[0]  # same system prompt, a minute later
    second.message_times = [t + timedelta(minutes=1) for t in known_times(second)]
    shared = run([first, second], profile_for, rates_for)
    assert shared.conversations[1].calls[0].cached_tokens >= 1024
    apart = run([second], profile_for, rates_for)  # alone: nothing to share
    assert apart.conversations[0].calls[0].cached_tokens == 0


def test_it_reports_an_idle_gap_over_retention_as_expired(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    transcript = conversation(4, gap_seconds=30)
    times = known_times(transcript)
    # the user comes back 20 minutes after the second reply
    times = times[:5] + [t + timedelta(minutes=20) for t in times[5:]]
    transcript.message_times = list(times)
    calls = run([transcript], profile_for, rates_for, retention=600).conversations[0].calls
    assert calls[1].cached_tokens > 0
    gap = (times[5] - times[3]).total_seconds()
    assert calls[2].cached_tokens == 0
    assert calls[2].miss_reason == MissReason("expired", idle_seconds=gap)
    assert calls[3].cached_tokens > 0


def test_it_gives_batch_calls_no_caching_discount(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    transcript = conversation(3)
    transcript.calls = [
        dataclasses.replace(c, batch=True) for c in turns_from_messages(transcript.messages)
    ]
    calls = run([transcript], profile_for, rates_for).conversations[0].calls
    assert all(c.cached_tokens == 0 for c in calls)
    assert all(c.miss_reason == MissReason("batch") for c in calls)
    assert calls[1].cost == calls[1].cost_no_cache


def test_it_lets_reported_cached_tokens_win_over_the_simulation(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    transcript = conversation(3)
    calls = turns_from_messages(transcript.messages)
    calls[1].usage = Usage(
        prompt_tokens=1500, completion_tokens=90, total_tokens=1590, cached_tokens=1024
    )
    transcript.calls = calls
    analysed = run([transcript], profile_for, rates_for).conversations[0].calls
    reported = analysed[1]
    assert reported.cache_source == "reported"
    assert (reported.prompt_tokens, reported.cached_tokens, reported.completion_tokens) == (
        1500,
        1024,
        90,
    )
    assert reported.simulated_cached_tokens not in (0, 1024)  # both figures are kept
    assert reported.estimated_prompt_tokens != 1500
    expected = (
        Decimal(476) * Decimal("2.50") + Decimal(1024) * Decimal("1.25") + Decimal(90) * Decimal(10)
    ) / Decimal(1_000_000)
    assert reported.cost is not None and reported.cost.total == expected
    assert analysed[0].cache_source == analysed[2].cache_source == "simulated"


def test_it_leaves_unpriced_calls_at_none_never_zero(profile_for: ProfileFor) -> None:
    def gpt4o_only(call: Call, prompt_tokens: int) -> Rates | None:
        return GPT_4O if call.model == "gpt-4o" else None

    transcript = conversation(2)
    transcript.calls = [
        dataclasses.replace(c, model="mystery-1") for c in turns_from_messages(transcript.messages)
    ]
    analysis = run([transcript, conversation(2, seed=5)], profile_for, gpt4o_only)
    unpriced = analysis.conversations[0]
    assert all(c.cost is None and c.cumulative_cost is None for c in unpriced.calls)
    assert unpriced.totals.cost is None
    assert unpriced.totals.unpriced_models == ("mystery-1",)
    assert analysis.totals.unpriced_calls == 2
    assert analysis.totals.priced_calls == 2
    assert analysis.totals.cost == analysis.conversations[1].totals.cost


def test_it_adds_up_cumulative_cost(profile_for: ProfileFor, rates_for: RatesFor) -> None:
    calls = run([conversation(5)], profile_for, rates_for).conversations[0].calls
    running = Decimal(0)
    for call in calls:
        assert call.cost is not None
        running += call.cost.total
        assert call.cumulative_cost == running


def test_it_flags_prompts_that_do_not_fit_the_context_window(rates_for: RatesFor) -> None:
    def small(model: str | None) -> ModelProfile:
        return dataclasses.replace(
            default_profile(model), context_window=3000, max_output_tokens=1000
        )

    calls = run([conversation(8)], small, rates_for).conversations[0].calls
    # No max_completion_tokens in these requests: the reply they got is what they reserved,
    # never the model's maximum output (design.md 2.7).
    flagged = [c.prompt_tokens + c.completion_tokens > 3000 for c in calls]
    assert [c.over_context for c in calls] == flagged
    assert True in flagged and False in flagged
    assert any("prompt" in w and "reply" in w for c in calls for w in c.warnings)


def test_it_flags_with_the_output_a_request_reserved(rates_for: RatesFor) -> None:
    def small(model: str | None) -> ModelProfile:
        return dataclasses.replace(default_profile(model), context_window=3000)

    transcript = conversation(2, system_words=200)
    calls = run([transcript], small, rates_for).conversations[0].calls
    assert not any(c.over_context for c in calls)
    requests = turns_from_messages(transcript.messages)
    for request in requests:
        request.max_output_tokens = 2990  # asks for nearly the whole window
    reserved = dataclasses.replace(transcript, calls=requests)
    calls = run([reserved], small, rates_for).conversations[0].calls
    assert all(c.over_context for c in calls)
    assert "max output 2,990" in calls[0].warnings[-1]


def test_it_does_not_flag_a_short_gpt4_call(rates_for: RatesFor) -> None:
    """gpt-4's maximum output equals its window: flagging by it marked every call."""
    messages: list[ChatMessage] = [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    profile = dataclasses.replace(
        default_profile("gpt-4"), context_window=8192, max_output_tokens=8192
    )
    analysis = run([Transcript(messages=messages, model="gpt-4")], lambda model: profile, rates_for)
    assert not analysis.conversations[0].calls[0].over_context


def test_it_warns_about_images_of_unknown_size(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    messages: list[ChatMessage] = [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]},
        {"role": "assistant", "content": "A cat."},
    ]
    analysis = run([Transcript(messages=messages, model="gpt-4o")], profile_for, rates_for)
    call = analysis.conversations[0].calls[0]
    assert call.unknown_images == 1
    assert "1 part of unknown size counted as 0 tokens: an image" in call.warnings


def test_it_names_files_and_audio_of_unknown_size(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    pdf = {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:..."}}
    audio = {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}}
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    messages: list[ChatMessage] = [
        {"role": "user", "content": [{"type": "text", "text": "Read these."}, pdf, audio]},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": [image, image]},
        {"role": "assistant", "content": "Two cats."},
    ]
    analysis = run([Transcript(messages=messages, model="gpt-4o")], profile_for, rates_for)
    first, second = analysis.conversations[0].calls
    assert first.unknown_images == 2
    assert "2 parts of unknown size counted as 0 tokens: a PDF file, audio" in first.warnings
    assert second.unknown_images == 4
    assert (
        "4 parts of unknown size counted as 0 tokens: a PDF file, audio, 2 images"
        in second.warnings
    )


def test_it_marks_transcripts_without_timestamps(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    analysis = run(
        [conversation(3, gap_seconds=None), conversation(3, seed=2)], profile_for, rates_for
    )
    assert [c.timestamps_missing for c in analysis.conversations] == [True, False]
    assert analysis.timestamps_missing


@pytest.mark.pure_python  # spies on calls a compiled module makes directly
def test_it_encodes_each_message_once_and_hashes_each_block_once(
    profile_for: ProfileFor,
    rates_for: RatesFor,
    monkeypatch: pytest.MonkeyPatch,
    encoded: list[ChatMessage],
) -> None:
    hashed: list[int] = []

    def counting_hash(value: object) -> int:
        # a block hash is hash((parent, the block's packed bytes)); nothing else in the
        # renderer hashes a tuple holding bytes
        if isinstance(value, tuple) and any(isinstance(part, bytes) for part in value):
            hashed.append(1)
        return hash(value)

    # render.py's global `hash` shadows the builtin for its own calls (and for
    # hash_blocks_into's through cache.py, patched the same way)
    monkeypatch.setattr(render, "hash", counting_hash, raising=False)
    monkeypatch.setattr(cache, "hash", counting_hash, raising=False)
    transcript = conversation(30)
    calls = run([transcript], profile_for, rates_for).conversations[0].calls
    assert len(encoded) == len(transcript.messages)
    final_blocks = calls[-1].estimated_prompt_tokens // STEP
    # every block of the final prompt once, plus at most one priming block per call;
    # re-hashing every prompt would cost the sum of all prompts' blocks instead
    assert final_blocks <= sum(hashed) <= final_blocks + len(calls)
    assert sum(c.estimated_prompt_tokens // STEP for c in calls) > 5 * sum(hashed)


def test_it_matches_counting_every_request_from_scratch(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    transcript = conversation(6)
    transcript.messages.append({"role": "user", "content": "pending"})
    calls = run([transcript], profile_for, rates_for).conversations[0].calls
    profile = default_profile("gpt-4o")
    encoding = get_encoding(profile.encoding)
    for call in calls:
        request = [transcript.messages[i] for i in call.call.request]
        assert call.estimated_prompt_tokens == count_request(request, profile=profile)
        if call.call.response is not None:
            reply = transcript.messages[call.call.response]["content"]
            assert call.estimated_completion_tokens == len(encoding.encode(reply))


def test_it_pauses_the_cyclic_collector_only_while_it_runs(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    seen: list[bool] = []

    def watching(call: Call, prompt_tokens: int) -> Rates | None:
        seen.append(gc.isenabled())
        return rates_for(call, prompt_tokens)

    assert gc.isenabled()
    run([conversation(3)], profile_for, watching)
    assert seen and not any(seen)  # paused during the analysis
    assert gc.isenabled()  # and back on after it
    gc.disable()
    try:
        run([conversation(3)], profile_for, watching)
        assert not gc.isenabled()  # a caller's own pause is left alone
    finally:
        gc.enable()

    def failing(call: Call, prompt_tokens: int) -> Rates | None:
        raise RuntimeError("price book unavailable")

    with pytest.raises(RuntimeError):
        run([conversation(3)], profile_for, failing)
    assert gc.isenabled()  # back on after a failure too


def test_a_file_read_in_chunks_gives_what_one_analysis_of_it_gives(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    # Seven conversations in time order, one system prompt: read three at a time, the
    # fourth still finds the cache the third left, and numbering runs on across chunks.
    sessions = [conversation(3, seed=n) for n in range(7)]
    for n, session in enumerate(sessions):
        session.messages[0] = sessions[0].messages[0]
        session.message_times = [t + timedelta(minutes=2 * n) for t in known_times(session)]
    whole = run(sessions, profile_for, rates_for)
    chunked = analyze_chunked(
        sessions, profile_for=profile_for, rates_for=rates_for, retention_seconds=300, chunk=3
    )
    assert chunked.conversations[3].calls[0].cached_tokens >= 1024

    def figures(analysis: Analysis) -> list[tuple[int, int, int, Decimal | None]]:
        return [
            (c.conversation, c.index, c.cached_tokens, c.cost.total if c.cost else None)
            for conversation in analysis.conversations
            for c in conversation.calls
        ]

    assert figures(chunked) == figures(whole)
    assert chunked.totals == whole.totals


def test_a_later_chunks_older_call_never_hits_a_prefix_written_after_it(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    # The file lists a 09:30 conversation before a 09:00 one with the same system prompt.
    # Read a conversation at a time, the 09:00 call comes after the 09:30 one: it must not
    # hit what that later call wrote (a hit "from the future" would under-price it).
    late, early = conversation(2, seed=1), conversation(2, seed=2)
    early.messages[0] = late.messages[0]
    late.message_times = [t + timedelta(minutes=30) for t in known_times(late)]
    chunked = analyze_chunked(
        [late, early], profile_for=profile_for, rates_for=rates_for, retention_seconds=600, chunk=1
    )
    first_of_early = chunked.conversations[1].calls[0]
    assert first_of_early.cached_tokens == 0
    assert first_of_early.miss_reason == MissReason("cold")
    # Its own second call still hits what its first one wrote.
    assert chunked.conversations[1].calls[1].cached_tokens >= 1024
    whole = run([late, early], profile_for, rates_for, retention=600)
    assert whole.conversations[1].calls[0].cached_tokens == 0


def test_a_carried_cache_keeps_its_blocks_but_lets_old_tokens_go(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    # An import carries the cache over a whole file: the blocks (what decides a hit) stay,
    # the prompts' tokens (kept to name a divergence) only through the chunk after theirs,
    # or a 500 MB file held every conversation's tokens (1.3 GB).
    sessions = [conversation(3, seed=n) for n in range(6)]  # six different system prompts
    for n, session in enumerate(sessions):
        session.message_times = [t + timedelta(minutes=2 * n) for t in known_times(session)]
    state = CacheState(300)
    chunked = [
        analyze(
            [session],
            profile_for=profile_for,
            rates_for=rates_for,
            retention_seconds=300,
            cache=state,
            first_number=n,
        )
        for n, session in enumerate(sessions)
    ]
    simulator = next(iter(state.prefix.values()))
    segments = {id(s): s for store in simulator._stores.values() for s in store.blocks.values()}
    holding = [s for s in segments.values() if s.source is not None]
    assert len(segments) >= 6 and len(holding) == 1  # the last chunk's prompt
    whole = run(sessions, profile_for, rates_for)
    assert [c.cached_tokens for a in chunked for c in a.conversations[0].calls] == [
        c.cached_tokens for conversation in whole.conversations for c in conversation.calls
    ]


# --- a transcript's next call analysed alone (a live chat's turns) ----------------------------


def _chat_turns(model: str) -> tuple[list[ChatMessage], list[Call]]:
    """A chat of 12 turns on a 1,500-token system prompt: replies reported or not, one
    request that got no reply (the next one sends its question again, unanswered), an idle
    gap past the retention, a prompt_cache_key that changes, a batch call."""
    messages: list[ChatMessage] = [{"role": "system", "content": xs(1500, "policy")}]
    calls: list[Call] = []
    at = T0
    for turn in range(12):
        messages.append({"role": "user", "content": xs(40 + 7 * turn, f"q{turn}")})
        at += timedelta(seconds=400 if turn == 6 else 20)
        answered = turn != 4
        request = list(range(len(messages)))
        if answered:
            messages.append({"role": "assistant", "content": xs(60 + turn, f"a{turn}")})
        usage = None
        if turn % 3 == 1:
            usage = Usage(prompt_tokens=1700 + turn, completion_tokens=61, total_tokens=1761)
            usage = dataclasses.replace(usage, cached_tokens=1536 if turn > 1 else 0)
        calls.append(
            Call(
                request=request,
                response=len(messages) - 1 if answered else None,
                model=model,
                prompt_cache_key="chat-a" if turn < 9 else "chat-b",
                started_at=at,
                usage=usage,
                batch=turn == 10,
            )
        )
    return messages, calls


def _figures(call: Any) -> tuple[Any, ...]:
    return tuple(getattr(call, f.name) for f in dataclasses.fields(call) if f.name != "call")


def _as_read(messages: list[ChatMessage]) -> list[ChatMessage]:
    """New objects with the same content, as each turn reads them back from the database."""
    return [dict(m) for m in messages]


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-5.6"])  # prefix cache; breakpoints
def test_it_analyses_each_next_call_alone_as_the_whole_transcript_again(
    model: str, profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    messages, calls = _chat_turns(model)
    chained = conversation_start(
        Transcript(messages=messages[:1], calls=[]),
        profile_for=profile_for,
        rates_for=rates_for,
        retention_seconds=300,
        org="acme",
    )
    for index, call in enumerate(calls):
        seen = _as_read(messages[: (call.response or call.request[-1]) + 1])
        whole = run([Transcript(messages=seen, calls=calls[: index + 1])], profile_for, rates_for,
                    org="acme").conversations[0].calls[-1]  # fmt: skip
        alone = analyze_next(
            chained, Transcript(messages=seen), call, profile_for=profile_for, rates_for=rates_for
        )
        assert alone is not None and chained.calls == index + 1
        assert _figures(alone) == _figures(whole), index
        # Resumed from a state made of the earlier calls at once (another process's turns).
        resumed = conversation_start(
            Transcript(messages=seen, calls=calls[:index]),
            profile_for=profile_for,
            rates_for=rates_for,
            retention_seconds=300,
            org="acme",
        )
        again = analyze_next(
            resumed, Transcript(messages=seen), call, profile_for=profile_for, rates_for=rates_for
        )
        assert again is not None and _figures(again) == _figures(whole), index
    # The chat above hits and misses (the idle gap, the key change, the batch call), is billed from the
    # reported usage where there is one, and costs add up turn by turn.
    figures = [
        run([Transcript(messages=messages, calls=calls[: n + 1])], profile_for, rates_for)
        .conversations[0].calls[-1]
        for n in range(len(calls))
    ]  # fmt: skip
    assert any(c.simulated_cached_tokens for c in figures)
    kinds = {c.miss_reason.kind for c in figures if c.miss_reason}
    if model == "gpt-4o":  # five minutes' retention: the idle gap expires it
        assert kinds >= {"cold", "expired", "batch"}
    else:  # breakpoints keep their prefixes longer, and bill writes
        assert kinds >= {"cold", "batch"} and any(c.simulated_write_tokens for c in figures)
    assert figures[4].pending and figures[4].cost is not None
    assert [c.cache_source for c in figures].count("reported") == 4
    assert figures[-1].cumulative_cost == sum(
        (c.cost.total for c in figures if c.cost and c.billed), Decimal(0)
    )


def test_a_next_call_that_cannot_be_analysed_alone_leaves_the_state_as_it_was(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    messages, calls = _chat_turns("gpt-4o")
    transcript = Transcript(messages=messages, calls=calls[:3])
    state = conversation_start(
        transcript, profile_for=profile_for, rates_for=rates_for, retention_seconds=300
    )
    assert state.calls == 3
    # Earlier than the call before it: analyze would simulate it before that one.
    earlier = dataclasses.replace(calls[3], started_at=calls[1].started_at)
    # No time, after calls that had one: analyze would simulate them all as untimed.
    untimed = dataclasses.replace(calls[3], started_at=None)
    for call in (earlier, untimed):
        assert (
            analyze_next(state, transcript, call, profile_for=profile_for, rates_for=rates_for)
            is None
        )
        assert state.calls == 3
    # A price row that changed the model's counting profile: analysed from scratch instead.
    other = dataclasses.replace(profile_for("gpt-4o"), tokens_per_message=4)
    changed: ProfileFor = lambda model: other  # noqa: E731
    assert (
        analyze_next(state, transcript, calls[3], profile_for=changed, rates_for=rates_for) is None
    )
    assert (
        analyze_next(state, transcript, calls[3], profile_for=profile_for, rates_for=rates_for)
        is not None
    )
    assert state.calls == 4


def test_a_next_call_after_an_edited_history_is_left_to_a_fresh_start(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    messages, calls = _chat_turns("gpt-4o")
    state = conversation_start(
        Transcript(messages=messages, calls=calls[:3]),
        profile_for=profile_for,
        rates_for=rates_for,
        retention_seconds=300,
    )
    edited = _as_read(messages)
    edited[3] = {"role": "user", "content": xs(40, "edited")}  # asked by calls 1 and 2
    assert (
        analyze_next(
            state,
            Transcript(messages=edited),
            calls[3],
            profile_for=profile_for,
            rates_for=rates_for,
        )
        is None
    )
    assert state.calls == 3
    whole = run([Transcript(messages=edited, calls=calls[:4])], profile_for, rates_for)
    fresh = conversation_start(
        Transcript(messages=edited, calls=calls[:3]),
        profile_for=profile_for,
        rates_for=rates_for,
        retention_seconds=300,
    )
    alone = analyze_next(
        fresh, Transcript(messages=edited), calls[3], profile_for=profile_for, rates_for=rates_for
    )
    assert alone is not None and _figures(alone) == _figures(whole.conversations[0].calls[-1])
