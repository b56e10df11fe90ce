"""What costlab's engine bills for one request to the built-in endpoint (design.md 2.9).

Every use of the engine by the endpoint is in this module, so that it follows the engine
when its renderer or its cache policies change: `simulate_usage` renders the request with the
same renderer the analysis uses (prompt tokens), runs it through the same CacheSimulator
(cached tokens), and writes a deterministic reply of a known token length (completion).

State lives in this process, per simulated organization (one per endpoint key): its prompt
cache, for the retention simulated, and each message it has sent already encoded, so a call
tokenizes only its new messages (the history is compared with the previous request's in one
C-level list comparison, then only the new messages are encoded and hashed block by block).
The endpoint is meant to be served by one process (threads are fine): another process would
keep a cache of its own.
"""

from __future__ import annotations

import json
import random
import threading
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import accumulate
from types import MappingProxyType
from typing import Any

from conversations.engine.breakpoints import BreakpointSimulator
from conversations.engine.cache import CacheResult, CacheSimulator, MissReason
from conversations.engine.cache_policy import CachePolicy
from conversations.engine.messages import (
    EncodedMessage,
    EncodingCache,
    ParallelResult,
    encode_plain_known,
    parallel_results,
)
from conversations.engine.profiles import ModelProfile
from conversations.engine.render import RenderedRequest, TranscriptRenderer
from conversations.engine.sequences import TOKEN_BYTES, pack
from conversations.engine.types import ChatMessage
from conversations.engine.vocabulary import get_encoding

from .request_body import BodyReader

# An organization that has sent this many distinct messages starts encoding afresh (its
# prompt cache stays): bounds the memory of a long-running endpoint.
MAX_MESSAGES_PER_ORG = 50_000
# A thread's arena of message slots, and the threads an organization keeps (the least
# recently used go first): a long-running endpoint keeps a bounded memory.
ARENA_SLOTS = 4096
THREADS_PER_ORG = 64
# Replies longer than this are cut here (finish_reason "length"), whatever was asked.
MAX_REPLY_TOKENS = 16_384
# Replies an organization was sent and may send back, their tokens known (the oldest go first
# past this many: a client that drops them costs no memory).
WRITTEN_PER_ORG = 1024

_WORDS = (
    "the cache keeps every prefix it has seen for a while so the next request that starts "
    "the same way pays less for its tokens and answers sooner than a cold one would this "
    "reply is written by costlab to stand in for a model it counts exactly what was billed "
    "and nothing more history grows with each turn because every call sends all of it again"
).split()


@dataclass(slots=True)  # a value, but built per call: a frozen init costs a setattr per field
class SimulatedCall:
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    write_tokens: int | None  # None: the policy does not report writes
    reply: str
    finish_reason: str
    reason: MissReason | None  # why the prompt was not (fully) cached

    @property
    def miss(self) -> str | None:
        """Why the prompt was not (fully) cached, in words."""
        return self.reason.describe() if self.reason is not None else None

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


_VACANT: ChatMessage = {}


class _Thread:
    """One line of conversation of an organization, rendered incrementally: its messages sit
    in a fixed arena of slots that one TranscriptRenderer reads, so a request that extends
    the previous one renders only its new messages (the renderer keeps the chain of block
    hashes); a request that branches forks the chain at the branch."""

    def __init__(self, profile: ModelProfile, encodings: EncodingCache, cut_points: bool) -> None:
        # Unused slots all hold one empty message, never changed (a slot is replaced): a new
        # line costs no dict per slot. Nor a scan of them for parallel tool results (there is
        # none yet): the renderer starts with no slot placed as one.
        self.slots: list[ChatMessage] = [_VACANT] * ARENA_SLOTS
        # id(interned message) -> its slot; (id, place) for a result of a parallel call
        self.slot_of: dict[object, int] = {}
        self.used = 0
        self.parallel: dict[int, ParallelResult] = {}
        # Breakpoint policies read where a cached prefix may end: the renderer tracks it.
        self.renderer = TranscriptRenderer(
            self.slots, profile, cache=encodings, cut_points=cut_points, parallel=self.parallel
        )
        self.profile, self.cuts = profile, cut_points
        # The encodings of this line's profile (a profile hashes 16 fields: looked up once).
        self.items = encodings.items(profile)
        # The previous request's messages as interned (equal to those it sent, and kept
        # anyway by the arena): holding the request's own dicts instead would leave freeing
        # them to the next call. And each one's slot.
        self.last_messages: list[ChatMessage] = []
        self.last_slots: list[int] = []
        # The previous request's message list as received (the body reader's, whose
        # requests it grows), and whether the renderer rendered it whole.
        self.last_raw: Sequence[ChatMessage] | None = None
        self.rendered = False
        self.known = 0  # the part of the request being rendered that the renderer had last

    def extends(self, raw: Sequence[ChatMessage], base: Sequence[ChatMessage] | None) -> bool:
        """Whether the request repeats this line's previous request and adds to it. The body
        reader names the list a request grows (`base`, its very messages): when it is this
        line's previous request, nothing is compared; else one C-level comparison of the
        messages (exact, and the only look at the history)."""
        known = len(self.last_messages)
        if base is not None and base is self.last_raw:
            return bool(known)
        return bool(known) and len(raw) >= known and raw[:known] == self.last_messages

    def indices(
        self,
        raw: Sequence[ChatMessage],
        organization: _Organization,
        *,
        extends: bool | None = None,
        base: Sequence[ChatMessage] | None = None,
    ) -> list[int] | None:
        """The slots of a request's messages (None when the arena is full). The part that
        repeats the previous request keeps its slots (`extends`: already compared). A result
        of a parallel tool call has a slot of its own per place among its call's results:
        its tokens depend on it (messages.encode_parallel_result)."""
        if extends is None:
            extends = self.extends(raw, base)
        start = len(self.last_messages) if extends else 0
        rendered, self.rendered = self.rendered, False
        places = _places(raw, start)
        if (
            start
            and places
            and any(
                self.parallel.get(self.last_slots[at]) != place
                for at, place in _before(places, start)
            )
        ):  # results sent one by one: the one that was last no longer is
            start, places = 0, _places(raw, 0)
        if start:
            messages, slots = self.last_messages, self.last_slots  # grown in place
        else:
            messages, slots = [], []
        intern, slot_of = organization.intern, self.slot_of
        for at in range(start, len(raw)):
            interned = intern(raw[at])
            place = places.get(at) if places else None
            key: object = id(interned) if place is None else (id(interned), place)
            slot = slot_of.get(key)
            if slot is None:
                slot = self.used
                if slot == ARENA_SLOTS:
                    self.last_messages, self.last_slots = [], []  # partly grown: start over
                    self.last_raw = None
                    return None
                slot_of[key] = slot
                self.slots[slot] = interned
                if place is not None:
                    self.parallel[slot] = place
                self.used = slot + 1
            messages.append(interned)
            slots.append(slot)
        self.last_messages, self.last_slots, self.last_raw = messages, slots, raw
        # The renderer's previous request is slots[:start] when it rendered the previous one.
        self.known = start if rendered else 0
        return slots


# What _places finds on most turns: shared (read only), not a new dict a call (with
# _snapshot's empty tail, 415 instructions fewer a call of bench/calls.py's endpoint,
# valgrind, 0.13 %).
_NO_PLACES: Mapping[int, ParallelResult] = MappingProxyType({})


def _places(raw: Sequence[ChatMessage], start: int) -> Mapping[int, ParallelResult]:
    """Where each result of a parallel tool call in raw[start:] stands among its call's
    results, by position in the request, as parallel_results finds it in the whole request:
    read from the assistant message that made the call, when the results began before
    `start`. Most turns add no tool result: nothing to read."""
    for at in range(start, len(raw)):
        if raw[at].get("role") == "tool":
            break
    else:
        return _NO_PLACES
    first = start
    while first and raw[first - 1].get("role") == "tool":
        first -= 1
    if first and raw[first - 1].get("role") == "assistant":
        first -= 1
    return {first + at: place for at, place in parallel_results(list(raw[first:])).items()}


def _before(places: Mapping[int, ParallelResult], start: int) -> list[tuple[int, ParallelResult]]:
    return [(at, place) for at, place in places.items() if at < start]


@dataclass(slots=True)
class _Organization:
    """One simulated organization: each distinct message object once, and its threads."""

    messages: dict[Any, ChatMessage] = field(default_factory=dict)
    encodings: EncodingCache = field(default_factory=EncodingCache)
    threads: OrderedDict[tuple[Any, ...], _Thread] = field(default_factory=OrderedDict)
    # The thread of the latest request: the next one usually continues it, and is then
    # recognised by the one comparison of its history (no key to build or hash).
    latest: _Thread | None = None
    scopes: dict[str, str] = field(default_factory=dict)  # model -> simulator scope
    # Its requests' bodies as parsed, so a re-sent history is compared as bytes, not parsed.
    bodies: BodyReader = field(default_factory=BodyReader)
    # The replies written to it and not yet sent back, by their text's hash (a few numbers
    # each, not the text: a reply may be 16,384 tokens): the encodings of the profile that
    # wrote it, that profile, and the words of its tape it spans.
    written: dict[
        int, tuple[dict[int, tuple[ChatMessage, EncodedMessage]], ModelProfile, int, int]
    ] = field(default_factory=dict)

    def scope(self, org_key: str, model: str) -> str:
        """As the analysis: a model's cache is its own (one string per model, kept)."""
        scope = self.scopes.get(model)
        if scope is None:
            scope = self.scopes[model] = f"{org_key}\x00{model}"
        return scope

    def intern(self, message: ChatMessage) -> ChatMessage:
        """The first message object seen with this content: its encoding is cached by
        identity (EncodingCache), so a re-sent message is never tokenized again."""
        if len(self.messages) >= MAX_MESSAGES_PER_ORG:
            self.messages.clear()
            self.threads.clear()
            self.written.clear()
            self.latest = None
            self.encodings = EncodingCache()
        content = message.get("content")
        if len(message) == 2 and isinstance(content, str):  # the usual {"role", "content"}
            role = message.get("role")
            interned = self.messages.setdefault((role, content), message)
            if role == "assistant" and self.written:
                self._known(interned, content)
            return interned
        return self.messages.setdefault(json.dumps(message, sort_keys=True, default=str), message)

    def _known(self, message: ChatMessage, content: str) -> None:
        """A reply this endpoint wrote, sent back as an assistant message: its encoding is
        put in its profile's cache from the tokens it was cut from, not encoded again. Found
        by its text's hash (cached by the string: interning computed it), then compared
        with the tape's words byte for byte; another text is encoded as any message is."""
        known = self.written.pop(hash(content), None)
        if known is None:
            return
        items, profile, start, end = known
        text, offsets, packed = _tape(profile.encoding)
        begin = offsets[start]
        if len(content) != offsets[end] - begin or not text.startswith(content, begin):
            return
        encoded = encode_plain_known(
            "assistant", packed[start * TOKEN_BYTES : end * TOKEN_BYTES], profile
        )
        if encoded is not None:
            items[id(message)] = (message, encoded)

    def wrote(self, reply: str, start: int, end: int, profile: ModelProfile) -> None:
        """The reply written to the latest request: words start to end of the tape."""
        latest, written = self.latest, self.written
        if latest is None or start == end or latest.profile is not profile:
            return
        if len(written) >= WRITTEN_PER_ORG:
            del written[next(iter(written))]  # the oldest
        written[hash(reply)] = (latest.items, profile, start, end)

    def _thread(
        self,
        raw: Sequence[ChatMessage],
        profile: ModelProfile,
        cuts: bool,
        base: Sequence[ChatMessage] | None,
    ) -> tuple[_Thread, list[int]]:
        """The thread its first two messages name, made or renewed when needed, and the
        request's slots in it."""
        head = tuple(id(self.intern(m)) for m in raw[:2])
        key = (profile, cuts, *head)
        thread = self.threads.get(key)
        slots = thread.indices(raw, self, base=base) if thread is not None else None
        if thread is None or slots is None:  # a new line, or its arena is full
            thread = _Thread(profile, self.encodings, cuts)
            slots = thread.indices(raw, self)
            if slots is None:
                raise ValueError(f"a request of more than {ARENA_SLOTS} messages")
        self.threads[key] = thread  # (again: interning may have started the threads afresh)
        self.threads.move_to_end(key)
        while len(self.threads) > THREADS_PER_ORG:
            self.threads.popitem(last=False)
        return thread, slots

    def render(
        self,
        raw: Sequence[ChatMessage],
        profile: ModelProfile,
        policy: CachePolicy,
        body: dict[str, Any],
        base: Sequence[ChatMessage] | None = None,
    ) -> RenderedRequest:
        """The request rendered by the thread of the latest request when it continues it,
        else by the thread its first two messages name (a conversation and its system
        prompt, usually), made or renewed when needed. `base`: the list the request's
        messages grow, as the body reader read them (the previous request's), if any."""
        cuts = policy.kind == "breakpoints"
        latest, slots = self.latest, None
        # The usual next turn: the same line as the latest request, a bit longer.
        if latest is not None and latest.profile is profile and latest.cuts == cuts:
            slots = latest.indices(raw, self, extends=True) if latest.extends(raw, base) else None
        if latest is None or slots is None:
            latest, slots = self._thread(raw, profile, cuts, base)
        thread = self.latest = latest
        rendered = thread.renderer.render(
            slots,
            tools=body.get("tools") or None,
            response_format=body.get("response_format") or None,
            tool_choice=body.get("tool_choice") or None,
            known=thread.known,
        )
        thread.rendered = True
        return rendered


class _Endpoint:
    """The simulators of this process, one per cache policy (as the engine's analysis keeps
    them: models of different policies never share entries), and the organizations."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.prefix: dict[tuple[CachePolicy, int], CacheSimulator] = {}
        self.breakpoints: dict[CachePolicy, BreakpointSimulator] = {}
        self.organizations: dict[str, _Organization] = {}
        # The latest (policy, retention, simulator): a policy hashes 13 fields to be looked up.
        self.latest_prefix: tuple[CachePolicy, int, CacheSimulator] | None = None

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
        if policy.kind == "none":  # (policy.caches without the property's call)
            return CacheResult(0, MissReason("not_supported", model=str(body.get("model"))))
        options = body.get("prompt_cache_options")
        options = options if isinstance(options, dict) else None
        retention = body.get("prompt_cache_retention")
        # Neither asked for: the scenario's lifetime (what ttl_for answers, without the call).
        ttl = None if retention is None and options is None else policy.ttl_for(retention, options)
        key = body.get("prompt_cache_key")
        if policy.kind == "breakpoints":
            simulator = self.breakpoints.get(policy)
            if simulator is None:
                simulator = self.breakpoints[policy] = BreakpointSimulator(policy)
            return simulator.process(
                rendered,
                org=scope,
                prompt_cache_key=key,
                at=now,
                explicit_only=(options or {}).get("mode") == "explicit",
                ttl_seconds=ttl,
            )
        latest = self.latest_prefix
        if latest is not None and latest[0] is policy and latest[1] == retention_seconds:
            return latest[2].process(
                rendered, org=scope, prompt_cache_key=key, at=now, ttl_seconds=ttl
            )
        prefix = self.prefix.get((policy, retention_seconds))
        if prefix is None:
            prefix = self.prefix[(policy, retention_seconds)] = CacheSimulator(
                retention_seconds,
                rpm_limit=policy.overflow_rpm,
                routing_tokens=policy.routing_tokens,
                minimum=policy.min_tokens,
                hit_step=policy.step_tokens,
            )
        self.latest_prefix = (policy, retention_seconds, prefix)
        return prefix.process(rendered, org=scope, prompt_cache_key=key, at=now, ttl_seconds=ttl)


_STATE = _Endpoint()


def simulate_reset() -> None:
    """Forget every simulated organization (tests; a restart does the same)."""
    global _STATE
    _STATE = _Endpoint()


def request_read(
    org_key: str, raw: bytes, parse: Callable[[bytes, BodyReader], dict[str, Any]]
) -> dict[str, Any]:
    """`parse(raw, reader)` with the body reader of the simulated organization `org_key`,
    which keeps its requests' parses (calls/request_body.py)."""
    state = _STATE
    with state.lock:
        organization = state.organizations.get(org_key)
        if organization is None:
            organization = state.organizations[org_key] = _Organization()
        return parse(raw, organization.bodies)


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
    reply, start, end = _reply(profile.encoding, length, seed=_seed(raw_messages))
    with state.lock:  # the renderer and the simulators are not thread-safe
        organization = state.organizations.get(org_key)
        if organization is None:
            organization = state.organizations[org_key] = _Organization()
        base = organization.bodies.base(raw_messages)
        rendered = organization.render(raw_messages, profile, policy, body, base)
        organization.wrote(reply, start, end, profile)
        outcome = state.process(
            rendered,
            policy=policy,
            retention_seconds=retention_seconds,
            scope=organization.scope(org_key, model),
            body=body,
            now=now,
        )
    return SimulatedCall(  # positional: prompt, cached, completion, write tokens, reply, ...
        rendered.length,
        outcome.cached_tokens,
        length,
        outcome.write_tokens if policy.writes_billed else None,
        reply,
        # A reply cut at the request's limit (or ours) ends for "length", as on the API.
        "length" if limit or wanted > MAX_REPLY_TOKENS else "stop",
        outcome.reason,
    )


def _seed(messages: Sequence[ChatMessage]) -> int:
    """Where the reply starts on the tape: a checksum of the last message (stable across
    processes, unlike hash())."""
    last = messages[-1] if messages else {}
    content = last.get("content")
    text = content if isinstance(content, str) else json.dumps(last, sort_keys=True, default=str)
    # (surrogatepass: a lone surrogate, half an emoji, is legal in JSON and reaches here)
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


# Replies are slices of one long deterministic tape of words per encoding, kept as one string
# with each word's offset: a reply is one slice of its own length, and the tape is checked
# once to be a token per word.
_TAPE_WORDS = 1 << 15


@cache
def _tape(encoding: str) -> tuple[str, array[int], bytes]:
    """Words, each one token with its leading space in this encoding, in a fixed random order
    that tokenizes to exactly one token a word (checked): the text, where each word starts
    in it (one more offset: the end), and its tokens (packed: word i is token i). Each word
    is a piece of its own to the tokenizer's split (a space, then letters), so a slice of
    whole words encodes to the same slice of tokens (tested on many slices)."""
    enc = get_encoding(encoding)
    words = sorted({w for w in _WORDS if len(enc.encode_ordinary(" " + w)) == 1}) or ["the"]
    rng = random.Random(11)
    tape = [" " + rng.choice(words) for _ in range(_TAPE_WORDS + MAX_REPLY_TOKENS)]
    text = "".join(tape)
    tokens = enc.encode_ordinary(text)
    if len(tokens) != len(tape):  # pragma: no cover
        tape = [" the"] * len(tape)  # a merge across words: the plainest text instead
        text = "".join(tape)
        tokens = enc.encode_ordinary(text)
    return text, array("q", accumulate(map(len, tape), initial=0)), pack(tokens)


def _reply(encoding: str, tokens: int, *, seed: int) -> tuple[str, int, int]:
    """A deterministic reply of exactly `tokens` tokens in `encoding` (as a message body),
    and the words of the tape it spans (its tokens: tape_tokens): the seed picks where on
    the tape it starts."""
    if tokens <= 0:
        return "", 0, 0
    text, offsets, _ = _tape(encoding)
    start = seed % _TAPE_WORDS
    end = start + min(tokens, MAX_REPLY_TOKENS)
    return text[offsets[start] : offsets[end]], start, end


def tape_tokens(encoding: str, start: int, end: int) -> bytes:
    """The tokens of words start to end of the tape (encode_ordinary's, packed)."""
    return _tape(encoding)[2][start * TOKEN_BYTES : end * TOKEN_BYTES]


def reply_text(encoding: str, tokens: int, *, seed: int) -> str:
    """A deterministic reply of exactly `tokens` tokens in `encoding` (as a message body):
    the seed picks where on the tape it starts."""
    return _reply(encoding, tokens, seed=seed)[0]
