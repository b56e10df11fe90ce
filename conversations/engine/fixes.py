"""An organization's cache fix list (issue 14): what to change in its requests, and what
each change would have saved over the same calls.

Owns: finding which fixes apply to a set of transcripts, applying each one to a copy of
them, and re-running the simulator to price the difference.

Every figure is simulated on both sides, the calls as recorded included (reported usage is
set aside, as levers.py does): a fix is judged like for like, by the same simulator over
the same calls in the same time order, with the organization's cache shared between its
conversations. A fix that would save nothing is not listed.
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from .analysis import Analysis, PolicyFor, ProfileFor, RatesFor, analyze, call_time
from .cache import RATE_WINDOW_SECONDS
from .cache_policy import default_policy
from .divergence import IDENTIFIER, TIMESTAMP
from .strategies import compare_strategies
from .types import Call, ChatMessage, Transcript, prompt_simulated

# Conversations longer than this many calls are offered a context strategy.
LONG_CONVERSATION_CALLS = 30
# The window the context-strategy fix keeps: the latest messages (system kept apart).
WINDOW_MESSAGES = 20

CallRef = tuple[int, int]  # (transcript number, call index)


@dataclass(frozen=True, slots=True)
class Fix:
    name: str
    title: str
    advice: str
    cost_before: Decimal | None
    cost_after: Decimal | None
    calls: list[CallRef]  # the calls the fix is about
    details: list[str] = field(default_factory=list)

    @property
    def saving(self) -> Decimal | None:
        if self.cost_before is None or self.cost_after is None:
            return None
        return self.cost_before - self.cost_after


@dataclass(frozen=True, slots=True)
class Simulation:
    """What find_fixes needs from the caller: how to count, cache and price a call."""

    profile_for: ProfileFor
    rates_for: RatesFor
    retention_seconds: int
    policy_for: PolicyFor = default_policy
    org: str = "default"

    def run(self, transcripts: Sequence[Transcript]) -> Analysis:
        return analyze(
            transcripts,
            profile_for=self.profile_for,
            rates_for=self.rates_for,
            retention_seconds=self.retention_seconds,
            org=self.org,
            policy_for=self.policy_for,
        )


def _calls(transcript: Transcript) -> list[Call]:
    return transcript.calls or []


def simulated(transcripts: Sequence[Transcript]) -> list[Transcript]:
    """The transcripts with reported usage set aside: every prompt figure from the
    simulator (the replies' reported output kept)."""
    return [
        dataclasses.replace(t, calls=[prompt_simulated(c) for c in _calls(t)]) for t in transcripts
    ]


def _cost(analysis: Analysis) -> Decimal | None:
    return analysis.totals.cost


def _volatile_spans(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for pattern in (TIMESTAMP, IDENTIFIER) for m in pattern.finditer(text)]
    return sorted(spans)


def _static_first(message: ChatMessage) -> ChatMessage | None:
    """The message with its timestamps and ids moved to its end, or None when it has none:
    the static text becomes a prefix every conversation shares."""
    content = message.get("content")
    if not isinstance(content, str):
        return None
    spans = _volatile_spans(content)
    if not spans:
        return None
    static, volatile, at = [], [], 0
    for start, end in spans:
        if start < at:
            continue  # overlapping matches: the first one took the text
        static.append(content[at:start])
        volatile.append(content[start:end])
        at = end
    static.append(content[at:])
    return {**message, "content": "".join(static) + "\n\n" + " ".join(volatile)}


def _move_volatile(transcripts: Sequence[Transcript]) -> tuple[list[Transcript], list[CallRef]]:
    changed: list[Transcript] = []
    about: list[CallRef] = []
    for number, transcript in enumerate(transcripts):
        messages = list(transcript.messages)
        touched = False
        for index, message in enumerate(messages):
            if message.get("role") not in ("system", "developer"):
                continue
            fixed = _static_first(message)
            if fixed is not None:
                messages[index], touched = fixed, True
        if touched:
            about.extend((number, n) for n in range(len(_calls(transcript))))
        changed.append(dataclasses.replace(transcript, messages=messages))
    return changed, about


@dataclass(frozen=True, slots=True)
class KeyRate:
    """A prompt_cache_key's busiest minute (None: calls sent without a key)."""

    model: str | None
    key: str | None
    peak_rpm: int
    calls: list[CallRef]


def key_rates(transcripts: Sequence[Transcript], default_model: str | None = None) -> list[KeyRate]:
    """Per (model, key), the most calls in any 60-second window, busiest first."""
    times: dict[tuple[str | None, str | None], list[tuple[float, CallRef]]] = defaultdict(list)
    for number, transcript in enumerate(transcripts):
        for index, call in enumerate(_calls(transcript)):
            at = call_time(transcript, call)
            if at is not None:
                model = call.model or transcript.model or default_model
                times[(model, call.prompt_cache_key)].append((at, (number, index)))
    rates = []
    for (model, key), seen in times.items():
        seen.sort()
        moments = [at for at, _ in seen]
        # The simulator's window, (now - 60 s, now]: a call exactly 60 s before is out.
        peak = max(
            index - bisect_right(moments, at - RATE_WINDOW_SECONDS, 0, index) + 1
            for index, at in enumerate(moments)
        )
        rates.append(KeyRate(model, key, peak, [ref for _, ref in seen]))
    return sorted(rates, key=lambda r: (-r.peak_rpm, r.key or ""))


def _shard_keys(
    transcripts: Sequence[Transcript], overflowing: list[KeyRate], limit: int
) -> list[Transcript]:
    """Each overflowing key split into enough keys to stay under the limit, a conversation
    keeping one key (its own prefix stays on one machine)."""
    shards = {(r.model, r.key): math.ceil(r.peak_rpm / limit) for r in overflowing}
    changed = []
    for number, transcript in enumerate(transcripts):
        calls = []
        for call in _calls(transcript):
            model = call.model or transcript.model
            count = shards.get((model, call.prompt_cache_key))
            if count:
                key = f"{call.prompt_cache_key or 'shared'}-{number % count}"
                call = dataclasses.replace(call, prompt_cache_key=key)
            calls.append(call)
        changed.append(dataclasses.replace(transcript, calls=calls))
    return changed


def _stable_keys(transcripts: Sequence[Transcript]) -> tuple[list[Transcript], list[CallRef]]:
    """One prompt_cache_key per conversation where calls had none or it changed."""
    changed: list[Transcript] = []
    about: list[CallRef] = []
    for number, transcript in enumerate(transcripts):
        calls = _calls(transcript)
        keys = {c.prompt_cache_key for c in calls}
        if calls and (None in keys or len(keys) > 1):
            about.extend((number, n) for n in range(len(calls)))
            stable = f"conversation-{transcript.external_id or number}"
            calls = [dataclasses.replace(c, prompt_cache_key=stable) for c in calls]
        changed.append(dataclasses.replace(transcript, calls=list(calls)))
    return changed, about


def _extended(
    transcripts: Sequence[Transcript], analysis: Analysis, policy_for: PolicyFor
) -> tuple[list[Transcript], list[CallRef]]:
    """Extended retention on every call of a model that offers it, where calls expired."""
    expired = [
        (c.conversation, c.index, c.model)
        for conversation in analysis.conversations
        for c in conversation.calls
        if c.miss_reason is not None and c.miss_reason.kind == "expired"
    ]
    models = {model for _, _, model in expired if policy_for(model).extended_retention}
    changed = []
    for transcript in transcripts:
        calls = [
            dataclasses.replace(c, cache_retention="24h")
            if (c.model or transcript.model) in models
            else c
            for c in _calls(transcript)
        ]
        changed.append(dataclasses.replace(transcript, calls=calls))
    return changed, [(n, i) for n, i, model in expired if model in models]


def find_fixes(
    transcripts: Sequence[Transcript],
    simulation: Simulation,
    *,
    long_conversation: int = LONG_CONVERSATION_CALLS,
) -> list[Fix]:
    """The fixes that would have saved money on these calls, largest saving first."""
    base = simulated(transcripts)
    baseline = simulation.run(base)
    before = _cost(baseline)
    fixes: list[Fix] = []

    moved, about = _move_volatile(base)
    if about:
        fixes.append(
            Fix(
                "move_volatile",
                "Move timestamps and ids after the static prefix",
                "Put the system prompt's changing parts (dates, times, request or user ids) "
                "at its end or in a later message, so every conversation shares the static part.",
                before,
                _cost(simulation.run(moved)),
                about,
            )
        )

    rates = key_rates(base)
    overflowing = [
        r
        for r in rates
        if simulation.policy_for(r.model).caches
        and r.peak_rpm > simulation.policy_for(r.model).overflow_rpm
    ]
    if overflowing:
        limit = min(simulation.policy_for(r.model).overflow_rpm for r in overflowing)
        fixes.append(
            Fix(
                "key_overflow",
                f"Keep each prompt_cache_key under {limit} requests per minute",
                "Above about 15 requests a minute on one prefix and key, requests overflow to "
                "machines with a cold cache: split the busy keys (one per conversation or "
                "per group of users) so each stays under the rate.",
                before,
                _cost(simulation.run(_shard_keys(base, overflowing, limit))),
                [ref for r in overflowing for ref in r.calls],
                [
                    f"{r.key if r.key is not None else '(no key)'} on {r.model}: "
                    f"{r.peak_rpm} requests/minute at peak"
                    for r in overflowing
                ],
            )
        )

    keyed, about = _stable_keys(base)
    if about:
        fixes.append(
            Fix(
                "stable_key",
                "Set a stable prompt_cache_key per conversation",
                "Calls without a prompt_cache_key, or whose key changes within a conversation, "
                "route by their first tokens alone: a stable key keeps a conversation's "
                "prefix on the machine that cached it.",
                before,
                _cost(simulation.run(keyed)),
                about,
            )
        )

    extended, about = _extended(base, baseline, simulation.policy_for)
    if about:
        fixes.append(
            Fix(
                "extended_retention",
                "Ask for extended retention (prompt_cache_retention: 24h)",
                "Calls came back after the cache had expired; on models that offer it, "
                "extended retention keeps the prefix up to 24 hours.",
                before,
                _cost(simulation.run(extended)),
                about,
            )
        )

    long = [n for n, t in enumerate(base) if len(_calls(t)) > long_conversation]
    if long:
        full = window = Decimal(0)
        priced = True
        for number in long:
            results = compare_strategies(
                base[number],
                ["full", f"window:{WINDOW_MESSAGES}"],
                profile_for=simulation.profile_for,
                rates_for=simulation.rates_for,
                retention_seconds=simulation.retention_seconds,
                org=simulation.org,
                policy_for=simulation.policy_for,
            )
            if results[0].cost is None or results[1].cost is None:
                priced = False
                break
            full += results[0].cost
            window += results[1].cost
        fixes.append(
            Fix(
                "context_strategy",
                f"Bound the context of conversations over {long_conversation} calls",
                f"Send the system prompt and the latest {WINDOW_MESSAGES} messages (or a "
                "summary) instead of the whole history: each call's prompt stops growing.",
                full if priced else None,
                window if priced else None,
                [(n, i) for n in long for i in range(len(_calls(base[n])))],
            )
        )
    return sorted(
        (f for f in fixes if f.saving is not None and f.saving > 0),
        key=lambda f: -(f.saving or Decimal(0)),
    )
