"""What the next N turns of a conversation will cost under the manual prompt flow.

Owns: the cost of the next N turns of one conversation.

Every future turn re-sends everything, so turn t's prompt is turn t-1's prompt plus one
assistant reply and one user message (their sizes default to the conversation's medians).
Caching: turn t's prompt starts with turn t-1's whole prompt (reply priming is the start of
the assistant message), so it hits the 128-token floor of turn t-1's prompt when that is at
least 1024 tokens and the gap between turns is within retention.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass
from decimal import Decimal

from .analysis import call_time, turns_from_messages
from .cache_policy import PREFIX_128, CachePolicy
from .messages import SYNTHETIC_TOKENS_KEY, MessageTokens, encode_message
from .pricing import Rates, buckets_from_counts, price_buckets
from .profiles import ModelProfile
from .render import encode_header, priming_tokens, system_tail
from .types import Call, Transcript


@dataclass(frozen=True, slots=True)
class ProjectedTurn:
    number: int  # 1 is the next call
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost: Decimal | None
    cost_no_cache: Decimal | None
    cumulative_cost: Decimal | None


@dataclass(frozen=True, slots=True)
class Projection:
    turns: list[ProjectedTurn]
    user_tokens: int  # assumed content size of each future user message
    assistant_tokens: int  # ... and of each reply (also the completion tokens)
    gap_seconds: float  # assumed time between calls
    cache_applies: bool  # gap within retention
    cost: Decimal | None
    cost_no_cache: Decimal | None


def _typical_body(messages: MessageTokens, role: str) -> int:
    """The median content size of a role's messages: a question after a pasted document
    is the size of the others, and the mean made every future question half a document."""
    sizes = [messages.body(i) for i, m in enumerate(messages.messages) if m.get("role") == role]
    return round(statistics.median(sizes)) if sizes else 0


def _message_overhead(role: str, profile: ModelProfile) -> int:
    """Tokens a message of this role costs beyond its content (overhead and role)."""
    empty = {"role": role, "content": role, SYNTHETIC_TOKENS_KEY: 0}
    return encode_message(empty, profile).length


def _median_gap(transcript: Transcript, calls: list[Call]) -> float:
    """Typical time between calls; 0 (one continuous session) when times are unknown."""
    times = sorted(t for t in (call_time(transcript, c) for c in calls) if t is not None)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return statistics.median(gaps) if gaps else 0.0


def _price(rates: Rates | None, prompt: int, cached: int, completion: int) -> Decimal | None:
    if rates is None:
        return None
    buckets = buckets_from_counts(
        prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion
    )
    return price_buckets(buckets, rates).total


def _cached(previous_prompt: int, cache_applies: bool, policy: CachePolicy) -> int:
    if not cache_applies or not policy.eligible(previous_prompt):
        return 0
    return previous_prompt // policy.step_tokens * policy.step_tokens


def project(
    transcript: Transcript,
    turns: int,
    *,
    profile: ModelProfile,
    rates: Rates | None,
    retention_seconds: int,
    user_tokens: int | None = None,
    assistant_tokens: int | None = None,
    gap_seconds: float | None = None,
    policy: CachePolicy = PREFIX_128,
) -> Projection:
    messages = MessageTokens(transcript.messages, profile)
    calls = (
        transcript.calls
        if transcript.calls is not None
        else turns_from_messages(transcript.messages)
    )
    last = calls[-1] if calls else None
    header = 0
    if last is not None:
        first = [transcript.messages[last.request[0]]] if last.request else []
        after_system = system_tail(first)
        header = len(
            encode_header(
                last.tools,
                last.response_format,
                profile,
                after_system=after_system,
                responses_api=last.responses_api,
            )
        )
    priming = len(priming_tokens(profile))
    user = _typical_body(messages, "user") if user_tokens is None else user_tokens
    reply = _typical_body(messages, "assistant") if assistant_tokens is None else assistant_tokens
    user_message = user + _message_overhead("user", profile)
    reply_message = reply + _message_overhead("assistant", profile)
    gap = _median_gap(transcript, calls) if gap_seconds is None else gap_seconds
    applies = policy.caches and gap <= retention_seconds

    done = [c for c in calls if c.response is not None]
    previous = header + priming + sum(messages.length(i) for i in done[-1].request) if done else 0
    prompt = header + priming + sum(messages.length(i) for i in range(len(transcript.messages)))
    last_role = transcript.messages[-1].get("role") if transcript.messages else None
    if last_role in (None, "assistant", "system", "developer"):
        prompt += user_message  # otherwise the pending request is the next call as it stands
    projected: list[ProjectedTurn] = []
    total: Decimal | None = None
    total_no_cache: Decimal | None = None
    for number in range(1, turns + 1):
        cached = _cached(previous, applies, policy)
        cost = _price(rates, prompt, cached, reply)
        no_cache = _price(rates, prompt, 0, reply)
        if cost is not None and no_cache is not None:
            total = (total or Decimal(0)) + cost
            total_no_cache = (total_no_cache or Decimal(0)) + no_cache
        projected.append(ProjectedTurn(number, prompt, cached, reply, cost, no_cache, total))
        previous, prompt = prompt, prompt + reply_message + user_message
    return Projection(projected, user, reply, gap, applies, total, total_no_cache)
