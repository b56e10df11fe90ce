"""Projecting the cost of the next turns under the manual flow."""

from __future__ import annotations

import itertools
from decimal import Decimal

from conversations.engine.cache import STEP
from conversations.engine.profiles import default_profile
from conversations.engine.projection import project
from conversations.engine.render import count_request

from .conftest import GPT_4O, conversation


def test_it_grows_each_prompt_by_one_reply_and_one_user_message() -> None:
    transcript = conversation(6, gap_seconds=30)
    profile = default_profile("gpt-4o")
    projection = project(
        transcript,
        5,
        profile=profile,
        rates=GPT_4O,
        retention_seconds=300,
        user_tokens=100,
        assistant_tokens=300,
    )
    first = projection.turns[0]
    next_request = [*transcript.messages, {"role": "user", "content": " x" * 100}]
    assert first.prompt_tokens == count_request(next_request, profile=profile)
    steps = {b.prompt_tokens - a.prompt_tokens for a, b in itertools.pairwise(projection.turns)}
    assert steps == {(300 + 3 + 1) + (100 + 3 + 1)}  # body + overhead + role, twice
    assert all(t.completion_tokens == 300 for t in projection.turns)


def test_it_caches_the_128_floor_of_the_previous_prompt() -> None:
    transcript = conversation(6, gap_seconds=30)
    profile = default_profile("gpt-4o")
    projection = project(transcript, 4, profile=profile, rates=GPT_4O, retention_seconds=300)
    assert projection.cache_applies and projection.gap_seconds == 60  # calls, not messages
    last_call = count_request(transcript.messages[:-1], profile=profile)
    assert projection.turns[0].cached_tokens == last_call // STEP * STEP
    for previous, turn in itertools.pairwise(projection.turns):
        assert turn.cached_tokens == previous.prompt_tokens // STEP * STEP
        assert turn.cost is not None and turn.cost_no_cache is not None
        assert turn.cost < turn.cost_no_cache
    assert projection.cost == sum(t.cost for t in projection.turns if t.cost is not None)
    assert projection.turns[-1].cumulative_cost == projection.cost


def test_it_loses_the_cache_when_turns_are_further_apart_than_retention() -> None:
    transcript = conversation(6, gap_seconds=900)
    projection = project(
        transcript, 3, profile=default_profile("gpt-4o"), rates=GPT_4O, retention_seconds=300
    )
    assert not projection.cache_applies
    assert all(t.cached_tokens == 0 for t in projection.turns)
    assert projection.cost == projection.cost_no_cache


def test_it_starts_from_a_pending_request_as_it_stands() -> None:
    transcript = conversation(4)
    transcript.messages.append({"role": "user", "content": "one more question"})
    profile = default_profile("gpt-4o")
    projection = project(transcript, 2, profile=profile, rates=None, retention_seconds=300)
    assert projection.turns[0].prompt_tokens == count_request(transcript.messages, profile=profile)
    assert projection.turns[0].cost is None and projection.cost is None
    assert projection.turns[1].cost is None


def test_it_prices_the_projection_in_decimal() -> None:
    projection = project(
        conversation(2), 1, profile=default_profile("gpt-4o"), rates=GPT_4O, retention_seconds=300
    )
    assert isinstance(projection.cost, Decimal)


def test_a_pasted_document_does_not_make_every_future_question_one() -> None:
    """The next questions are the conversation's typical (median) size: with one question
    of 3,000 words among short ones, the mean made each projected question ~600 tokens."""
    transcript = conversation(6, gap_seconds=30, user_words=(20, 20))
    first_question = transcript.messages[1]
    first_question["content"] = " ".join(["document"] * 3000)
    profile = default_profile("gpt-4o")
    projection = project(transcript, 3, profile=profile, rates=GPT_4O, retention_seconds=300)
    others = [
        count_request([m], profile=profile) for m in transcript.messages[3::2]
    ]  # each a short question, with its overhead
    assert projection.user_tokens <= max(others)
    assert projection.user_tokens < 100
