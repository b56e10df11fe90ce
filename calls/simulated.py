"""What costlab's engine bills for one request to the built-in endpoint (design.md 2.9).

Every use of the engine by the endpoint is in this module, so that it follows the engine
when its renderer or its cache policies change: `simulate_usage` renders the request with the
same renderer the analysis uses (prompt tokens), runs it through the same CacheSimulator
(cached tokens), and writes a deterministic reply of a known token length (completion).

State lives in this process, per simulated organization (one per endpoint key): its prompt
cache, for the retention simulated, and each message it has sent already encoded, so a call
tokenizes only its new messages (the history is looked up, then hashed block by block).
The endpoint is meant to be served by one process (threads are fine): another process would
keep a cache of its own.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from conversations.engine.breakpoints import BreakpointSimulator
from conversations.engine.cache import CacheResult, CacheSimulator, MissReason
from conversations.engine.cache_policy import CachePolicy
from conversations.engine.messages import EncodingCache
from conversations.engine.profiles import ModelProfile
from conversations.engine.render import RenderedRequest, TranscriptRenderer
from conversations.engine.types import ChatMessage
from conversations.engine.vocabulary import get_encoding

# An organization that has sent this many distinct messages starts encoding afresh (its
# prompt cache stays): bounds the memory of a long-running endpoint.
MAX_MESSAGES_PER_ORG = 50_000
# Replies longer than this are cut here (finish_reason "length"), whatever was asked.
MAX_REPLY_TOKENS = 16_384

_WORDS = (
    "the cache keeps every prefix it has seen for a while so the next request that starts "
    "the same way pays less for its tokens and answers sooner than a cold one would this "
    "reply is written by costlab to stand in for a model it counts exactly what was billed "
    "and nothing more history grows with each turn because every call sends all of it again"
).split()


@dataclass(frozen=True, slots=True)
class SimulatedCall:
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    write_tokens: int | None  # None: the policy does not report writes
    reply: str
    finish_reason: str
    miss: str | None  # why the prompt was not (fully) cached, in words

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def usage(self) -> dict[str, Any]:
        """The `usage` object of the response, in the API's shape."""
        details: dict[str, int] = {"cached_tokens": self.cached_tokens, "audio_tokens": 0}
        if self.write_tokens is not None:  # breakpoint models report what they wrote
            details["cache_write_tokens"] = self.write_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": details,
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


@dataclass(slots=True)
class _Organization:
    """One simulated organization's encoded messages: each distinct message object once."""

    messages: dict[Any, ChatMessage] = field(default_factory=dict)
    encodings: EncodingCache = field(default_factory=EncodingCache)

    def intern(self, message: ChatMessage) -> ChatMessage:
        """The first message object seen with this content: its encoding is cached by
        identity (EncodingCache), so a re-sent message is never tokenized again."""
        if len(self.messages) >= MAX_MESSAGES_PER_ORG:
            self.messages.clear()
            self.encodings = EncodingCache()
        content = message.get("content")
        if len(message) == 2 and isinstance(content, str):  # the usual {"role", "content"}
            key: Any = (message.get("role"), content)
        else:
            key = json.dumps(message, sort_keys=True, default=str)
        return self.messages.setdefault(key, message)


# The breakpoint simulator reads a prompt's cut points, which the renderer offers once the
# engine's breakpoint rendering is in; until then breakpoint models are simulated as prefix.
_BREAKPOINTS_RENDERED = hasattr(RenderedRequest, "cut_points")


class _Endpoint:
    """The simulators of this process, one per cache policy (as the engine's analysis keeps
    them: models of different policies never share entries), and the organizations."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.prefix: dict[tuple[CachePolicy, int], CacheSimulator] = {}
        self.breakpoints: dict[CachePolicy, BreakpointSimulator] = {}
        self.organizations: dict[str, _Organization] = {}

    def process(
        self,
        rendered: RenderedRequest,
        *,
        policy: CachePolicy,
        retention_seconds: int,
        scope: str,
        body: dict[str, Any],
        now: float,
    ) -> CacheResult:
        """Mirrors the engine's analysis (analysis._Simulators.process) for one request."""
        if not policy.caches:
            return CacheResult(0, MissReason("not_supported"))
        options = body.get("prompt_cache_options")
        options = options if isinstance(options, dict) else None
        ttl = policy.ttl_for(body.get("prompt_cache_retention"), options)
        key = body.get("prompt_cache_key")
        if policy.kind == "breakpoints" and _BREAKPOINTS_RENDERED:
            simulator = self.breakpoints.get(policy)
            if simulator is None:
                simulator = self.breakpoints[policy] = BreakpointSimulator(policy)
            return simulator.process(
                rendered,  # type: ignore[arg-type]  # cut_points: see _BREAKPOINTS_RENDERED
                org=scope,
                prompt_cache_key=key,
                at=now,
                explicit_only=(options or {}).get("mode") == "explicit",
                ttl_seconds=ttl,
            )
        prefix = self.prefix.get((policy, retention_seconds))
        if prefix is None:
            step = policy.step_tokens if policy.kind == "prefix" else 128
            prefix = self.prefix[(policy, retention_seconds)] = CacheSimulator(
                retention_seconds,
                rpm_limit=policy.overflow_rpm,
                routing_tokens=policy.routing_tokens,
                minimum=policy.min_tokens,
                hit_step=step,
            )
        return prefix.process(rendered, org=scope, prompt_cache_key=key, at=now, ttl_seconds=ttl)


_STATE = _Endpoint()


def simulate_reset() -> None:
    """Forget every simulated organization (tests; a restart does the same)."""
    global _STATE
    _STATE = _Endpoint()


def simulate_usage(
    *,
    org_key: str,
    body: dict[str, Any],
    now: float,
    profile: ModelProfile,
    policy: CachePolicy,
    retention_seconds: int,
    default_reply_tokens: int,
) -> SimulatedCall:
    """The usage costlab bills for `body` (a chat-completions request) sent at `now` (epoch
    seconds) by the simulated organization `org_key`, and the reply that goes with it.
    `policy` is the model's cache policy, `retention_seconds` the scenario's idle lifetime
    of cache entries (as analyze's)."""
    state = _STATE
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    wanted = int(limit) if limit else default_reply_tokens
    length = min(wanted, MAX_REPLY_TOKENS)
    raw_messages: Sequence[ChatMessage] = body["messages"]
    model = str(body.get("model") or "")
    with state.lock:  # the renderer and the simulators are not thread-safe
        organization = state.organizations.setdefault(org_key, _Organization())
        messages = [organization.intern(m) for m in raw_messages]
        renderer = TranscriptRenderer(messages, profile, cache=organization.encodings)
        rendered = renderer.render(
            list(range(len(messages))),
            tools=body.get("tools") or None,
            response_format=body.get("response_format") or None,
        )
        outcome = state.process(
            rendered,
            policy=policy,
            retention_seconds=retention_seconds,
            scope=f"{org_key}\x00{model}",  # as the analysis: a model's cache is its own
            body=body,
            now=now,
        )
    reply = reply_text(profile.encoding, length, seed=_seed(raw_messages))
    return SimulatedCall(
        prompt_tokens=rendered.length,
        cached_tokens=outcome.cached_tokens,
        completion_tokens=length,
        write_tokens=outcome.write_tokens if policy.writes_billed else None,
        reply=reply,
        # A reply cut at the request's limit (or ours) ends for "length", as on the API.
        finish_reason="length" if limit or wanted > MAX_REPLY_TOKENS else "stop",
        miss=outcome.reason.describe() if outcome.reason is not None else None,
    )


def _seed(messages: Sequence[ChatMessage]) -> int:
    last = json.dumps(messages[-1] if messages else None, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(last.encode()).digest()[:8], "big")


@cache
def _one_token_words(encoding: str) -> tuple[str, ...]:
    """Words that are one token each, with their leading space, in this encoding."""
    enc = get_encoding(encoding)
    words = tuple(sorted({w for w in _WORDS if len(enc.encode_ordinary(" " + w)) == 1}))
    return words or (" the",)


def reply_text(encoding: str, tokens: int, *, seed: int) -> str:
    """A deterministic reply of exactly `tokens` tokens in `encoding` (as a message body)."""
    if tokens <= 0:
        return ""
    words = _one_token_words(encoding)
    rng = random.Random(seed)
    text = "".join(" " + rng.choice(words) for _ in range(tokens))
    if len(get_encoding(encoding).encode_ordinary(text)) != tokens:  # pragma: no cover
        text = " the" * tokens  # a merge across words: fall back to the plainest text
    return text
