"""Read paths of calls/: connections, chats, calls, spend, and what the built-in endpoint
needs to answer (its caller, and the facts of a model from the price book)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from django.conf import settings
from django.db.models import Sum
from django.http import Http404

from conversations.engine.cache_policy import CachePolicy
from conversations.engine.profiles import ModelProfile
from conversations.models import Message, Organization
from conversations.selectors import TurnRow
from pricing.book import PriceBook

from .models import (
    ApiCall,
    CallAttempt,
    CallPurpose,
    CallStatus,
    Chat,
    EndpointKey,
    ProviderConnection,
    key_digest,
)

# The endpoint and the call recording read the price book once per organization per this
# many seconds.
BOOK_SECONDS = 30.0


def connections(organization: Organization) -> list[ProviderConnection]:
    return list(organization.provider_connections.order_by("name"))


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


def endpoint_keys(organization: Organization) -> list[EndpointKey]:
    return list(organization.endpoint_keys.filter(revoked__isnull=True).order_by("-created"))


def endpoint_key_get(*, organization: Organization, code: UUID) -> EndpointKey:
    try:
        return EndpointKey.objects.get(organization=organization, code=code)
    except EndpointKey.DoesNotExist:
        raise Http404 from None


# --- The built-in endpoint -----------------------------------------------------------------


@dataclass(frozen=True)
class EndpointCaller:
    """Who called the endpoint: one simulated organization per key. `organization_id` is
    the costlab organization an issued key belongs to (its price book applies)."""

    org_key: str
    organization_id: int | None


def endpoint_caller(*, key: str) -> EndpointCaller | None:
    """The caller a bearer key stands for, or None when it is refused. Development mode
    accepts any non-empty key; otherwise only an issued, unrevoked one."""
    if not key:
        return None
    digest = key_digest(key)
    organization_id = (
        EndpointKey.objects.filter(key_hash=digest, revoked__isnull=True)
        .values_list("organization_id", flat=True)
        .first()
    )
    if organization_id is None and not settings.COSTLAB_DEV:
        return None
    return EndpointCaller(org_key=f"key:{digest[:32]}", organization_id=organization_id)


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
