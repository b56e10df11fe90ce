"""Experiments: stored conversations re-run under variants, each turn a real call through
the call service, measured beside costlab's prediction (design.md 2.9).

Creating one plans every replay (the engine's context strategy applied to the original's
calls) and predicts it with the same analysis the what-if uses: one organization's cache per
variant, calls at the times the pacing plans. Starting it writes the replayed conversations
(source "replay") and queues the run.

The run is a long job (costlab/heartbeat.py): claimed, beating, swept when its worker dies.
Unlike an import it writes as it goes: each turn is one ApiCall, unique per (replay, index),
recorded with its turn in one transaction, so a run that takes over skips the turns done and
re-makes only the one in flight (whose lost attempt stays recorded as sent). Replays run in
parallel threads, the turns of one in order; the connection's budget (shared by all workers)
paces them; before each call the run checks for a cancel and for the spend cap.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from itertools import pairwise
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, connections, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from conversations.engine.analysis import CallAnalysis, analyze, totals_of
from conversations.engine.cache import MissReason, parse_retention
from conversations.engine.levers import _marked_system
from conversations.engine.messages import SYNTHETIC_TOKENS_KEY
from conversations.engine.pricing import usage_from_dict
from conversations.engine.strategies import parse_strategy, plan_strategy
from conversations.engine.types import Call, Transcript
from conversations.models import (
    Conversation,
    ConversationSource,
    Membership,
    Message,
    Organization,
    Turn,
    UsageRecord,
)
from conversations.ranges import request_ranges
from conversations.selectors import conversation_transcript
from conversations.services.usage import turn_usage_fields
from costlab import heartbeat, jobs
from pricing.book import PriceBook

from ..models import (
    ApiCall,
    CacheKeyPolicy,
    CallAttempt,
    CallPurpose,
    CallStatus,
    Experiment,
    ExperimentStatus,
    HistoryMode,
    Pacing,
    ProviderConnection,
    Replay,
    Variant,
)
from ..selectors import connection_spend, turn_recorded
from .calling import (
    CallFailed,
    CallResult,
    ChatRequest,
    attempt_values,
    call_succeeded,
    chat_completion_call,
)
from .turns import turn_write
from .updates import Insert, Step, Update, Written, rows_write_together

logger = logging.getLogger(__name__)

# The prediction's cache lifetime: what the built-in endpoint keeps (and OpenAI's 5-10 min).
PREDICTION_RETENTION = "10m"
# How often a run waiting out a pacing gap looks for a cancel.
WAIT_SLICE_SECONDS = 0.5
_VARIANT_KEYS = frozenset(
    {"model", "strategy", "connection", "label", "cache_key", "retention", "breakpoints", "ttl",
     "pacing", "stream"}
)  # fmt: skip


class ExperimentInvalid(Exception):
    """The experiment cannot be made as asked; the message says which part and why."""


class ExperimentRefused(Exception):
    """Starting (or cancelling) is not allowed now; the message says why."""


@dataclass(frozen=True)
class VariantSpec:
    model: str
    strategy: str = "full"
    connection: str | None = None  # a connection's name; None: the experiment's
    label: str = ""
    cache_key: str = CacheKeyPolicy.CONVERSATION
    retention: str = ""  # prompt_cache_retention to send ("24h"); empty: none
    breakpoints: str = ""  # breakpoint models: "implicit" or "explicit"; empty: none sent
    ttl: str = ""  # breakpoint models: prompt_cache_options.ttl
    pacing: str = Pacing.FIXED
    pacing_value: float = 0.0
    stream: bool = False

    @property
    def cache_options(self) -> dict[str, Any] | None:
        options: dict[str, Any] = {}
        if self.breakpoints:
            options["mode"] = self.breakpoints
        if self.ttl:
            options["ttl"] = self.ttl
        return options or None

    def describe(self) -> str:
        return self.label or f"{self.model} {self.strategy}"


def _pacing_parse(text: str) -> tuple[str, float]:
    """ "fixed:2" (seconds between turns), "fast" (fixed:0), "recorded" or "recorded/60"
    (the recorded gaps, divided by 60)."""
    match = re.fullmatch(r"(fast)|fixed:(\d+(?:\.\d+)?)|recorded(?:/(\d+(?:\.\d+)?))?", text)
    if not match:
        raise ValueError(f"pacing {text!r}: expected fast, fixed:SECONDS or recorded[/FACTOR]")
    if match[1]:
        return Pacing.FIXED, 0.0
    if match[2] is not None:
        return Pacing.FIXED, float(match[2])
    factor = float(match[3]) if match[3] else 1.0
    if factor <= 0:
        raise ValueError(f"pacing {text!r}: the factor must be positive")
    return Pacing.RECORDED, factor


def variant_parse(text: str) -> VariantSpec:
    """A variant from "model=gpt-4o-mini,strategy=window:8[,pacing=recorded/10,...]"."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not value:
            raise ExperimentInvalid(f"variant {text!r}: {part.strip()!r} is not NAME=VALUE")
        if name not in _VARIANT_KEYS:
            known = ", ".join(sorted(_VARIANT_KEYS))
            raise ExperimentInvalid(f"variant {text!r}: unknown field {name!r} (known: {known})")
        fields[name] = value
    if "model" not in fields:
        raise ExperimentInvalid(f"variant {text!r}: model=... is required")
    try:
        parse_strategy(fields.get("strategy", "full"))
        pacing, gap = _pacing_parse(fields.get("pacing", "fast"))
    except ValueError as error:
        raise ExperimentInvalid(f"variant {text!r}: {error}") from None
    cache_key = fields.get("cache_key", CacheKeyPolicy.CONVERSATION)
    if cache_key not in CacheKeyPolicy.values:
        raise ExperimentInvalid(
            f"variant {text!r}: cache_key must be one of {', '.join(CacheKeyPolicy.values)}"
        )
    if fields.get("breakpoints", "implicit") not in ("implicit", "explicit"):
        raise ExperimentInvalid(f"variant {text!r}: breakpoints must be implicit or explicit")
    if fields.get("stream", "false") not in ("true", "false"):
        raise ExperimentInvalid(f"variant {text!r}: stream must be true or false")
    return VariantSpec(
        model=fields["model"],
        strategy=fields.get("strategy", "full"),
        connection=fields.get("connection"),
        label=fields.get("label", ""),
        cache_key=cache_key,
        retention=fields.get("retention", ""),
        breakpoints=fields.get("breakpoints", ""),
        ttl=fields.get("ttl", ""),
        pacing=pacing,
        pacing_value=gap,
        stream=fields.get("stream") == "true",
    )


# --- Planning and prediction -----------------------------------------------------------------


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def cache_key_for(variant: Variant, original: Conversation) -> str | None:
    """The prompt_cache_key a variant sends: never shared with another experiment or
    variant, so the prediction's cold start is also the provider's."""
    base = f"costlab-exp-{variant.experiment.code.hex[:16]}-v{variant.position}"
    if variant.cache_key == CacheKeyPolicy.EXPERIMENT:
        return base
    if variant.cache_key == CacheKeyPolicy.CONVERSATION:
        return f"{base}-{original.code.hex[:16]}"
    return None


def _gaps(calls: list[Call], variant: Variant) -> list[float]:
    """Seconds between the sends of successive calls, as the pacing plans them."""
    if variant.pacing == Pacing.FIXED:
        return [0.0] + [variant.pacing_value] * (len(calls) - 1)
    gaps = [0.0]
    for before, after in pairwise(calls):
        if before.started_at is None or after.started_at is None:
            gaps.append(0.0)
            continue
        seconds = (after.started_at - before.started_at).total_seconds()
        gaps.append(max(0.0, seconds / (variant.pacing_value or 1.0)))
    return gaps


@dataclass
class _Planned:
    original: Conversation
    transcript: Transcript  # the replay's messages and calls, as the prediction sees them
    produced: list[bool]  # per message: made by the run (a summary; a fresh reply)
    gaps: list[float]
    summaries: frozenset[int]


def _plan(
    original: Conversation, variant: Variant, mode: str, book: PriceBook, anchor: datetime
) -> _Planned:
    transcript = conversation_transcript(original)
    # A request that never got its reply is not replayed: there is nothing to compare.
    transcript.calls = [c for c in transcript.calls or [] if c.response is not None]
    if not transcript.calls:
        raise ExperimentInvalid(f"conversation {original.code} has no answered call to replay")
    strategy = parse_strategy(variant.strategy)
    plan = plan_strategy(
        transcript, strategy, profile_for=book.profile, default_model=variant.model
    )
    planned = plan.transcript
    messages = list(planned.messages)
    if (variant.cache_options or {}).get("mode") == "explicit":
        messages = _marked_system(messages)  # explicit mode caches only marked prefixes
    calls = planned.calls or []
    gaps = _gaps(calls, variant)
    key = cache_key_for(variant, original)
    offset = 0.0
    out = []
    for call, gap in zip(calls, gaps, strict=True):
        offset += gap
        out.append(
            dataclasses.replace(
                call,
                model=variant.model,
                prompt_cache_key=key,
                service_tier=None,
                usage=None,
                # Predicted from the reply's text, as the replay asks for (max_tokens): the
                # original's reported output (a reasoning model's reasoning, another model's
                # reply) is not what the variant will be billed.
                output=None,
                batch=False,
                started_at=anchor + timedelta(seconds=offset),
                cache_retention=variant.retention or None,
                cache_options=variant.cache_options,
                latency_ms=None,
                # A replay goes out as Chat Completions, whatever API the original used: it
                # is predicted by chat's framing, as the endpoint will count it.
                responses_api=False,
            )
        )
    responses = {c.response for c in out if c.response is not None}
    produced = [
        SYNTHETIC_TOKENS_KEY in m or (mode == HistoryMode.FRESH and i in responses)
        for i, m in enumerate(messages)
    ]
    return _Planned(
        original=original,
        transcript=dataclasses.replace(planned, messages=messages, calls=out, model=variant.model),
        produced=produced,
        gaps=gaps,
        summaries=plan.summary_calls,
    )


def _step(call: CallAnalysis, gap: float, summary: bool) -> dict[str, Any]:
    """One planned call as stored in Replay.plan: what to send, and what costlab predicts."""
    reason: MissReason | None = call.miss_reason
    step: dict[str, Any] = {
        "request": list(call.call.request),
        "response": call.call.response,
        "summary": summary,
        # The recorded reply's length: a model may stop sooner, never later, so the
        # measured output stays comparable with the prediction.
        "max_tokens": call.estimated_completion_tokens or None,
        "gap": gap,
        "predicted": {
            "prompt_tokens": call.estimated_prompt_tokens,
            "cached_tokens": call.simulated_cached_tokens,
            "write_tokens": call.simulated_write_tokens,
            "completion_tokens": call.estimated_completion_tokens,
            "cost": _money(call.cost.total if call.cost else None),
            "eligible": call.cache_eligible,
            "miss": reason.kind if reason else "",
            "miss_detail": reason.describe()[:300] if reason else "",
            "over_context": call.over_context,
        },
    }
    if call.call.tools:
        step["tools"] = call.call.tools
    if call.call.response_format:
        step["response_format"] = call.call.response_format
    return step


def _predict(
    variant: Variant, planned: list[_Planned], book: PriceBook, now: datetime
) -> list[list[dict[str, Any]]]:
    """Every replay of the variant analysed together (they share the variant's cache, as
    they share its connection's), and the variant's totals stored on it."""
    analysis = analyze(
        [p.transcript for p in planned],
        profile_for=book.profile,
        policy_for=book.policy,
        rates_for=partial(book.call_rates, now=now, default_model=variant.model),
        retention_seconds=parse_retention(PREDICTION_RETENTION),
        org=f"experiment {variant.experiment.code} variant {variant.position}",
        default_model=variant.model,
    )
    totals = totals_of([c for conversation in analysis.conversations for c in conversation.calls])
    metrics = totals.metrics
    variant.prediction = {
        "calls": totals.calls,
        "prompt_tokens": totals.prompt_tokens,
        "cached_tokens": totals.cached_tokens,
        "completion_tokens": totals.completion_tokens,
        "cached_share": metrics.token_hit_rate,
        "hit_rate": metrics.request_hit_rate,
        "peak_prompt_tokens": totals.peak_prompt_tokens,
        "cost": _money(totals.cost if not totals.unpriced_calls else None),
        "cost_no_cache": _money(metrics.cost_no_cache),
        "unpriced_models": list(totals.unpriced_models),
    }
    return [
        [
            _step(call, gap, number in p.summaries)
            for number, (call, gap) in enumerate(zip(result.calls, p.gaps, strict=True))
        ]
        for p, result in zip(planned, analysis.conversations, strict=True)
    ]


def experiment_create(
    *,
    organization: Organization,
    user: AbstractBaseUser | None,
    conversations: list[Conversation],
    variants: list[VariantSpec],
    connection: ProviderConnection | None,
    history_mode: str = HistoryMode.RECORDED,
    cap: Decimal | None = None,
    name: str = "",
) -> Experiment:
    """A draft experiment with every replay planned and predicted; nothing is called yet.
    `connection` serves the variants that name none."""
    limit = settings.COSTLAB_EXPERIMENT_MAX_CONVERSATIONS
    if not conversations:
        raise ExperimentInvalid("choose at least one conversation")
    if len(conversations) > limit:
        raise ExperimentInvalid(
            f"{len(conversations)} conversations: an experiment takes at most {limit} "
            "(COSTLAB_EXPERIMENT_MAX_CONVERSATIONS)"
        )
    if not variants:
        raise ExperimentInvalid("give at least one variant")
    if history_mode not in HistoryMode.values:
        raise ExperimentInvalid(f"history mode {history_mode!r}: recorded or fresh")
    if cap is not None and cap <= 0:
        raise ExperimentInvalid("the cap must be a positive amount of USD")
    for conversation in conversations:
        if conversation.organization_id != organization.pk:
            raise ExperimentInvalid(f"conversation {conversation.code} is not this organization's")
    connection_of: dict[int, ProviderConnection] = {}
    for number, spec in enumerate(variants):
        chosen = connection
        if spec.connection:
            chosen = ProviderConnection.objects.filter(
                organization=organization, name=spec.connection
            ).first()
            if chosen is None:
                raise ExperimentInvalid(
                    f"variant {number + 1}: no connection named {spec.connection!r}"
                )
        if chosen is None or chosen.organization_id != organization.pk:
            raise ExperimentInvalid(f"variant {number + 1}: choose a connection")
        connection_of[number] = chosen
    book = PriceBook.for_organization(organization)
    now = timezone.now()
    with transaction.atomic():
        experiment = Experiment.objects.create(
            organization=organization,
            name=name[:200],
            history_mode=history_mode,
            cap=cap,
            created_by_id=user.pk if user is not None else None,
        )
        experiment.conversations.set(conversations)
        spend: Decimal | None = Decimal(0)
        for number, spec in enumerate(variants):
            variant = Variant(
                experiment=experiment,
                position=number,
                label=(spec.label or f"{number + 1}. {spec.model} {spec.strategy}")[:200],
                connection=connection_of[number],
                model=spec.model,
                strategy=parse_strategy(spec.strategy).label,
                cache_key=spec.cache_key,
                retention=spec.retention,
                cache_options=spec.cache_options,
                pacing=spec.pacing,
                pacing_value=spec.pacing_value,
                stream=spec.stream,
            )
            planned = [_plan(c, variant, history_mode, book, now) for c in conversations]
            steps = _predict(variant, planned, book, now)
            variant.save()
            cost = variant.prediction["cost"]
            spend = None if spend is None or cost is None else spend + Decimal(cost)
            Replay.objects.bulk_create(
                Replay(
                    experiment=experiment,
                    variant=variant,
                    original=p.original,
                    messages=[
                        {"data": m, "produced": produced}
                        for m, produced in zip(p.transcript.messages, p.produced, strict=True)
                    ],
                    plan=plan,
                )
                for p, plan in zip(planned, steps, strict=True)
            )
        total = sum(v.prediction["calls"] for v in experiment.variants.all())
        Experiment.objects.filter(pk=experiment.pk).update(predicted_spend=spend, turns_total=total)
        experiment.predicted_spend, experiment.turns_total = spend, total
    return experiment


# --- Starting, cancelling ----------------------------------------------------------------------


def default_cap(estimate: Decimal) -> Decimal:
    """Twice the estimate: room for the provider to differ, not for a runaway."""
    return max((estimate * 2).quantize(Decimal("0.0001")), Decimal("0.0001"))


def needs_confirmation(experiment: Experiment) -> bool:
    """Above the configured threshold, or of unknown cost (an unpriced model)."""
    spend = experiment.predicted_spend
    return spend is None or spend > settings.COSTLAB_EXPERIMENT_CONFIRM_USD


def experiment_start(
    *,
    experiment: Experiment,
    membership: Membership | None,
    confirmed: bool = False,
    cap: Decimal | None = None,
) -> Experiment:
    """Write the replayed conversations and queue the run, with `cap` (or the one set, or
    twice the estimate). `membership` None: a shell command, trusted like the operator."""
    if membership is not None and (
        membership.organization_id != experiment.organization_id or not membership.can_chat
    ):
        raise ExperimentRefused("starting an experiment spends money: analysts and admins only")
    if cap is not None:
        if cap <= 0:
            raise ExperimentRefused("the cap must be a positive amount of USD")
        experiment.cap = cap
    elif experiment.cap is None and experiment.predicted_spend:
        experiment.cap = default_cap(experiment.predicted_spend)
    if needs_confirmation(experiment) and not confirmed:
        spend = experiment.predicted_spend
        what = f"${spend:.4f}" if spend is not None else "an unknown amount (unpriced model)"
        raise ExperimentRefused(
            f"the estimated spend is {what}, above ${settings.COSTLAB_EXPERIMENT_CONFIRM_USD}: "
            "confirm to start"
        )
    now = timezone.now()
    with transaction.atomic():
        started = Experiment.objects.filter(pk=experiment.pk, status=ExperimentStatus.DRAFT).update(
            status=ExperimentStatus.PENDING, cap=experiment.cap, started=now
        )
        if not started:
            raise ExperimentRefused("this experiment was started already")
        for replay in experiment.replays.select_related("original", "variant"):
            _replay_conversation_write(replay, now)
        jobs.enqueue_on_commit(jobs.EXPERIMENT_RUN, experiment.pk)
    experiment.refresh_from_db()
    return experiment


def _replay_conversation_write(replay: Replay, now: datetime) -> None:
    """The stored conversation of a replay (source "replay"): every message the run does
    not produce itself, written now; the rest, and the turns, as the run makes them."""
    original, variant = replay.original, replay.variant
    title = original.title if original is not None else ""
    conversation = Conversation.objects.create(
        organization_id=replay.experiment.organization_id,
        source=ConversationSource.REPLAY,
        title=f"Replay: {title or (original.code if original else '')} ({variant.label})"[:300],
        model=variant.model[:200],
        started_at=now,
        has_timestamps=True,
    )
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            index=index,
            role=str(item["data"].get("role") or "")[:20],
            data=item["data"],
        )
        for index, item in enumerate(replay.messages)
        if not item["produced"]
    )
    Replay.objects.filter(pk=replay.pk).update(conversation=conversation)


def experiment_cancel(*, experiment: Experiment, membership: Membership | None) -> Experiment:
    """No call starts after this: a queued experiment is cancelled at once, a running one
    by its run before its next call."""
    if membership is not None and not membership.can_chat:
        raise ExperimentRefused("analysts and admins only")
    now = timezone.now()
    Experiment.objects.filter(
        pk=experiment.pk, status__in=(ExperimentStatus.DRAFT, ExperimentStatus.PENDING)
    ).update(status=ExperimentStatus.CANCELLED, cancel_requested=now, finished=now)
    Experiment.objects.filter(pk=experiment.pk, status=ExperimentStatus.RUNNING).update(
        cancel_requested=now
    )
    experiment.refresh_from_db()
    return experiment


# --- The run -----------------------------------------------------------------------------------


class _Stop(Exception):
    """This replay stops: cancelled, capped, or the claim was lost."""


@dataclass
class _Run:
    """What the threads of one run share."""

    experiment: Experiment
    beat: heartbeat.Beat
    book: PriceBook
    spent: Decimal
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    stopped_by: str = ""  # "cancel", "cap", "lost"

    def halt(self, why: str) -> None:
        with self.lock:
            if not self.stopped_by:
                self.stopped_by = why
        self.stop.set()

    def check(self) -> None:
        """Before a call: raise _Stop when the run must not make it."""
        if self.stop.is_set():
            raise _Stop
        if self.beat.lost.is_set():
            self.halt("lost")
            raise _Stop
        cancelled = Experiment.objects.filter(
            pk=self.experiment.pk, cancel_requested__isnull=False
        ).exists()
        if cancelled:
            self.halt("cancel")
            raise _Stop
        cap = self.experiment.cap
        with self.lock:
            over = cap is not None and self.spent >= cap
        if over:
            self.halt("cap")
            raise _Stop

    def add(self, cost: Decimal | None) -> None:
        if cost is not None:
            with self.lock:
                self.spent += cost

    def wait(self, seconds: float) -> None:
        """Sleep out a pacing gap, still stopping at once when told to."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.stop.wait(min(left, WAIT_SLICE_SECONDS)):
                raise _Stop
            self.check()


def experiment_spend(experiment: Experiment) -> Decimal:
    total = ApiCall.objects.filter(replay__experiment=experiment).aggregate(t=Sum("cost"))["t"]
    return total or Decimal(0)


def experiment_run(experiment_id: int) -> None:
    """The task's body: claim the experiment, replay what is not done yet, say how it ended."""
    rows = Experiment.objects.all()
    experiment = heartbeat.claim(rows, experiment_id)
    if experiment is None:
        logger.info("experiment %s is not waiting for a run; nothing to do", experiment_id)
        return
    owned = heartbeat.owned(rows, pk=experiment.pk, attempt=experiment.attempts)
    replays = list(
        experiment.replays.select_related("variant__connection", "conversation", "original")
    )
    with heartbeat.beating(owned, pk=experiment.pk) as beat:
        run = _Run(
            experiment=experiment,
            beat=beat,
            book=PriceBook.for_organization(experiment.organization),
            spent=experiment_spend(experiment),
        )
        workers = max(1, min(settings.COSTLAB_EXPERIMENT_PARALLEL, len(replays)))
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="replay") as pool:
                futures = [pool.submit(_replay_thread, run, replay) for replay in replays]
                for future in futures:
                    future.result()
        except BaseException:
            # The task's soft time limit, a bug: the other threads stop after their call.
            run.halt("error")
            raise
    now = timezone.now()
    if run.stopped_by == "lost" or beat.lost.is_set():
        logger.warning("experiment %s was taken over by another worker", experiment.pk)
        return
    if run.stopped_by == "cancel":
        owned.update(status=ExperimentStatus.CANCELLED, finished=now)
    elif run.stopped_by == "cap":
        owned.update(
            status=ExperimentStatus.CAPPED,
            finished=now,
            error=f"stopped: the measured spend ${run.spent:.6f} reached the cap of "
            f"${experiment.cap}",
        )
    else:
        owned.update(status=ExperimentStatus.SUCCEEDED, finished=now)


def experiment_release(experiment_id: int) -> None:
    """The run's task reached its time limit: hand the experiment to a fresh task, which
    goes on where this one stopped."""
    released = Experiment.objects.filter(pk=experiment_id, status=ExperimentStatus.RUNNING).update(
        status=ExperimentStatus.PENDING
    )
    if released:
        jobs.enqueue(jobs.EXPERIMENT_RUN, experiment_id)


def experiment_fail(*, experiment_id: int, message: str) -> None:
    """A run that broke (not a dead worker: an error): the turns made are kept."""
    Experiment.objects.filter(pk=experiment_id, status=ExperimentStatus.RUNNING).update(
        status=ExperimentStatus.FAILED, finished=timezone.now(), error=message[:4000]
    )


def experiments_sweep() -> heartbeat.Swept:
    """Runs whose worker died go back to the queue and carry on where they stopped."""
    rows = Experiment.objects.all()
    swept = heartbeat.sweep(rows, rerunnable=Q(pk__isnull=False), noun="experiment")
    if swept.failed:  # heartbeat's wording is an import's; an experiment keeps its turns
        rows.filter(pk__in=swept.failed).update(
            error="the workers running this experiment kept stopping; the turns made are kept"
        )
    for experiment_id in swept.requeued:
        jobs.enqueue_on_commit(jobs.EXPERIMENT_RUN, experiment_id)
    return swept


def _replay_thread(run: _Run, replay: Replay) -> None:
    try:
        _replay_run(run, replay)
    except _Stop:
        pass
    finally:
        # Each thread has its own database connection; the pool's threads outlive the run's.
        connections.close_all()


def _replay_run(run: _Run, replay: Replay) -> None:
    variant = replay.variant
    conversation = replay.conversation
    assert conversation is not None, "started experiments have their conversations"
    messages: dict[int, dict[str, Any]] = {
        index: item["data"] for index, item in enumerate(replay.messages)
    }
    # Produced on an earlier run (taken over after a crash): the replay goes on from them.
    for index, data in Message.objects.filter(conversation=conversation).values_list(
        "index", "data"
    ):
        messages[index] = data
    done = {c.index: c for c in replay.calls.all()}
    previous: ApiCall | None = None
    for index, step in enumerate(replay.plan):
        call = done.get(index)
        produced = replay.messages[step["response"]]["produced"]
        if call is not None and call.is_finished:
            if call.status == CallStatus.FAILED and produced:
                return  # as below: what follows needed the reply that did not come
            previous = call
            continue
        if previous is not None and step["gap"]:
            since = (timezone.now() - previous.requested_at).total_seconds()
            run.wait(step["gap"] - since)
        run.check()
        now = timezone.now()
        if call is None:
            call, _ = ApiCall.objects.get_or_create(
                replay=replay,
                index=index,
                defaults={
                    "organization_id": replay.experiment.organization_id,
                    "connection": variant.connection,
                    "purpose": CallPurpose.REPLAY,
                    "model": variant.model,
                    "stream": variant.stream,
                    "request_end": max(step["request"], default=-1) + 1,
                    "status": CallStatus.RUNNING,
                    "requested_at": now,
                    "started_at": now,
                },
            )
        else:  # left running by a worker that died: made again, its lost attempt kept
            ApiCall.objects.filter(pk=call.pk).update(status=CallStatus.RUNNING, started_at=now)
        ok = _turn_make(run, replay, call, step, messages)
        previous = call
        if not ok and produced:
            # The rest of this replay needs the reply that did not come.
            return


def _request(
    replay: Replay, step: dict[str, Any], messages: dict[int, dict[str, Any]]
) -> ChatRequest:
    variant = replay.variant
    extra: dict[str, Any] = {}
    for name in ("tools", "response_format"):
        if step.get(name):
            extra[name] = step[name]
    if variant.retention:
        extra["prompt_cache_retention"] = variant.retention
    if variant.cache_options:
        extra["prompt_cache_options"] = variant.cache_options
    original = replay.original
    return ChatRequest(
        model=variant.model,
        messages=[messages[i] for i in step["request"]],
        stream=variant.stream,
        prompt_cache_key=cache_key_for(variant, original) if original is not None else None,
        max_completion_tokens=step["max_tokens"],
        extra=extra or None,
    )


def _connection_capped(connection: ProviderConnection) -> str | None:
    cap = connection.monthly_spend_cap
    if cap is None:
        return None
    now = timezone.now()
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if connection_spend(connection=connection, since=month) >= cap:
        return f"the connection's monthly spend cap of ${cap} is reached"
    return None


def _turn_make(
    run: _Run,
    replay: Replay,
    call: ApiCall,
    step: dict[str, Any],
    messages: dict[int, dict[str, Any]],
) -> bool:
    """Make one replayed call and record its turn; False when the call failed."""
    connection = replay.variant.connection
    result: CallResult | None = None
    error = ""
    if connection is None:
        error = "the connection of this variant was deleted"
    else:
        error = _connection_capped(connection) or ""
    if not error and connection is not None:
        try:
            # The answered attempt is marked in the turn's transaction (_call_finish), so a
            # worker killed before that commit leaves it "sent", as one killed mid-request.
            result = chat_completion_call(
                call=call,
                connection=connection,
                request=_request(replay, step, messages),
                record_success=False,
            )
        except CallFailed as failed:
            error = failed.message
    cost = _turn_record(run, replay, call, step, result, error)
    run.add(cost)
    if result is not None and replay.messages[step["response"]]["produced"]:
        role = str(replay.messages[step["response"]]["data"].get("role") or "assistant")
        messages[step["response"]] = {"role": role, "content": result.content}
    return result is not None


def _analysis(
    replay: Replay, step: dict[str, Any], result: CallResult | None, at: datetime
) -> CallAnalysis:
    """The turn as costlab saw it before the run (the prediction), the report beside it."""
    variant, predicted = replay.variant, step["predicted"]
    call = Call(
        request=list(step["request"]),
        response=step["response"] if result is not None else None,
        model=variant.model,
        prompt_cache_key=(
            cache_key_for(variant, replay.original) if replay.original is not None else None
        ),
        service_tier=result.service_tier if result is not None else None,
        started_at=at,
        latency_ms=result.latency_ms if result is not None else None,
        max_output_tokens=step["max_tokens"],
        usage=usage_from_dict(result.usage) if result is not None and result.usage else None,
        cache_retention=variant.retention or None,
        cache_options=variant.cache_options,
    )
    return CallAnalysis(
        conversation=0,
        index=0,
        call=call,
        model=variant.model,
        estimated_prompt_tokens=predicted["prompt_tokens"],
        estimated_completion_tokens=predicted["completion_tokens"],
        simulated_cached_tokens=predicted["cached_tokens"],
        simulated_write_tokens=predicted["write_tokens"],
        cache_eligible=predicted["eligible"],
        over_context=predicted["over_context"],
    )


def _turn_record(
    run: _Run,
    replay: Replay,
    call: ApiCall,
    step: dict[str, Any],
    result: CallResult | None,
    error: str,
) -> Decimal | None:
    """The turn, its produced message and usage records, and the call's outcome, in one
    transaction; written once (a second writer hits Turn's unique (conversation, index))."""
    conversation = replay.conversation
    assert conversation is not None and call.index is not None
    now = timezone.now()
    at = result.started_at if result is not None else now
    analysis = _analysis(replay, step, result, at)
    predicted = step["predicted"]
    response_index = step["response"]
    variant = replay.variant
    model = variant.model[:200]
    records = turn_usage_fields(model=model, result=analysis, book=run.book, at=at)
    steps: list[Step] = []
    response_id: Any = None
    if result is not None:
        item = replay.messages[response_index]
        if item["produced"]:
            role = str(item["data"].get("role") or "assistant")
            message = {
                "conversation_id": conversation.pk,
                "index": response_index,
                "role": role[:20],
                "data": {"role": role, "content": result.content},
                "sent_at": now,
            }
            steps.append(Insert(Message, [message]))
            response_id = Written(0)
        else:
            response_id = Message.objects.values_list("pk", flat=True).get(
                conversation=conversation, index=response_index
            )
    turn = {
        "conversation_id": conversation.pk,
        "index": call.index,
        "request_ranges": request_ranges(list(step["request"])),
        "response_id": response_id,
        "model": model,
        "service_tier": ((result.service_tier if result else None) or "")[:20],
        "prompt_cache_key": (analysis.call.prompt_cache_key or "")[:300],
        "tools": step.get("tools"),
        "response_format": step.get("response_format"),
        "max_output_tokens": step["max_tokens"],
        "external_id": (result.response_id if result else "")[:300],
        "started_at": at,
        "latency_ms": result.latency_ms if result else None,
        "estimated_prompt_tokens": predicted["prompt_tokens"],
        "estimated_completion_tokens": predicted["completion_tokens"],
        "simulated_cached_tokens": predicted["cached_tokens"],
        "simulated_cache_write_tokens": predicted["write_tokens"],
        "cache_retention": variant.retention[:20],
        "cache_options": variant.cache_options,
        "miss_reason": predicted["miss"],
        "miss_detail": predicted["miss_detail"],
        "over_context": predicted["over_context"],
    }
    turn_step = len(steps)
    steps.append(Insert(Turn, [turn]))
    owner = {"organization_id": conversation.organization_id}
    usage_rows = [
        {"turn_id": Written(turn_step), "conversation_id": conversation.pk, **owner, **fields}
        for fields in records
    ]
    steps.append(Insert(UsageRecord, usage_rows))
    billed = next((r["cost_total"] for r in records if r["is_billing"]), None)
    cost = billed if result is not None else None
    steps += _call_finished(call, result, error, cost=cost, turn=Written(turn_step))
    try:
        # As a chat turn's: one statement on PostgreSQL, its rollup sums included.
        turn_write(
            organization=conversation.organization,
            conversation=conversation,
            steps=steps,
            turn_step=turn_step,
            usage_rows=usage_rows,
            book=run.book,
        )
    except IntegrityError:
        logger.info("turn %s of replay %s was recorded already", call.index, replay.pk)
        existing, billed = turn_recorded(conversation=conversation, index=call.index)
        cost = billed if result is not None else None
        _call_finish(call, result, error, cost=cost, turn_id=existing)
    return cost


def _call_finished(
    call: ApiCall, result: CallResult | None, error: str, *, cost: Decimal | None, turn: Any
) -> list[Step]:
    """The steps that write the call's outcome (`turn`: its turn's id, or the Written key
    of the step that writes it) and, answered, its answering attempt's."""
    if result is None:
        values = {
            "status": CallStatus.FAILED,
            "finished_at": timezone.now(),
            "error": error[:4000],
            "turn": turn,
        }
        return [Update(ApiCall, call.pk, values)]
    steps: list[Step] = [call_succeeded(call, result, cost=cost, reply=result.content, turn=turn)]
    if result.attempt_id is not None:
        steps.append(Update(CallAttempt, result.attempt_id, attempt_values(result)))
    return steps


def _call_finish(
    call: ApiCall,
    result: CallResult | None,
    error: str,
    *,
    cost: Decimal | None,
    turn_id: int | None,
) -> None:
    """The call's outcome (and its attempt's) written, all or nothing."""
    rows_write_together(_call_finished(call, result, error, cost=cost, turn=turn_id))


def parse_cap(text: str | None) -> Decimal | None:
    """A cap as typed ("2.50", "$2.50"); empty: none."""
    if text is None or not text.strip():
        return None
    try:
        value = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        raise ExperimentInvalid(f"cap {text!r}: expected an amount of USD such as 2.50") from None
    if not value.is_finite() or value <= 0:
        raise ExperimentInvalid(f"cap {text!r}: must be a positive amount of USD")
    return value
