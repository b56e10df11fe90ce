"""Whole-transcript analysis: tokens, simulated caching and cost of every call.

Owns: analyze(), the three passes, and what it says about each call and transcript;
conversation_start() and analyze_next(): a transcript's next call analysed alone.

Three passes. (1) Per transcript, render every call: messages encoded once, prompt sizes from
the growing chain, block hashes shared between calls; token lists are then released. (2) The
cache simulator runs over the calls of ALL transcripts in timestamp order, because an
organization's cache is shared across conversations. (3) Each call is priced from its buckets:
reported usage wins over estimates, and both are kept (the gap is a calibration figure).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Literal

from .breakpoints import BreakpointSimulator
from .cache import CacheResult, CacheSimulator, MissReason, to_seconds
from .cache_policy import CachePolicy, default_policy
from .messages import EncodingCache
from .metrics import CacheMetrics, cache_metrics
from .pricing import (
    Buckets,
    Cost,
    Rates,
    buckets_from_counts,
    buckets_from_usage,
    price_buckets,
    price_without_cache,
)
from .profiles import ModelProfile
from .render import RenderedRequest, TranscriptRenderer
from .types import Call, ChatMessage, Transcript, Usage

ProfileFor = Callable[[str | None], ModelProfile]
PolicyFor = Callable[[str | None], CachePolicy]
RatesFor = Callable[[Call, int], Rates | None]
CacheSource = Literal["reported", "simulated"]


def turns_from_messages(messages: Sequence[ChatMessage]) -> list[Call]:
    """design.md 2.5: each assistant message closes a turn whose request is every message
    before it; a trailing non-assistant tail is a final pending request (response None).
    An assistant message with nothing before it (a canned greeting) is no API call."""
    # Requests are slices of one index list: a slice copies pointers, while list(range(k))
    # builds an int object for every index above 256, at every turn.
    indices = list(range(len(messages)))
    calls = [
        Call(request=indices[:index], response=index)
        for index, message in enumerate(messages)
        if message.get("role") == "assistant" and index > 0
    ]
    if messages and messages[-1].get("role") != "assistant":
        calls.append(Call(request=indices[:], response=None))
    return calls


@dataclass(slots=True)
class CallAnalysis:
    """One call: estimated, simulated and reported figures side by side, and its price."""

    conversation: int  # index into Analysis.conversations
    index: int  # call index within its transcript
    call: Call
    model: str | None
    estimated_prompt_tokens: int
    estimated_completion_tokens: int
    simulated_cached_tokens: int = 0
    simulated_write_tokens: int = 0  # breakpoint models: the prefix this call wrote
    cache_eligible: bool = False  # the model caches and the prompt reaches its minimum
    miss_reason: MissReason | None = None
    cache_source: CacheSource = "simulated"
    buckets: Buckets = field(default_factory=lambda: Buckets(0, 0, 0, 0))
    cost: Cost | None = None
    cost_no_cache: Cost | None = None
    cumulative_cost: Decimal | None = None
    context_window: int | None = None
    over_context: bool = False
    unknown_images: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return self.call.response is None

    @property
    def billed(self) -> bool:
        """Whether the call counts in costs: it got a reply, or the API reported usage (a
        simulated variant of such a call: its reported output)."""
        call = self.call
        return call.response is not None or call.usage is not None or call.output is not None

    @property
    def reported(self) -> Usage | None:
        return self.call.usage

    @property
    def prompt_tokens(self) -> int:
        return self.buckets.prompt_tokens

    @property
    def cached_tokens(self) -> int:
        return self.buckets.input_cached

    @property
    def completion_tokens(self) -> int:
        return self.buckets.output

    @property
    def latency_ms(self) -> int | None:
        return self.call.latency_ms


@dataclass(frozen=True, slots=True)
class Totals:
    calls: int
    pending_calls: int
    reported_calls: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    estimated_prompt_tokens: int
    estimated_completion_tokens: int
    simulated_cached_tokens: int
    peak_prompt_tokens: int
    priced_calls: int
    unpriced_calls: int
    unpriced_models: tuple[str, ...]
    cost: Decimal | None  # priced calls only; None when nothing could be priced
    over_context_calls: int
    unknown_images: int
    metrics: CacheMetrics


def totals_of(calls: Sequence[CallAnalysis]) -> Totals:
    # One pass: this runs per conversation and again over an import's every call.
    pending = reported = prompt = cached = completion = peak = 0
    estimated_prompt = estimated_completion = simulated = over_context = unknown = 0
    unpriced_models: set[str] = set()
    unpriced = 0
    for c in calls:
        buckets = c.buckets
        size = buckets.input_uncached + buckets.input_cached + buckets.input_cache_write
        prompt += size
        peak = max(peak, size)
        cached += buckets.input_cached
        completion += buckets.output
        estimated_prompt += c.estimated_prompt_tokens
        estimated_completion += c.estimated_completion_tokens
        simulated += c.simulated_cached_tokens
        pending += c.call.response is None
        reported += c.cache_source == "reported"
        over_context += c.over_context
        unknown += c.unknown_images
        if c.cost is None and c.billed:
            unpriced += 1
            unpriced_models.add(c.model or "(unknown model)")
    metrics = cache_metrics(calls)
    billed = [c for c in calls if c.billed]
    if len(billed) < len(calls):
        # A request that got no reply was not billed: an import stores its estimate for
        # what-ifs but counts it in no total, and so does the analysis.
        money = cache_metrics(billed)
        metrics = dataclasses.replace(
            metrics,
            cost=money.cost,
            cost_no_cache=money.cost_no_cache,
            cost_reduction=money.cost_reduction,
        )
    return Totals(
        calls=len(calls),
        pending_calls=pending,
        reported_calls=reported,
        prompt_tokens=prompt,
        cached_tokens=cached,
        completion_tokens=completion,
        estimated_prompt_tokens=estimated_prompt,
        estimated_completion_tokens=estimated_completion,
        simulated_cached_tokens=simulated,
        peak_prompt_tokens=peak,
        priced_calls=len(calls) - unpriced,
        unpriced_calls=unpriced,
        unpriced_models=tuple(sorted(unpriced_models)),
        cost=metrics.cost,
        over_context_calls=over_context,
        unknown_images=unknown,
        metrics=metrics,
    )


@dataclass(slots=True)
class ConversationAnalysis:
    transcript: Transcript
    calls: list[CallAnalysis]
    timestamps_missing: bool  # simulated as one continuous session, no expiry, no overflow
    # Summed when first read: an import stores the calls and never reads the totals
    # (0.05-0.06 s of the 50 MB bench file's 1.6 s of analysis went to them).
    _totals: Totals | None = field(default=None, repr=False, compare=False)

    @property
    def totals(self) -> Totals:
        if self._totals is None:
            self._totals = totals_of(self.calls)
        return self._totals

    @property
    def model(self) -> str | None:
        return self.transcript.model or next((c.model for c in self.calls if c.model), None)


@dataclass(slots=True)
class Analysis:
    conversations: list[ConversationAnalysis]
    retention_seconds: int
    org: str
    timestamps_missing: bool
    _totals: Totals | None = field(default=None, repr=False, compare=False)  # as above

    @property
    def totals(self) -> Totals:
        if self._totals is None:
            self._totals = totals_of([c for conv in self.conversations for c in conv.calls])
        return self._totals


@dataclass(slots=True)
class _Pending:
    """A rendered call waiting for the simulator and for pricing."""

    result: CallAnalysis
    profile: ModelProfile
    rendered: RenderedRequest
    at: float | None
    policy: CachePolicy


def _message_time(transcript: Transcript, call: Call) -> datetime | None:
    times = transcript.message_times
    if not times:
        return None
    # The request leaves right after its last message; fall back to the reply's time.
    for index in (call.request[-1] if call.request else None, call.response):
        if index is not None and index < len(times) and times[index] is not None:
            return times[index]
    return None


def call_time(transcript: Transcript, call: Call) -> float | None:
    """When a call was sent (epoch seconds): its own start, else its messages' times."""
    return to_seconds(call.started_at or _message_time(transcript, call))


def _render_transcript(
    number: int,
    transcript: Transcript,
    profile_for: ProfileFor,
    policy_for: PolicyFor,
    default_model: str | None,
    cache: EncodingCache | None,
) -> tuple[list[_Pending], bool]:
    rebuilt = transcript.calls is None
    calls = turns_from_messages(transcript.messages) if rebuilt else transcript.calls or []
    renderers: dict[tuple[ModelProfile, bool], TranscriptRenderer] = {}
    # Looked up by model name: hashing a profile (16 fields) for every call adds up.
    by_model: dict[str | None, tuple[ModelProfile, TranscriptRenderer]] = {}
    pending: list[_Pending] = []
    for index, call in enumerate(calls):
        model = call.model or transcript.model or default_model
        if rebuilt:  # our own Call objects: fill in what the transcript knows
            call.model = model
            call.started_at = _message_time(transcript, call)
        elif call.model != model:  # rates_for and the reports see the model actually used
            call = dataclasses.replace(call, model=model)
        known = by_model.get(model)
        if known is None:
            profile = profile_for(model)
            cuts = policy_for(model).kind == "breakpoints"
            renderer = renderers.get((profile, cuts))
            if renderer is None:  # models that count alike share one renderer
                renderer = renderers[(profile, cuts)] = TranscriptRenderer(
                    transcript.messages, profile, cache=cache, cut_points=cuts
                )
                renderer.messages.encode_all()
            known = by_model[model] = (profile, renderer)
        profile, renderer = known
        rendered = renderer.render(
            call.request,
            tools=call.tools,
            response_format=call.response_format,
            tool_choice=call.tool_choice,
            responses_api=call.responses_api,
        )
        completion = renderer.messages.body(call.response) if call.response is not None else 0
        result = CallAnalysis(
            conversation=number,
            index=index,
            call=call,
            model=model,
            estimated_prompt_tokens=rendered.length,
            estimated_completion_tokens=completion,
            unknown_images=rendered.unknown_images,
        )
        policy = policy_for(model)
        pending.append(_Pending(result, profile, rendered, call_time(transcript, call), policy))
    for renderer in renderers.values():
        renderer.release()
    untimed = any(p.at is None for p in pending)
    if untimed:  # one missing time makes the order unknowable: one continuous session
        for item in pending:
            item.at = None
    return pending, untimed


# How many conversations an import analyses and writes at a time (a 500 MB file never sits
# in memory), and so how `analyze_chunked` reads a file: both paths cut a file the same way.
ANALYSIS_CHUNK = 200


class CacheState:
    """The prompt cache an analysis leaves behind. One simulator per cache policy, made
    when first needed: models of different policies never share entries, and each
    simulator takes its numbers from its policy. Passed from one chunk of a file to the
    next, so a conversation in the second chunk finds the prefixes the first chunk cached
    (each chunk starting cold made every 201st conversation of an import miss)."""

    def __init__(self, retention_seconds: int) -> None:
        self.retention_seconds = retention_seconds
        self.prefix: dict[CachePolicy, CacheSimulator] = {}
        self.breakpoints: dict[CachePolicy, BreakpointSimulator] = {}

    def forget_sources(self) -> None:
        """After a chunk: the prompts' tokens go (cache.CacheSimulator.forget_sources)."""
        for simulator in self.prefix.values():
            simulator.forget_sources()

    def process(self, item: _Pending, org: str) -> CacheResult:
        call, policy, model = item.result.call, item.policy, item.result.model
        if call.batch:
            return CacheResult(0, MissReason("batch"))
        if not policy.caches:
            return CacheResult(0, MissReason("not_supported", model=model))
        ttl = policy.ttl_for(call.cache_retention, call.cache_options)
        scope = f"{org}\x00{model or ''}"  # a model's cache is its own
        if policy.kind == "breakpoints":
            explicit = (call.cache_options or {}).get("mode") == "explicit"
            simulator = self.breakpoints.get(policy)
            if simulator is None:
                simulator = self.breakpoints[policy] = BreakpointSimulator(policy)
            return simulator.process(
                item.rendered,
                org=scope,
                prompt_cache_key=call.prompt_cache_key,
                at=item.at,
                explicit_only=explicit,
                ttl_seconds=ttl,
            )
        prefix = self.prefix.get(policy)
        if prefix is None:
            prefix = self.prefix[policy] = CacheSimulator(
                self.retention_seconds,
                rpm_limit=policy.overflow_rpm,
                routing_tokens=policy.routing_tokens,
                minimum=policy.min_tokens,
                hit_step=policy.step_tokens,
            )
        return prefix.process(
            item.rendered, org=scope, prompt_cache_key=call.prompt_cache_key, at=item.at,
            ttl_seconds=ttl,
        )  # fmt: skip


def _simulate(simulators: CacheState, conversations: list[list[_Pending]], org: str) -> None:
    untimed = [p for calls in conversations for p in calls if p.at is None]
    # Listed in (conversation, call) order and sorted stably: ties keep that order.
    timed = sorted(
        (p for calls in conversations for p in calls if p.at is not None),
        key=attrgetter("at"),
    )
    # Untimed transcripts first, each as one session in file order; then real time order.
    for item in [*untimed, *timed]:
        outcome = simulators.process(item, org)
        result = item.result
        result.simulated_cached_tokens = outcome.cached_tokens
        result.simulated_write_tokens = outcome.write_tokens
        result.miss_reason = outcome.reason
        if outcome.missing_key:
            result.warnings.append(
                f"no prompt_cache_key: {result.model}'s improved cache matching needs one"
            )


def _price(item: _Pending, rates_for: RatesFor) -> None:
    result, call = item.result, item.result.call
    if call.usage is not None:
        result.buckets = buckets_from_usage(call.usage)
        result.cache_source = "reported"
    elif call.output is not None:  # a simulated variant of a reported call: its reply's output
        result.buckets = buckets_from_counts(
            prompt_tokens=result.estimated_prompt_tokens,
            cached_tokens=result.simulated_cached_tokens,
            completion_tokens=call.output.completion_tokens,
            write_tokens=result.simulated_write_tokens,
            reasoning_tokens=call.output.reasoning_tokens,
            audio_output_tokens=call.output.audio_tokens,
        )
    else:
        result.buckets = buckets_from_counts(
            prompt_tokens=result.estimated_prompt_tokens,
            cached_tokens=result.simulated_cached_tokens,
            completion_tokens=result.estimated_completion_tokens,
            write_tokens=result.simulated_write_tokens,
        )
    # Eligible on the prompt that was billed: the reported one wins over the estimate.
    result.cache_eligible = item.policy.eligible(result.prompt_tokens)
    rates = rates_for(call, result.prompt_tokens)
    if rates is not None:
        result.cost = price_buckets(result.buckets, rates)
        result.cost_no_cache = price_without_cache(result.buckets, rates, result.cost)
    else:
        result.warnings.append(f"no price for model {result.model or '(unknown)'}")
    # design.md 2.7: the output the call reserved, else the reply it got; never the model's
    # maximum output (gpt-4's equals its window: every call would be flagged).
    window = item.profile.context_window
    reserved = call.max_output_tokens or result.completion_tokens
    result.context_window = window
    if window is not None and result.prompt_tokens + reserved > window:
        result.over_context = True
        what = "max output" if call.max_output_tokens else "reply"
        result.warnings.append(
            f"prompt {result.prompt_tokens:,} + {what} {reserved:,} exceeds the "
            f"{window:,}-token context window"
        )
    if result.unknown_images:
        result.warnings.append(unknown_size_warning(item.rendered.unknown_parts()))


_PLURALS = {
    "an image": "images",
    "a PDF file": "PDF files",
    "a file": "files",
    "audio": "audio clips",
}


def unknown_size_warning(kinds: list[str]) -> str:
    """ "2 parts of unknown size counted as 0 tokens: a PDF file, audio" (a call leaving
    them out of its estimate; the corpus test excludes such calls and counts them)."""
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    named = ", ".join(
        kind if n == 1 else f"{n} {_PLURALS.get(kind, kind)}" for kind, n in counts.items()
    )
    total = len(kinds)
    noun = "part" if total == 1 else "parts"
    return f"{total} {noun} of unknown size counted as 0 tokens: {named}"


def _finish(transcript: Transcript, pending: list[_Pending], untimed: bool) -> ConversationAnalysis:
    running: Decimal | None = None
    for item in pending:
        cost = item.result.cost
        if cost is not None and item.result.billed:
            running = (running or Decimal(0)) + cost.total
        # Running total of the priced calls so far; unpriced calls show up in the totals.
        item.result.cumulative_cost = running
    calls = [item.result for item in pending]
    return ConversationAnalysis(transcript, calls, untimed)


def analyze(
    transcripts: Iterable[Transcript],
    *,
    profile_for: ProfileFor,
    rates_for: RatesFor,
    retention_seconds: int,
    org: str = "default",
    default_model: str | None = None,
    encoding_cache: EncodingCache | None = None,
    policy_for: PolicyFor = default_policy,
    cache: CacheState | None = None,
    first_number: int = 0,
) -> Analysis:
    """Analyse transcripts that share one organization's prompt cache.

    profile_for(model) gives the counting profile; rates_for(call, prompt_tokens) the rates
    (None: unpriced, cost None). Transcripts without `calls` are rebuilt per design.md 2.5.
    `cache`: the cache earlier chunks of the same file left (else a cold one); it is
    updated. `first_number`: the first transcript's number in the file.
    """
    transcripts = list(transcripts)
    profile_for = functools.cache(profile_for)  # callers may hit a database; ask once a model
    policy_for = functools.cache(policy_for)
    carried = cache is not None
    if cache is None:
        cache = CacheState(retention_seconds)
    elif cache.retention_seconds != retention_seconds:
        raise ValueError("a chunk's retention differs from the cache state's")
    with _collector_paused():
        analysis = _analyze(
            transcripts, profile_for, policy_for, rates_for, retention_seconds, org,
            default_model, encoding_cache, cache, first_number,
        )  # fmt: skip
    if carried:  # a chunk of a file: what the next chunk needs is the blocks, not the tokens
        cache.forget_sources()
    return analysis


def analyze_chunked(
    transcripts: Iterable[Transcript],
    *,
    profile_for: ProfileFor,
    rates_for: RatesFor,
    retention_seconds: int,
    org: str = "default",
    default_model: str | None = None,
    policy_for: PolicyFor = default_policy,
    chunk: int = ANALYSIS_CHUNK,
) -> Analysis:
    """A file analysed as an import analyses it: `chunk` conversations at a time, each
    chunk in time order, finding the cache the chunks before it left, so that `analyze`
    and an import of one file give the same figures. Equal to one `analyze` of the whole
    file when no chunk holds a call older than a call of an earlier chunk; when one does
    (an import cannot hold a whole file to sort it), that call never hits a prefix written
    after it but may miss one the whole file's order would have found (cache._live)."""
    profile_for = functools.cache(profile_for)
    policy_for = functools.cache(policy_for)
    cache = CacheState(retention_seconds)
    conversations: list[ConversationAnalysis] = []
    missing = False
    items = iter(transcripts)
    while part := list(itertools.islice(items, chunk)):
        analysis = analyze(
            part, profile_for=profile_for, rates_for=rates_for,
            retention_seconds=retention_seconds, org=org, default_model=default_model,
            policy_for=policy_for, cache=cache, first_number=len(conversations),
        )  # fmt: skip
        conversations.extend(analysis.conversations)
        missing = missing or analysis.timestamps_missing
    return Analysis(
        conversations=conversations,
        retention_seconds=retention_seconds,
        org=org,
        timestamps_missing=missing,
    )


@dataclass(slots=True)
class ConversationState:
    """What analysing one transcript's calls so far leaves for analysing its next call alone
    (`analyze_next`): a live chat's turn then costs its own call, not the whole chat again.
    Kept by its caller in the process that made it: block hashes are salted per process."""

    org: str
    cache: CacheState
    calls: int  # calls simulated so far: the next call's index
    untimed: bool  # one of them had no time: analyze simulates the whole transcript so
    last_at: float | None  # the latest call's time (the next one must not be earlier)
    cumulative: Decimal | None  # the running cost so far (CallAnalysis.cumulative_cost)
    # The profile and policy each model was simulated with: a later call finding another
    # (a price row that took effect meanwhile) is analysed from scratch, as analyze would.
    models: dict[str | None, tuple[ModelProfile, CachePolicy]]
    messages: list[ChatMessage]  # the messages encoded so far, by identity (`encodings`)
    encodings: EncodingCache


def conversation_start(
    transcript: Transcript,
    *,
    profile_for: ProfileFor,
    rates_for: RatesFor,
    retention_seconds: int,
    org: str = "default",
    default_model: str | None = None,
    policy_for: PolicyFor = default_policy,
) -> ConversationState:
    """Analyse every call of `transcript` as `analyze` analyses the transcript alone, and
    keep what its next call needs (see analyze_next)."""
    state = ConversationState(
        org=org,
        cache=CacheState(retention_seconds),
        calls=0,
        untimed=False,
        last_at=None,
        cumulative=None,
        models={},
        messages=transcript.messages,
        encodings=EncodingCache(),
    )
    pending, untimed = _render_transcript(
        0, transcript, profile_for, policy_for, default_model, state.encodings
    )
    _simulate(state.cache, [pending], org)
    for item in pending:
        _price(item, rates_for)
    finished = _finish(transcript, pending, untimed)
    for item in pending:
        state.models[item.result.model] = (item.profile, item.policy)
    state.calls = len(pending)
    state.untimed = untimed
    state.last_at = max((p.at for p in pending if p.at is not None), default=None)
    state.cumulative = finished.calls[-1].cumulative_cost if finished.calls else None
    return state


def analyze_next(
    state: ConversationState,
    transcript: Transcript,
    call: Call,
    *,
    profile_for: ProfileFor,
    rates_for: RatesFor,
    default_model: str | None = None,
    policy_for: PolicyFor = default_policy,
) -> CallAnalysis | None:
    """`call`, the next call of the transcript `state` was made from (its messages now
    `transcript.messages`, its earlier calls those `state` simulated; `transcript.calls` is
    not read), analysed as `analyze` would analyse it as the transcript's last call; `state`
    then includes it. None, `state` unchanged, when it cannot be analysed alone: a call
    earlier than the latest one, or the first without a time (analyze would simulate the
    calls in another order, or all as untimed), messages that do not extend those `state`
    saw (the earlier calls would render otherwise), or a model whose profile or policy
    changed."""
    model = call.model or transcript.model or default_model
    if call.model != model:
        call = dataclasses.replace(call, model=model)
    current = {name: (profile_for(name), policy_for(name)) for name in (*state.models, model)}
    if any(current[name] != used for name, used in state.models.items()):
        return None
    at = call_time(transcript, call)
    untimed = state.untimed or (state.calls == 0 and at is None)
    if not untimed and (at is None or (state.last_at is not None and at < state.last_at)):
        return None
    known = state.messages
    messages = transcript.messages
    if len(messages) < len(known) or any(
        new is not old and new != old for new, old in zip(messages, known, strict=False)
    ):
        return None  # the history changed under the earlier calls: analyze re-renders them
    # The very objects encoded before: the encoding cache knows them by identity.
    messages = [*known, *messages[len(known) :]]
    profile, policy = current[model]
    renderer = TranscriptRenderer(
        messages, profile, cache=state.encodings, cut_points=policy.kind == "breakpoints"
    )
    renderer.messages.encode_all()
    rendered = renderer.render(
        call.request,
        tools=call.tools,
        response_format=call.response_format,
        tool_choice=call.tool_choice,
        responses_api=call.responses_api,
    )
    result = CallAnalysis(
        conversation=0,
        index=state.calls,
        call=call,
        model=model,
        estimated_prompt_tokens=rendered.length,
        estimated_completion_tokens=(
            renderer.messages.body(call.response) if call.response is not None else 0
        ),
        unknown_images=rendered.unknown_images,
    )
    renderer.release()
    item = _Pending(result, profile, rendered, None if untimed else at, policy)
    _simulate(state.cache, [[item]], state.org)
    _price(item, rates_for)
    if result.cost is not None and result.billed:
        state.cumulative = (state.cumulative or Decimal(0)) + result.cost.total
    result.cumulative_cost = state.cumulative
    state.models[model] = (profile, policy)
    state.messages = messages
    state.calls += 1
    state.untimed = untimed
    if at is not None and not untimed:
        state.last_at = at
    return result


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """An analysis builds several container objects per call and frees none before it
    returns, so the cyclic collector would only re-scan a growing heap (measured: 3 % of
    the time at 1,000 conversations, growing with the heap). Nothing here forms a cycle;
    reference counting frees it all. Paused for the whole process: others' cycles wait."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _analyze(
    transcripts: list[Transcript],
    profile_for: ProfileFor,
    policy_for: PolicyFor,
    rates_for: RatesFor,
    retention_seconds: int,
    org: str,
    default_model: str | None,
    encoding_cache: EncodingCache | None,
    cache: CacheState,
    first_number: int,
) -> Analysis:
    rendered: list[list[_Pending]] = []
    untimed: list[bool] = []
    for number, transcript in enumerate(transcripts, start=first_number):
        calls, missing = _render_transcript(
            number, transcript, profile_for, policy_for, default_model, encoding_cache
        )
        rendered.append(calls)
        untimed.append(missing)
    _simulate(cache, rendered, org)
    conversations = []
    for transcript, calls, missing in zip(transcripts, rendered, untimed, strict=True):
        for item in calls:
            _price(item, rates_for)
        conversations.append(_finish(transcript, calls, missing))
    return Analysis(
        conversations=conversations,
        retention_seconds=retention_seconds,
        org=org,
        timestamps_missing=any(untimed),
    )
