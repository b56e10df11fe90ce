"""What-if on the cache levers of the request itself (design.md 2.6, issue "Cache and price
rules per model"): prompt_cache_key choices, extended retention and, for breakpoint models,
explicit vs implicit breakpoints, each priced with its writes.

Owns: the lever variants of a set of transcripts and their side-by-side totals.

Every variant is simulated, the recorded one included: reported usage is set aside so that
the comparison is like for like (a lever can only be judged by the same simulator).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from .analysis import PolicyFor, ProfileFor, RatesFor, analyze, turns_from_messages
from .cache_policy import CachePolicy, default_policy
from .types import Call, ChatMessage, Transcript, prompt_simulated

KeyChoice = Literal["recorded", "none", "conversation", "org"]


@dataclass(frozen=True, slots=True)
class Lever:
    name: str
    key: KeyChoice = "recorded"
    retention: str | None = None  # "24h": ask for extended retention on every request
    explicit: bool = False  # breakpoint models: mark the system prompt, write only marked


LEVERS = (
    Lever("as recorded"),
    Lever("no prompt_cache_key", key="none"),
    Lever("prompt_cache_key per conversation", key="conversation"),
    Lever("one prompt_cache_key for the organization", key="org"),
    Lever("extended retention (24h)", retention="24h"),
    Lever("explicit breakpoint after the system prompt", explicit=True),
)


def applicable_levers(policy: CachePolicy) -> list[Lever]:
    """The levers that can change anything for a model of this policy: none without caching,
    extended retention only where offered, explicit breakpoints only for breakpoint models."""
    if not policy.caches:
        return [LEVERS[0]]
    return [
        lever
        for lever in LEVERS
        if (not lever.retention or policy.extended_retention)
        and (not lever.explicit or policy.kind == "breakpoints")
    ]


def lever_left_out(lever: Lever, policy: CachePolicy) -> str:
    """Why `applicable_levers` leaves `lever` out for a model of this policy, in a line."""
    if not policy.caches:
        return f"{lever.name}: the model has no prompt caching"
    if lever.retention and not policy.extended_retention:
        return f"{lever.name}: not offered under the {policy.name} cache rules"
    return f"{lever.name}: only for models that cache by breakpoints (GPT-5.6 on)"


@dataclass(frozen=True, slots=True)
class LeverResult:
    lever: Lever
    calls: int
    prompt_tokens: int
    cached_tokens: int
    write_tokens: int
    cost: Decimal | None
    cost_no_cache: Decimal | None
    cached_share: float | None
    request_hit_rate: float | None


def _marked_system(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The messages with the last system/developer message marked as a breakpoint."""
    marked = list(messages)
    for index in range(len(marked) - 1, -1, -1):
        message = marked[index]
        if message.get("role") in ("system", "developer"):
            content = message.get("content")
            parts: list[dict[str, object]] = (
                [dict(p) for p in content if isinstance(p, dict)]
                if isinstance(content, list)
                else [{"type": "text", "text": "" if content is None else str(content)}]
            )
            if parts:
                parts[-1]["prompt_cache_breakpoint"] = True
            marked[index] = {**message, "content": parts}
            break
    return marked


def _variant(transcript: Transcript, number: int, lever: Lever) -> Transcript:
    calls = transcript.calls
    calls = turns_from_messages(transcript.messages) if calls is None else calls
    changed: list[Call] = []
    for call in calls:
        key = call.prompt_cache_key
        if lever.key == "none":
            key = None
        elif lever.key == "conversation":
            key = f"conversation-{transcript.external_id or number}"
        elif lever.key == "org":
            key = "organization"
        options = call.cache_options
        if lever.explicit:
            options = {**(options or {}), "mode": "explicit"}
        changed.append(
            prompt_simulated(  # simulated like every other variant, its reply kept
                call,
                prompt_cache_key=key,
                cache_retention=lever.retention or call.cache_retention,
                cache_options=options,
            )
        )
    messages = _marked_system(transcript.messages) if lever.explicit else transcript.messages
    return dataclasses.replace(transcript, messages=messages, calls=changed)


def compare_levers(
    transcripts: Sequence[Transcript],
    levers: Sequence[Lever] = LEVERS,
    *,
    profile_for: ProfileFor,
    rates_for: RatesFor,
    retention_seconds: int,
    policy_for: PolicyFor = default_policy,
    org: str = "default",
    default_model: str | None = None,
) -> list[LeverResult]:
    """The same transcripts under each lever, each with a cold cache of its own."""
    results = []
    for lever in levers:
        variants = [_variant(t, n, lever) for n, t in enumerate(transcripts)]
        analysis = analyze(
            variants,
            profile_for=profile_for,
            rates_for=rates_for,
            retention_seconds=retention_seconds,
            org=org,
            default_model=default_model,
            policy_for=policy_for,
        )
        calls = [c for conversation in analysis.conversations for c in conversation.calls]
        totals = analysis.totals
        results.append(
            LeverResult(
                lever=lever,
                calls=totals.calls,
                prompt_tokens=totals.prompt_tokens,
                cached_tokens=totals.cached_tokens,
                write_tokens=sum(c.buckets.input_cache_write for c in calls),
                cost=totals.cost,
                cost_no_cache=totals.metrics.cost_no_cache,
                cached_share=totals.metrics.token_hit_rate,
                request_hit_rate=totals.metrics.request_hit_rate,
            )
        )
    return results
