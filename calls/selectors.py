"""Read paths of calls/: connections, chats, calls, spend, and what the built-in endpoint
needs to answer (its caller, and the facts of a model from the price book)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Q, Sum
from django.http import Http404

from conversations.engine.cache_policy import CachePolicy
from conversations.engine.profiles import ModelProfile
from conversations.models import Conversation, Message, Organization, Turn, UsageRecord
from conversations.selectors import TurnRow
from pricing.book import PriceBook
from pricing.models import ModelPrice

from .models import (
    ApiCall,
    CallAttempt,
    CallPurpose,
    CallStatus,
    Chat,
    EndpointKey,
    Experiment,
    ProviderConnection,
    Replay,
    key_digest,
)

# The endpoint and the call recording read the price book once per organization per this
# many seconds.
BOOK_SECONDS = 30.0


def connections(organization: Organization) -> list[ProviderConnection]:
    return list(organization.provider_connections.order_by("name"))


def priced_models(organization: Organization) -> list[str]:
    """The model names the organization's price book names exactly (its own rows and the
    global ones; patterns left out): what a new chat's model field suggests."""
    names = (
        ModelPrice.objects.filter(Q(organization__isnull=True) | Q(organization=organization))
        .exclude(model__contains="*")
        .order_by("model")  # (the model's ordering would make DISTINCT count dates too)
        .values_list("model", flat=True)
        .distinct()
    )
    return list(names)


def connection_get(*, organization: Organization, code: UUID) -> ProviderConnection:
    try:
        return ProviderConnection.objects.get(organization=organization, code=code)
    except ProviderConnection.DoesNotExist:
        raise Http404 from None


def connection_spend(*, connection: ProviderConnection, since: datetime) -> Decimal:
    """What the connection's calls cost since `since` (reported usage, priced)."""
    total = ApiCall.objects.filter(connection=connection, requested_at__gte=since).aggregate(
        total=Sum("cost")
    )["total"]
    return total or Decimal(0)


def turn_recorded(*, conversation: Conversation, index: int) -> tuple[int | None, Decimal | None]:
    """The turn at `index` that a re-delivered task finds recorded already (the unique
    constraint refused its own): its id, and its billing record's cost (None when either is
    missing or unpriced)."""
    turn_id = (
        Turn.objects.filter(conversation=conversation, index=index)
        .values_list("pk", flat=True)
        .first()
    )
    if turn_id is None:
        return None, None
    billing = UsageRecord.objects.filter(turn_id=turn_id, is_billing=True).first()
    return turn_id, billing.cost_total if billing is not None else None


def connection_tests(connection: ProviderConnection, *, limit: int = 5) -> list[ApiCall]:
    return list(connection.calls.filter(purpose=CallPurpose.TEST).order_by("-requested_at")[:limit])


def call_get(*, organization: Organization, code: UUID) -> ApiCall:
    try:
        return ApiCall.objects.select_related("connection").get(
            organization=organization, code=code
        )
    except ApiCall.DoesNotExist:
        raise Http404 from None


def call_attempts(call: ApiCall) -> list[CallAttempt]:
    return list(call.attempts.order_by("number", "id"))


def chats(organization: Organization, *, limit: int = 50) -> list[Chat]:
    return list(
        organization.chats.select_related("conversation", "connection").order_by("-created")[:limit]
    )


def chat_get(*, organization: Organization, code: UUID) -> Chat:
    try:
        return Chat.objects.select_related("conversation", "connection").get(
            organization=organization, code=code
        )
    except Chat.DoesNotExist:
        raise Http404 from None


@dataclass(frozen=True)
class ChatEntry:
    """One message of a chat as the page shows it: an assistant reply with its turn's
    figures and call, a user message with the call that failed to answer it, if one did."""

    message: Message
    turn: TurnRow | None = None
    call: ApiCall | None = None


def chat_entries(chat: Chat, turns: list[TurnRow]) -> list[ChatEntry]:
    """The chat's messages with the turns (from conversation_turns) and calls they belong
    to: two queries whatever the chat's length."""
    calls = {call.index: call for call in chat.calls.all()}
    replies = {row.turn.response_id: row for row in turns if row.turn.response_id is not None}
    unanswered = {
        call.request_end - 1: call for call in calls.values() if call.status == CallStatus.FAILED
    }
    entries = []
    for message in chat.conversation.messages.order_by("index"):
        row = replies.get(message.pk)
        if row is not None:
            entries.append(ChatEntry(message, row, calls.get(row.turn.index)))
        else:
            entries.append(ChatEntry(message, None, unanswered.get(message.index)))
    return entries


def chat_pending_call(chat: Chat) -> ApiCall | None:
    """The call still waiting for its reply, if any: a chat sends one message at a time."""
    return chat.calls.filter(status__in=("pending", "running")).order_by("index").first()


def chat_live_version(chat: Chat, pending: ApiCall | None, *, turns: int | None = None) -> str:
    """What the chat page's live part shows changes only with this: its turns, and which
    call is awaited (while awaited, a call shows the same whether queued, running or
    retried). `turns`: their number when read already. The poll sends it back; an unchanged
    part is not sent again (nor its chart redrawn, which blanked it each second while a
    reply was awaited)."""
    if turns is None:
        turns = Turn.objects.filter(conversation_id=chat.conversation_id).count()
    return str(turns) if pending is None else f"{turns}.{pending.code}"


def reply_partial_key(code: UUID) -> str:
    """Where a streaming call's text so far is kept (calls/services/partials.py): by the
    call's public code, unique across installations that share a cache."""
    return f"costlab:reply-partial:{code}"


def reply_partial(call: ApiCall, turns: Sequence[TurnRow]) -> str | None:
    """The text a streaming call has received so far; None when nothing has come yet, the
    call is not streamed, or `turns` (its chat's, read after `call`) already hold its turn:
    the worker deletes the text only after that commit. `call` was read from an
    organization the user belongs to."""
    recorded = any(row.turn.index == call.index for row in turns)
    return _partial_text(call) if call.stream and not recorded else None


def chat_streaming(chat: Chat) -> tuple[ApiCall | None, str | None]:
    """A chat's pending call and its text so far (as reply_partial), for the chat page's
    fast poll: the call and one look at its turn, not the whole chat."""
    pending = chat_pending_call(chat)
    if pending is None or not pending.stream or pending.index is None:
        return pending, None
    turn = Turn.objects.filter(conversation_id=chat.conversation_id, index=pending.index)
    return pending, None if turn.exists() else _partial_text(pending)


def _partial_text(call: ApiCall) -> str | None:
    text = cache.get(reply_partial_key(call.code))
    return text if isinstance(text, str) and text else None


def endpoint_keys(organization: Organization) -> list[EndpointKey]:
    return list(organization.endpoint_keys.filter(revoked__isnull=True).order_by("-created"))


def endpoint_key_get(*, organization: Organization, code: UUID) -> EndpointKey:
    try:
        return EndpointKey.objects.get(organization=organization, code=code)
    except EndpointKey.DoesNotExist:
        raise Http404 from None


# --- The built-in endpoint -----------------------------------------------------------------

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def connection_is_this_server(
    connection: ProviderConnection | None, *, host: str, port: str
) -> bool:
    """Whether `connection` calls costlab's own endpoint on this very server (the request's
    `host` and `port`, as Django gives them): its replies are then placeholder words. Told
    by address, not by name: make run's `built-in` may be renamed, and a connection named so
    may point at a local model server."""
    if connection is None:
        return False
    there = urlsplit(connection.base_url)
    if there.path.rstrip("/") != "/v1":
        return False
    try:
        their_port = there.port or (443 if there.scheme == "https" else 80)
    except ValueError:  # a port out of range: not a URL this server answers
        return False
    here = urlsplit(f"//{host}")
    if there.hostname == here.hostname and str(their_port) == port:
        return True
    return there.hostname in LOOPBACK and here.hostname in LOOPBACK and str(their_port) == port


@dataclass(frozen=True)
class EndpointCaller:
    """Who called the endpoint: one simulated organization per key. `organization_id` is
    the costlab organization an issued key belongs to (its price book applies)."""

    org_key: str
    organization_id: int | None


# Accepted keys are remembered for a few seconds per process: the endpoint answers many
# calls a second with the same key, and the lookup was about a tenth of its server's CPU per
# call. Issuing or revoking a key forgets them in the process that does it (the web server,
# which serves the endpoint by default); another process sees a revocation within this time.
KEY_CACHE_SECONDS = 5.0
KEY_CACHE_SIZE = 1024
_callers: dict[tuple[str, bool], tuple[float, EndpointCaller]] = {}
_callers_lock = threading.Lock()


def endpoint_callers_forget() -> None:
    with _callers_lock:
        _callers.clear()


def endpoint_caller(*, key: str) -> EndpointCaller | None:
    """The caller a bearer key stands for, or None when it is refused. Development mode
    accepts any non-empty key; otherwise only an issued, unrevoked one."""
    if not key:
        return None
    digest = key_digest(key)
    cached = (digest, bool(settings.COSTLAB_DEV))
    at = time.monotonic()
    with _callers_lock:
        hit = _callers.get(cached)
    if hit is not None and hit[0] > at:
        return hit[1]
    # key_hash is unique: at most one row, so no ORDER BY (first() would compile one on
    # every request the endpoint serves).
    found = EndpointKey.objects.filter(key_hash=digest, revoked__isnull=True).values_list(
        "organization_id", flat=True
    )
    organization_id = next(iter(found), None)
    if organization_id is None and not settings.COSTLAB_DEV:
        return None  # refused keys are not remembered: the address's failures count them
    caller = EndpointCaller(org_key=f"key:{digest[:32]}", organization_id=organization_id)
    with _callers_lock:
        if len(_callers) >= KEY_CACHE_SIZE:
            _callers.clear()
        _callers[cached] = (at + KEY_CACHE_SECONDS, caller)
    return caller


@dataclass(frozen=True)
class EndpointModel:
    """What the endpoint needs of a model: how to count it and how it caches."""

    name: str
    profile: ModelProfile
    policy: CachePolicy


@dataclass
class _Book:
    loaded: float
    at: datetime
    book: PriceBook
    models: dict[str, EndpointModel | None] = field(default_factory=dict)


_books: dict[int | None, _Book] = {}
_books_lock = threading.Lock()


def _book(organization_id: int | None) -> _Book:
    """The organization's price book, re-read every BOOK_SECONDS: the endpoint answers many
    calls a second, and a price row edited in admin shows within half a minute."""
    with _books_lock:
        entry = _books.get(organization_id)
        if entry is None or time.monotonic() - entry.loaded > BOOK_SECONDS:
            organization = (
                Organization.objects.filter(pk=organization_id).first()
                if organization_id is not None
                else None
            )
            entry = _books[organization_id] = _Book(
                loaded=time.monotonic(),
                at=datetime.now().astimezone(),
                book=PriceBook.for_organization(organization),
            )
        return entry


def price_book(organization: Organization) -> PriceBook:
    """The organization's price book as this process last read it (at most BOOK_SECONDS
    ago): a worker recording many turns a second reads the catalogue twice a minute, not
    once a call. A price changed in admin applies to calls from then on within that time;
    stored costs change only by an explicit re-pricing, as always."""
    return _book(organization.pk).book


def endpoint_books_forget() -> None:
    """Re-read price books on the next call (tests that change prices)."""
    with _books_lock:
        _books.clear()


def endpoint_model(*, organization_id: int | None, model: str) -> EndpointModel | None:
    """The model's counting profile and cache policy, or None when the price book does not
    know it (the endpoint answers 404 model_not_found, as the API does)."""
    entry = _book(organization_id)
    if model in entry.models:
        return entry.models[model]
    row = entry.book.resolve(model, entry.at)
    found = None
    if row is not None:
        found = EndpointModel(
            name=model,
            profile=entry.book.profile(model, entry.at),
            policy=entry.book.policy(model, entry.at),  # as imports and analyze simulate it
        )
    with _books_lock:
        entry.models[model] = found
    return found


def endpoint_model_names(*, organization_id: int | None) -> list[str]:
    """Models the endpoint answers for: every exact (non-pattern) name in the price book."""
    entry = _book(organization_id)
    return sorted({row.model for row in entry.book.rows if not row.is_pattern})


# --- Experiments -------------------------------------------------------------------------------


def experiments(organization: Organization, *, limit: int = 50) -> list[Experiment]:
    return list(organization.experiments.order_by("-created")[:limit])


def experiment_get(*, organization: Organization, code: UUID) -> Experiment:
    try:
        return Experiment.objects.get(organization=organization, code=code)
    except Experiment.DoesNotExist:
        raise Http404 from None


@dataclass(frozen=True)
class ExperimentProgress:
    status: str
    status_label: str
    turns_total: int
    turns_done: int
    turns_failed: int
    spent: Decimal
    cap: Decimal | None
    is_finished: bool
    error: str
    cancel_requested: bool

    @property
    def percent(self) -> int:
        return round(100 * self.turns_done / self.turns_total) if self.turns_total else 0


def experiment_progress(experiment: Experiment) -> ExperimentProgress:
    """Turns done out of those planned and the spend so far: one aggregate query."""
    figures = ApiCall.objects.filter(
        replay__experiment=experiment,
        status__in=(CallStatus.SUCCEEDED, CallStatus.FAILED),
    ).aggregate(
        done=Count("id"),
        failed=Count("id", filter=Q(status=CallStatus.FAILED)),
        spent=Sum("cost"),
    )
    return ExperimentProgress(
        status=experiment.status,
        status_label=experiment.get_status_display(),
        turns_total=experiment.turns_total,
        turns_done=figures["done"],
        turns_failed=figures["failed"],
        spent=figures["spent"] or Decimal(0),
        cap=experiment.cap,
        is_finished=experiment.is_finished,
        error=experiment.error,
        cancel_requested=experiment.cancel_requested is not None,
    )


@dataclass(frozen=True)
class TurnResult:
    """One replayed call: costlab's prediction and what the provider reported."""

    variant: int  # the variant's position
    conversation: str  # the original conversation's code
    title: str
    index: int
    status: str  # pending (not made yet), succeeded, failed...
    predicted_prompt_tokens: int
    predicted_cached_tokens: int
    predicted_cost: Decimal | None
    measured_prompt_tokens: int | None
    measured_cached_tokens: int | None
    measured_cost: Decimal | None
    latency_ms: int | None
    ttft_ms: int | None
    attempts: int
    error: str

    @property
    def cached_gap(self) -> int | None:
        """Measured minus predicted cached tokens (None until measured)."""
        if self.measured_cached_tokens is None:
            return None
        return self.measured_cached_tokens - self.predicted_cached_tokens

    @property
    def cost_gap(self) -> Decimal | None:
        if self.measured_cost is None or self.predicted_cost is None:
            return None
        return self.measured_cost - self.predicted_cost


@dataclass(frozen=True)
class Measured:
    calls: int  # made and answered
    failed_calls: int
    prompt_tokens: int
    cached_tokens: int
    cost: Decimal | None  # None: some answered call is unpriced
    hit_rate: float | None  # eligible calls (as predicted) that read the cache
    latency_ms: float | None  # means over the answered calls
    ttft_ms: float | None

    @property
    def cached_share(self) -> float | None:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None


@dataclass(frozen=True)
class VariantResult:
    position: int
    label: str
    model: str
    strategy: str
    connection: str
    predicted: dict[str, Any]
    predicted_cost: Decimal | None
    measured: Measured
    turns: list[TurnResult]
    # Where measured and predicted cached tokens differ most (largest gaps first).
    largest_gaps: list[TurnResult]

    @property
    def cost_gap(self) -> Decimal | None:
        if self.measured.cost is None or self.predicted_cost is None:
            return None
        return self.measured.cost - self.predicted_cost

    @property
    def cached_gap(self) -> int:
        return self.measured.cached_tokens - sum(
            t.predicted_cached_tokens for t in self.turns if t.measured_cached_tokens is not None
        )


LARGEST_GAPS = 5


def _decimal(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _cached(usage: dict[str, Any] | None) -> int | None:
    if not usage:
        return None
    details = usage.get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or 0)


def _measured(turns: list[TurnResult], eligible: list[bool]) -> Measured:
    answered = [t for t in turns if t.status == CallStatus.SUCCEEDED]
    hits = [
        t for t, ok in zip(turns, eligible, strict=True) if ok and t.status == CallStatus.SUCCEEDED
    ]
    costs = [t.measured_cost for t in answered if t.measured_cost is not None]
    latencies = [t.latency_ms for t in answered if t.latency_ms is not None]
    ttfts = [t.ttft_ms for t in answered if t.ttft_ms is not None]
    return Measured(
        calls=len(answered),
        failed_calls=sum(t.status == CallStatus.FAILED for t in turns),
        prompt_tokens=sum(t.measured_prompt_tokens or 0 for t in answered),
        cached_tokens=sum(t.measured_cached_tokens or 0 for t in answered),
        cost=sum(costs, Decimal(0)) if len(costs) == len(answered) else None,
        hit_rate=(
            sum((t.measured_cached_tokens or 0) > 0 for t in hits) / len(hits) if hits else None
        ),
        latency_ms=sum(latencies) / len(latencies) if latencies else None,
        ttft_ms=sum(ttfts) / len(ttfts) if ttfts else None,
    )


def experiment_results(experiment: Experiment) -> list[VariantResult]:
    """Per variant, the prediction beside the measurement, in total and per turn. Two
    queries: the replays (with their plans) and the calls made."""
    replays = list(
        experiment.replays.select_related("variant__connection", "original")
        .defer("messages")  # the transcripts the run sends: large, and not needed here
        .order_by("variant__position", "id")
    )
    calls = {
        (call.replay_id, call.index): call
        for call in ApiCall.objects.filter(replay__experiment=experiment).only(
            "replay_id", "index", "status", "usage", "cost", "latency_ms", "ttft_ms",
            "attempt_count", "error",
        )
    }  # fmt: skip
    by_variant: dict[int, list[Replay]] = {}
    for replay in replays:
        by_variant.setdefault(replay.variant.position, []).append(replay)
    results = []
    for position, group in sorted(by_variant.items()):
        variant = group[0].variant
        turns: list[TurnResult] = []
        eligible: list[bool] = []
        for replay in group:
            code = str(replay.original.code) if replay.original else ""
            title = replay.original.title if replay.original else ""
            for index, step in enumerate(replay.plan):
                predicted = step["predicted"]
                call = calls.get((replay.pk, index))
                status = call.status if call is not None else "pending"
                usage = call.usage if call is not None else None
                answered = call is not None and status == CallStatus.SUCCEEDED
                turns.append(
                    TurnResult(
                        variant=position,
                        conversation=code,
                        title=title,
                        index=index,
                        status=status,
                        predicted_prompt_tokens=predicted["prompt_tokens"],
                        predicted_cached_tokens=predicted["cached_tokens"],
                        predicted_cost=_decimal(predicted["cost"]),
                        measured_prompt_tokens=(
                            int(usage.get("prompt_tokens") or 0) if answered and usage else None
                        ),
                        measured_cached_tokens=_cached(usage) if answered else None,
                        measured_cost=call.cost if call is not None and answered else None,
                        latency_ms=call.latency_ms if call is not None else None,
                        ttft_ms=call.ttft_ms if call is not None else None,
                        attempts=call.attempt_count if call is not None else 0,
                        error=call.error if call is not None else "",
                    )
                )
                eligible.append(bool(predicted["eligible"]))
        gaps = sorted(
            (t for t in turns if t.cached_gap),
            key=lambda t: abs(t.cached_gap or 0),
            reverse=True,
        )
        results.append(
            VariantResult(
                position=position,
                label=variant.label,
                model=variant.model,
                strategy=variant.strategy,
                connection=variant.connection.name if variant.connection else "(deleted)",
                predicted=variant.prediction,
                predicted_cost=_decimal(variant.prediction.get("cost")),
                measured=_measured(turns, eligible),
                turns=turns,
                largest_gaps=gaps[:LARGEST_GAPS],
            )
        )
    return results


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def experiment_report(experiment: Experiment) -> dict[str, Any]:
    """The results as plain data (`manage.py experiment_run --format json`): costs as
    decimal strings, never floats."""
    variants = []
    for result in experiment_results(experiment):
        measured = result.measured
        variants.append(
            {
                "label": result.label,
                "model": result.model,
                "strategy": result.strategy,
                "connection": result.connection,
                "predicted": result.predicted,
                "measured": {
                    "calls": measured.calls,
                    "failed_calls": measured.failed_calls,
                    "prompt_tokens": measured.prompt_tokens,
                    "cached_tokens": measured.cached_tokens,
                    "cached_share": measured.cached_share,
                    "hit_rate": measured.hit_rate,
                    "cost": _text(measured.cost),
                    "latency_ms": measured.latency_ms,
                    "ttft_ms": measured.ttft_ms,
                },
                "turns": [
                    {
                        "conversation": turn.conversation,
                        "index": turn.index,
                        "status": turn.status,
                        "predicted_cached_tokens": turn.predicted_cached_tokens,
                        "measured_cached_tokens": turn.measured_cached_tokens,
                        "predicted_cost": _text(turn.predicted_cost),
                        "measured_cost": _text(turn.measured_cost),
                        "latency_ms": turn.latency_ms,
                        "ttft_ms": turn.ttft_ms,
                    }
                    for turn in result.turns
                ],
            }
        )
    progress = experiment_progress(experiment)
    return {
        "experiment": str(experiment.code),
        "status": experiment.status,
        "error": experiment.error,
        "predicted_spend": _text(experiment.predicted_spend),
        "cap": _text(experiment.cap),
        "spent": str(progress.spent),
        "turns_total": progress.turns_total,
        "turns_done": progress.turns_done,
        "variants": variants,
    }
