"""Context strategies compared on one transcript (design.md 2.7).

Owns: context strategies (full, window, trim, summarize), planned and compared.

Each strategy rewrites the transcript's calls (requests as message-index lists, plus synthetic
summary messages) and the result goes through the same `analyze()`: same counting, same cache
simulation, same pricing. Reported usage is dropped in every strategy, `full` included, so the
strategies are compared on equal (estimated) terms.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from .analysis import (
    ConversationAnalysis,
    PolicyFor,
    ProfileFor,
    RatesFor,
    analyze,
    turns_from_messages,
)
from .cache_policy import default_policy
from .messages import SYNTHETIC_TOKENS_KEY, EncodingCache, MessageTokens, encode_message
from .render import (
    encode_header,
    forced_call_tokens,
    priming_tokens,
    responses_result_tokens,
    structured_reply_tokens,
    system_tail,
)
from .types import Call, ChatMessage, Transcript, prompt_simulated

StrategyKind = Literal["full", "window", "trim", "summarize"]
DEFAULT_SUMMARY_TOKENS = 500
_SYSTEM_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True, slots=True)
class Strategy:
    kind: StrategyKind
    size: int = 0  # window: messages kept; trim: token budget; summarize: threshold
    summary_tokens: int = DEFAULT_SUMMARY_TOKENS  # assumed size of each summary

    @property
    def label(self) -> str:
        return self.kind if self.kind == "full" else f"{self.kind}:{self.size}"

    @property
    def description(self) -> str:
        """What the strategy sends, in words (the label is what a command line takes)."""
        if self.kind == "full":
            return "every message, as recorded"
        if self.kind == "window":
            return f"the system prompt and the last {self.size:,} messages"
        if self.kind == "trim":
            return f"the oldest messages dropped to stay under {self.size:,} tokens"
        return f"older messages folded into a summary past {self.size:,} tokens"


def parse_strategy(text: str, *, summary_tokens: int = DEFAULT_SUMMARY_TOKENS) -> Strategy:
    """Parse "full", "window:8", "trim:6000" or "summarize:8000" (optionally
    "summarize:8000:300" to set the assumed summary size)."""
    match = re.fullmatch(r"\s*(full|window|trim|summarize)(?::(\d+))?(?::(\d+))?\s*", text)
    if not match or (match[1] != "full") != (match[2] is not None):
        raise ValueError(
            f"strategy {text!r}: expected full, window:K, trim:TOKENS, summarize:TOKENS"
        )
    if match[3] is not None and match[1] != "summarize":
        raise ValueError(f"strategy {text!r}: only summarize takes a summary size")
    kind: StrategyKind = match[1]  # type: ignore[assignment]
    size = int(match[2] or 0)
    if kind != "full" and size <= 0:
        raise ValueError(f"strategy {text!r}: the size must be positive")
    return Strategy(kind, size, int(match[3]) if match[3] else summary_tokens)


@dataclass(frozen=True, slots=True)
class Plan:
    transcript: Transcript  # messages (plus synthetic summaries) and the strategy's calls
    summary_calls: frozenset[int]  # indices of the extra summary calls


class _Sizer:
    """Prompt sizes of candidate requests from message lengths (each message encoded once)."""

    def __init__(self, messages: MessageTokens) -> None:
        self.messages = messages
        self._priming = len(priming_tokens(messages.profile))
        self._headers: dict[str, int] = {}

    def header(self, call: Call, *, after_system: str | None = ".") -> int:
        if not call.tools and not call.response_format:
            return 0
        key = json.dumps(
            [call.tools, call.response_format, after_system, call.responses_api],
            sort_keys=True,
            default=str,
        )
        if key not in self._headers:  # tools repeat on every call: encode them once
            profile = self.messages.profile
            header = encode_header(
                call.tools,
                call.response_format,
                profile,
                after_system=after_system,
                responses_api=call.responses_api,
            )
            self._headers[key] = len(header)
        return self._headers[key]

    def request(self, call: Call, indices: Sequence[int]) -> int:
        first = [self.messages.messages[indices[0]]] if indices else []
        total = self.header(call, after_system=system_tail(first)) + self._priming
        profile = self.messages.profile
        if call.tool_choice is not None:
            total += len(forced_call_tokens(call.tool_choice, profile))
        if call.response_format is not None:
            replies = (self.messages.messages[i] for i in indices)
            total += len(structured_reply_tokens(call.response_format, replies, profile))
        if call.responses_api:
            requested = (self.messages.messages[i] for i in indices)
            total += len(responses_result_tokens(requested, profile, call.responses_api))
        return total + sum(self.messages.length(i) for i in indices)


def _split(messages: list[ChatMessage], request: Sequence[int]) -> tuple[list[int], list[int]]:
    system = [i for i in request if messages[i].get("role") in _SYSTEM_ROLES]
    others = [i for i in request if messages[i].get("role") not in _SYSTEM_ROLES]
    return system, others


def _window(messages: list[ChatMessage], call: Call, size: int) -> list[int]:
    system, others = _split(messages, call.request)
    return system + others[-size:]


def _trim(messages: list[ChatMessage], call: Call, budget: int, sizer: _Sizer) -> list[int]:
    """Drop the oldest non-system messages until the prompt fits; keep the last one always."""
    system, others = _split(messages, call.request)
    total = sizer.request(call, system)
    kept: list[int] = []
    for index in reversed(others):
        length = sizer.messages.length(index)
        if kept and total + length > budget:
            break
        kept.append(index)
        total += length
    return system + kept[::-1]


def _strip(call: Call, request: list[int]) -> Call:
    return prompt_simulated(call, request=request)


def _summarize(
    transcript: Transcript, calls: list[Call], strategy: Strategy, sizer: _Sizer
) -> Plan:
    """When a request exceeds the threshold, one extra call folds everything but the newest
    turn's input (and the previous summary) into a summary of assumed size; later requests
    send system + summary + the messages after the fold."""
    messages = list(transcript.messages)
    out: list[Call] = []
    summaries: set[int] = set()
    carried: list[int] = []  # the current summary message, once there is one
    carried_tokens = 0
    cut = 0  # non-system messages before this index are folded
    for call in calls:
        system, others = _split(messages, call.request)
        rest = [i for i in others if i >= cut]
        request = system + carried + rest
        if sizer.request(call, system + rest) + carried_tokens > strategy.size:
            keep = len(rest)
            while keep > 0 and messages[rest[keep - 1]].get("role") != "assistant":
                keep -= 1  # the trailing non-assistant messages are the new turn's input
            folded = rest[:keep]
            if folded:
                # The summary call asks for it: replayed against a real model (calls/
                # experiments), the folded messages alone would get a reply, not a summary.
                messages.append(_summary_request(strategy.summary_tokens))
                ask = len(messages) - 1
                summary = _summary_message(len(summaries) + 1, strategy.summary_tokens)
                messages.append(summary)
                summaries.add(len(out))
                out.append(_summary_call(call, [*carried, *folded, ask], len(messages) - 1))
                carried = [len(messages) - 1]
                carried_tokens = encode_message(summary, sizer.messages.profile).length
                cut = folded[-1] + 1
                request = system + carried + rest[keep:]
        out.append(_strip(call, request))
    planned = dataclasses.replace(transcript, messages=messages, calls=out)
    return Plan(planned, frozenset(summaries))


def _summary_request(tokens: int) -> ChatMessage:
    return {
        "role": "user",
        "content": (
            f"Summarize the conversation above in at most {tokens} tokens. Keep every fact, "
            "decision and open question the rest of the conversation may need."
        ),
    }


def _summary_message(number: int, tokens: int) -> ChatMessage:
    # Only its size is assumed; the content just keeps successive summaries distinct.
    return {
        "role": "system",
        "content": f"summary {number} of the earlier conversation",
        SYNTHETIC_TOKENS_KEY: tokens,
    }


def _summary_call(call: Call, request: list[int], response: int) -> Call:
    return Call(
        request=request,
        response=response,
        model=call.model,
        prompt_cache_key=call.prompt_cache_key,
        service_tier=call.service_tier,
        started_at=call.started_at,
        batch=call.batch,
        location=call.location,
    )


def plan_strategy(
    transcript: Transcript,
    strategy: Strategy,
    *,
    profile_for: ProfileFor,
    default_model: str | None = None,
    encoding_cache: EncodingCache | None = None,
) -> Plan:
    calls = (
        transcript.calls
        if transcript.calls is not None
        else turns_from_messages(transcript.messages)
    )
    if strategy.kind == "full":
        stripped = [_strip(call, list(call.request)) for call in calls]
        return Plan(dataclasses.replace(transcript, calls=stripped), frozenset())
    if strategy.kind == "window":
        planned = [_strip(c, _window(transcript.messages, c, strategy.size)) for c in calls]
        return Plan(dataclasses.replace(transcript, calls=planned), frozenset())
    profile = profile_for(transcript.model or default_model)
    sizer = _Sizer(MessageTokens(transcript.messages, profile, encoding_cache))
    if strategy.kind == "trim":
        planned = [_strip(c, _trim(transcript.messages, c, strategy.size, sizer)) for c in calls]
        return Plan(dataclasses.replace(transcript, calls=planned), frozenset())
    return _summarize(transcript, calls, strategy, sizer)


@dataclass(frozen=True, slots=True)
class StrategyResult:
    strategy: Strategy
    analysis: ConversationAnalysis
    summary_calls: int  # extra calls made by `summarize`, included in every figure below
    calls: int
    cost: Decimal | None
    cost_no_cache: Decimal | None
    cached_share: float | None  # cached / prompt tokens
    request_hit_rate: float | None
    peak_prompt_tokens: int
    over_context_calls: int


def compare_strategies(
    transcript: Transcript,
    strategies: Sequence[str | Strategy],
    *,
    profile_for: ProfileFor,
    rates_for: RatesFor,
    retention_seconds: int,
    org: str = "default",
    default_model: str | None = None,
    policy_for: PolicyFor = default_policy,
) -> list[StrategyResult]:
    """Analyse the same transcript under each strategy (each with a cold cache of its own)."""
    cache = EncodingCache()  # the strategies re-send the same message dicts: encode once
    results = []
    for item in strategies:
        strategy = parse_strategy(item) if isinstance(item, str) else item
        plan = plan_strategy(
            transcript,
            strategy,
            profile_for=profile_for,
            default_model=default_model,
            encoding_cache=cache,
        )
        analysis = analyze(
            [plan.transcript],
            profile_for=profile_for,
            rates_for=rates_for,
            retention_seconds=retention_seconds,
            org=org,
            default_model=default_model,
            encoding_cache=cache,
            policy_for=policy_for,
        ).conversations[0]
        totals = analysis.totals
        results.append(
            StrategyResult(
                strategy=strategy,
                analysis=analysis,
                summary_calls=len(plan.summary_calls),
                calls=totals.calls,
                cost=totals.cost,
                cost_no_cache=totals.metrics.cost_no_cache,
                cached_share=totals.metrics.token_hit_rate,
                request_hit_rate=totals.metrics.request_hit_rate,
                peak_prompt_tokens=totals.peak_prompt_tokens,
                over_context_calls=totals.over_context_calls,
            )
        )
    return results
