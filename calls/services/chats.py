"""Live chats and connection tests: a message in, a call through the worker, a turn out.

The web process stores the user's message and an ApiCall row, then enqueues the call by its
id (never anything secret). The worker claims the call, makes it through the call service,
and records the turn: the assistant message, the Turn, and its usage records (the REPORTED
usage, billing, with costlab's estimate and simulated cache beside it), all in one
transaction guarded by Turn's unique (conversation, index). A re-delivered task, even after
a worker was killed mid-call, records nothing twice.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, cast

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db import connection as db_connection
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from conversations.engine.analysis import (
    CallAnalysis,
    ConversationState,
    analyze,
    analyze_next,
    conversation_start,
)
from conversations.engine.pricing import buckets_from_usage, usage_from_dict
from conversations.engine.types import Call, Transcript
from conversations.models import (
    Conversation,
    ConversationSource,
    Message,
    Organization,
    Turn,
    UsageRecord,
)
from conversations.ranges import request_ranges
from conversations.selectors import conversation_calls_from, conversation_transcript
from conversations.services.transcripts import DEFAULT_RETENTION_SECONDS
from conversations.services.usage import turn_usage_fields
from costlab import jobs
from pricing.book import PriceBook

from ..models import ApiCall, CallAttempt, CallPurpose, CallStatus, Chat, ProviderConnection
from ..selectors import connection_spend, price_book, turn_recorded
from .calling import (
    CallFailed,
    CallNotClaimed,
    CallResult,
    ChatRequest,
    Claim,
    Progress,
    attempt_succeeded,
    attempt_values,
    call_succeeded,
    chat_completion_call,
)
from .partials import ReplyPartial
from .turns import turn_write
from .updates import (
    Insert,
    Step,
    Update,
    Written,
    insert_select_params,
    insert_select_sql,
    instance_insert,
    instance_row,
    instance_saved,
    row_update,
    rows_fetch,
    rows_insert,
)

logger = logging.getLogger(__name__)

# A call still waiting after this long is given up for good (failed), whatever happened.
CALL_GIVE_UP_AFTER = timedelta(minutes=20)
TEST_PROMPT = "Reply with the single word: OK"
TEST_MAX_TOKENS = 5
TITLE_CHARS = 80


class ChatBusy(Exception):
    """The chat's previous message is still waiting for its reply."""


@dataclass(frozen=True)
class ChatOptions:
    connection: ProviderConnection
    model: str
    system_prompt: str = ""
    use_cache_key: bool = True
    stream: bool = True
    max_completion_tokens: int | None = None


def chat_create(
    *, organization: Organization, user: AbstractBaseUser | None, options: ChatOptions
) -> Chat:
    """A chat and its stored conversation (source "live"), with the system prompt as its
    first message."""
    now = timezone.now()
    with transaction.atomic():
        conversation = Conversation.objects.create(
            organization=organization,
            source=ConversationSource.LIVE,
            title=f"Live chat {now:%Y-%m-%d %H:%M}",
            model=options.model[:200],
            started_at=now,
            has_timestamps=True,
        )
        if options.system_prompt:
            Message.objects.create(
                conversation=conversation,
                index=0,
                role="system",
                data={"role": "system", "content": options.system_prompt},
                sent_at=now,
            )
        return Chat.objects.create(
            organization=organization,
            conversation=conversation,
            connection=options.connection,
            model=options.model,
            system_prompt=options.system_prompt,
            use_cache_key=options.use_cache_key,
            stream=options.stream,
            max_completion_tokens=options.max_completion_tokens,
            created_by_id=user.pk if user is not None else None,
        )


def _stale(now: datetime) -> Q:
    """Calls whose worker is gone: running (or never taken) for longer than a task may live
    (COSTLAB_CALL_STALE_SECONDS, above the task's hard time limit)."""
    limit = now - timedelta(seconds=settings.COSTLAB_CALL_STALE_SECONDS)
    # A replayed turn belongs to its experiment's run, which resumes it itself.
    waiting = Q(status__in=(CallStatus.PENDING, CallStatus.RUNNING), replay__isnull=True)
    return waiting & (Q(started_at__lt=limit) | Q(started_at__isnull=True, requested_at__lt=limit))


def _lost_calls_fail(chat: Chat, now: datetime) -> None:
    for call in chat.calls.filter(_stale(now), requested_at__lt=now - CALL_GIVE_UP_AFTER):
        api_call_fail(call_id=call.pk, message="the worker never finished this call")


@dataclass(frozen=True)
class CallsSwept:
    requeued: int
    failed: int


def api_calls_sweep(*, now: datetime | None = None) -> CallsSwept:
    """Calls whose worker died (killed mid-call, its machine gone) run again: each is sent
    to the queue once more and its claim time reset, so it is not stale again until another
    task lifetime has passed. The turn is still recorded once: Turn's unique (conversation,
    index) guards it, and the attempts show what the lost worker may have spent. A call
    waiting for longer than CALL_GIVE_UP_AFTER fails instead."""
    now = now or timezone.now()
    failed = requeued = 0
    for call in ApiCall.objects.filter(_stale(now)).only("pk", "requested_at", "status"):
        if call.requested_at < now - CALL_GIVE_UP_AFTER:
            api_call_fail(call_id=call.pk, message="the worker never finished this call")
            failed += 1
            continue
        # Conditional: a worker that claims it meanwhile keeps it.
        taken = ApiCall.objects.filter(_stale(now), pk=call.pk).update(started_at=now)
        if taken:
            jobs.enqueue(jobs.CALL_RUN, call.pk)
            requeued += 1
    if requeued or failed:
        logger.warning("calls sweep: %s sent again, %s given up", requeued, failed)
    return CallsSwept(requeued=requeued, failed=failed)


def _count(rows: QuerySet[Any], by: str) -> Coalesce:
    """COUNT(*) of `rows` (filtered on OuterRef(by)) as a scalar subquery: for the calls
    still waiting, which an index of their own holds (ApiCall's apicall_waiting)."""
    counted = rows.order_by().values(by).annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted), 0)


def _next_index(rows: QuerySet[Any]) -> Coalesce:
    """One more than the greatest `index` of `rows` (0 for none) as a scalar subquery: the
    next row's index, found at the end of the rows' unique index in one probe. Counting
    them visited every call and message the chat had (a page each, most of them), a send's
    work growing with the chat's length. The same number, as indexes run 0, 1, 2... with
    none removed (a message or a call goes only with its conversation)."""
    last = rows.order_by("-index").values("index")[:1]
    return Coalesce(Subquery(last) + 1, 0)


def _chat_state_query(chat_id: int, now: datetime) -> QuerySet[Any]:
    """What a send checks, in one statement: the chat's calls (the next one's index, those
    still waiting for their reply, those lost for good) and its stored messages (the next
    one's index)."""
    calls = ApiCall.objects.filter(chat_id=OuterRef("pk"))
    lost = calls.filter(_stale(now), requested_at__lt=now - CALL_GIVE_UP_AFTER)
    waiting = calls.filter(status__in=(CallStatus.PENDING, CallStatus.RUNNING))
    messages = Message.objects.filter(conversation_id=OuterRef("conversation_id"))
    return Chat.objects.filter(pk=chat_id).values(
        n_calls=_next_index(calls),
        n_waiting=_count(waiting, "chat_id"),
        n_lost=_count(lost, "chat_id"),
        n_messages=_next_index(messages),
    )


# The state query compiled once per process (database and stale limit), with stand-ins for
# the chat's id and the time: compiling its four subqueries with the ORM was about half of
# a send's CPU. A stand-in the compiler wrote into the text, or did not pass as a
# parameter, is refused (the query is then compiled per send, as before).
_CHAT_STAND_IN = -(2**61) + 11
_NOW_STAND_IN = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class _StateTemplate:
    sql: str
    params: tuple[Any, ...]
    chat_slots: tuple[int, ...]
    time_slots: tuple[int, ...]  # each a datetime: the stand-in time minus a fixed interval
    names: tuple[str, ...]


_state_templates: dict[tuple[str, int], _StateTemplate | None] = {}


def _state_template() -> _StateTemplate | None:
    key = (db_connection.alias, int(settings.COSTLAB_CALL_STALE_SECONDS))
    if key in _state_templates:
        return _state_templates[key]
    query = _chat_state_query(_CHAT_STAND_IN, _NOW_STAND_IN).query
    sql, params = query.sql_with_params()
    chat_slots = tuple(i for i, v in enumerate(params) if type(v) is int and v == _CHAT_STAND_IN)
    time_slots = tuple(
        i for i, v in enumerate(params) if isinstance(v, datetime) and v <= _NOW_STAND_IN
    )
    template = None
    if chat_slots and time_slots and str(_CHAT_STAND_IN)[1:10] not in sql and "2000" not in sql:
        names = tuple(query.annotation_select)
        template = _StateTemplate(sql, tuple(params), chat_slots, time_slots, names)
    _state_templates[key] = template
    return template


def _state_params(template: _StateTemplate, chat: Chat, now: datetime) -> list[Any]:
    params = list(template.params)
    for slot in template.chat_slots:
        params[slot] = chat.pk
    for slot in template.time_slots:
        params[slot] = now - (_NOW_STAND_IN - params[slot])
    return params


def _chat_call(chat: Chat, now: datetime, **values: Any) -> ApiCall:
    """The unsaved call that answers a chat's message sent at `now`."""
    return ApiCall(
        organization_id=chat.organization_id,
        connection_id=chat.connection_id,
        purpose=CallPurpose.CHAT,
        chat=chat,
        model=chat.model,
        stream=chat.stream,
        requested_at=now,
        **values,
    )


def _chat_state(chat: Chat, now: datetime) -> dict[str, int]:
    template = _state_template()
    if template is None:  # e.g. SQLite, which passes times as text
        state = dict(_chat_state_query(chat.pk, now).get())
    else:
        [row] = rows_fetch(template.sql, _state_params(template, chat, now))
        state = dict(zip(template.names, row, strict=True))
    return {str(k)[2:]: int(cast(int, v)) for k, v in state.items()}


_lock_statements: dict[str, str] = {}


def _chat_lock(chat_id: int) -> None:
    """`Chat.objects.select_for_update().filter(pk=chat_id)`, its text built once per
    process (compiling it was ~10 % of the bench's sending CPU, py-spy on bench/calls.py)."""
    alias = db_connection.alias
    sql = _lock_statements.get(alias)
    if sql is None:
        query = Chat.objects.select_for_update().filter(pk=_CHAT_STAND_IN).values_list("pk")
        sql, params = query.query.get_compiler(using=alias).as_sql()
        assert list(params) == [_CHAT_STAND_IN], sql
        _lock_statements[alias] = sql
    rows_fetch(sql, [chat_id])


def chat_message_send(*, chat: Chat, text: str) -> ApiCall:
    """Store the user's message and queue the call that answers it."""
    now = timezone.now()
    lost_failed = False
    while True:
        if _send_at_once() is not None:
            sent = _message_send_at_once(chat, text, now, lost_failed)
            if sent is not None:
                return sent
        else:
            with transaction.atomic():
                # Locks the chat row: two quick sends cannot both see "no call pending".
                # Its own statement, before the state's: one statement holding both would
                # count with the snapshot it took before it waited for the lock, blind to
                # the send it waited for (PostgreSQL's READ COMMITTED).
                _chat_lock(chat.pk)
                state = _chat_state(chat, now)
                if not state["lost"] or lost_failed:
                    return _message_store(chat, text, now, state)
        # Rare: a call whose worker never finished is failed first (its turn recorded as
        # unanswered, outside this transaction), then the send looks again.
        _lost_calls_fail(chat, now)
        lost_failed = True


# --- a send in one statement (PostgreSQL) --------------------------------------------------
# The state, the message, the call and the chat's title, in one statement of its own
# transaction: no lock. Two sends at once both count the same messages and calls, so both
# write the same message index: the second one's insert meets the first one's row in the
# unique index (conversation, index), waits for its commit and fails; it is told the chat
# is busy, as the lock made it see the first one's call waiting. Six round trips (BEGIN,
# lock, state, message, call, COMMIT) were one each.


@dataclass(frozen=True)
class _SendAtOnce:
    sql: str
    state: _StateTemplate


_SEND_AT_ONCE: dict[tuple[str, int], _SendAtOnce | None] = {}
_MESSAGE_COMPUTED = {"index": "st.n_messages"}
_CALL_COMPUTED = {"index": "st.n_calls", "request_end": 'm."index" + 1'}
# A concurrent send's message or call: the constraints two sends of one chat meet.
_SEND_RACES = ("message_unique_index", "apicall_one_per_chat_turn")


def _send_at_once() -> _SendAtOnce | None:
    # As the state's template: per database and stale limit (a setting tests change).
    key = (db_connection.alias, int(settings.COSTLAB_CALL_STALE_SECONDS))
    if key in _SEND_AT_ONCE:
        return _SEND_AT_ONCE[key]
    state = _state_template()
    found = None
    if state is not None and db_connection.vendor == "postgresql":
        quote = db_connection.ops.quote_name
        message = insert_select_sql(
            Message, _MESSAGE_COMPUTED, "st WHERE st.n_waiting = 0 AND (st.n_lost = 0 OR %s)"
        )
        call = insert_select_sql(ApiCall, _CALL_COMPUTED, "st, m")
        conversation = quote(Conversation._meta.db_table)
        turns = quote(Turn._meta.db_table)
        title = (
            f"UPDATE {conversation} SET {quote('title')} = %s WHERE {quote('id')} = %s AND %s "
            "AND EXISTS (SELECT FROM c) AND (SELECT n_calls FROM st) = 0 "
            f"AND NOT EXISTS (SELECT FROM {turns} WHERE {quote('conversation_id')} = %s) "
            "RETURNING 1"
        )
        found = _SendAtOnce(
            f"WITH st AS ({state.sql}), m AS ({message} RETURNING {quote('index')}), "
            f"c AS ({call} RETURNING {quote('id')}), t AS ({title}) "
            "SELECT st.n_calls, st.n_waiting, st.n_lost, st.n_messages, (SELECT id FROM c), "
            "(SELECT count(*) FROM t) FROM st",
            state,
        )
    _SEND_AT_ONCE[key] = found
    return found


def _message_send_at_once(
    chat: Chat, text: str, now: datetime, lost_failed: bool
) -> ApiCall | None:
    """The send as one statement: its call, or None when a lost call must be failed first."""
    statement = _send_at_once()
    assert statement is not None
    message = {
        "conversation_id": chat.conversation_id,
        "role": "user",
        "data": {"role": "user", "content": text},
        "sent_at": now,
    }
    call = _chat_call(chat, now)
    title = " ".join(text.split())[:TITLE_CHARS]
    params = [
        *_state_params(statement.state, chat, now),
        *insert_select_params(Message, message, _MESSAGE_COMPUTED),
        lost_failed,
        *insert_select_params(ApiCall, instance_row(call), _CALL_COMPUTED),
        title,
        chat.conversation_id,
        bool(title),
        chat.conversation_id,
    ]
    try:
        [(calls, waiting, lost, messages, call_id, _)] = rows_fetch(statement.sql, params)
    except IntegrityError as error:
        constraint = getattr(getattr(error.__cause__, "diag", None), "constraint_name", None)
        if constraint in _SEND_RACES:
            raise ChatBusy("wait for the reply to the previous message") from error
        raise
    if call_id is not None:
        call.index, call.request_end = calls, messages + 1  # as the statement wrote them
        saved = instance_saved(call, call_id)
        jobs.enqueue_on_commit(jobs.CALL_RUN, saved.pk)
        return saved
    if lost and not lost_failed:
        return None  # failed first, then sent again
    assert waiting
    raise ChatBusy("wait for the reply to the previous message")


def _message_store(chat: Chat, text: str, now: datetime, state: dict[str, int]) -> ApiCall:
    if state["waiting"]:
        raise ChatBusy("wait for the reply to the previous message")
    index = state["messages"]
    # Written by statements built once per process (updates.py), as the ORM's create would.
    rows_insert(
        model=Message,
        rows=[
            {
                "conversation_id": chat.conversation_id,
                "index": index,
                "role": "user",
                "data": {"role": "user", "content": text},
                "sent_at": now,
            }
        ],
    )
    if (
        not state["calls"]
        and not Turn.objects.filter(conversation_id=chat.conversation_id).exists()
    ):
        title = " ".join(text.split())[:TITLE_CHARS]
        if title:
            Conversation.objects.filter(pk=chat.conversation_id).update(title=title)
    call = instance_insert(_chat_call(chat, now, index=state["calls"], request_end=index + 1))
    jobs.enqueue_on_commit(jobs.CALL_RUN, call.pk)
    return call


def connection_test_request(*, connection: ProviderConnection) -> ApiCall:
    """Queue one cheap call through the worker, to show whether the connection works."""
    with transaction.atomic():
        call = ApiCall.objects.create(
            organization=connection.organization,
            connection=connection,
            purpose=CallPurpose.TEST,
            model=connection.default_model or "gpt-4o-mini",
        )
        jobs.enqueue_on_commit(jobs.CALL_RUN, call.pk)
    return call


_WAITING = (CallStatus.PENDING, CallStatus.RUNNING)


def _claimable(call_id: int) -> QuerySet[ApiCall]:
    calls = ApiCall.objects.select_related("connection", "chat__organization", "chat__conversation")
    return calls.filter(pk=call_id, status__in=_WAITING)


@dataclass(frozen=True)
class _CompiledRead:
    """A model query compiled once per process, run with another primary key: its SQL and
    parameters (the key's slot in them), and how the ORM turns its row into the instance
    and the instances select_related joined (as ModelIterable does with the same parts)."""

    sql: str
    params: tuple[Any, ...]
    slot: int
    compiler: Any
    converters: dict[int, Any]
    init_list: tuple[str, ...]
    fields: slice
    populators: tuple[Any, ...]

    @classmethod
    def build(cls, queryset: QuerySet[Any]) -> _CompiledRead | None:
        """None unless the stand-in key is one parameter and nowhere in the text."""
        from django.db.models.query import get_related_populators  # type: ignore[attr-defined]

        compiler = queryset.query.get_compiler(using=queryset.db)
        sql, params = compiler.as_sql()
        slots = [i for i, v in enumerate(params) if type(v) is int and v == _CHAT_STAND_IN]
        if len(slots) != 1 or str(_CHAT_STAND_IN)[1:10] in sql:
            return None
        select, klass_info = compiler.select, compiler.klass_info
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        return cls(
            sql=sql,
            params=tuple(params),
            slot=slots[0],
            compiler=compiler,
            converters=compiler.get_converters([s[0] for s in select[: compiler.col_count]]),
            init_list=tuple(f[0].target.attname for f in select[start:end]),
            fields=slice(start, end),
            populators=tuple(get_related_populators(klass_info, select, queryset.db)),
        )

    def get(self, model: Any, pk: int) -> Any:
        params = list(self.params)
        params[self.slot] = pk
        rows = rows_fetch(self.sql, params)
        if not rows:
            return None
        row = rows[0]
        if self.converters:
            row = next(self.compiler.apply_converters([row], self.converters))
        obj = model.from_db(db_connection.alias, list(self.init_list), row[self.fields])
        for populator in self.populators:
            populator.populate(row, obj)
        return obj


_claim_reads: dict[str, _CompiledRead | None] = {}


def _claimable_call(call_id: int) -> ApiCall | None:
    """The call, its connection, chat, organization and conversation, unless finished: one
    statement compiled once per process (compiling its three joins with the ORM was about a
    tenth of a worker's CPU per chat call)."""
    alias = db_connection.alias
    if alias not in _claim_reads:
        _claim_reads[alias] = _CompiledRead.build(_claimable(_CHAT_STAND_IN))
    read = _claim_reads[alias]
    if read is None:
        return _claimable(call_id).first()
    return cast(ApiCall | None, read.get(ApiCall, call_id))


def _claim_update(call: ApiCall, *, count_attempt: bool = False) -> Update:
    """The update that marks the call running, unless it is finished already (a
    re-delivered task); with `count_attempt`, counting its first attempt too. A call left
    running by a killed worker is claimed again: the turn's unique constraint, not the
    claim, makes the recording happen once."""
    return Update(
        ApiCall,
        call.pk,
        {"status": CallStatus.RUNNING, "started_at": timezone.now()},
        increment=("attempt_count",) if count_attempt else (),
        status_in=_WAITING,
    )


def _claim(call: ApiCall) -> bool:
    """Claim the call now, alone (its own statement and commit); False when it is
    finished already."""
    claim = _claim_update(call)
    if not row_update(model=ApiCall, pk=call.pk, values=claim.values, status_in=claim.status_in):
        return False  # finished meanwhile by another delivery
    call.status, call.started_at = CallStatus.RUNNING, claim.values["started_at"]
    return True


def _claim_deferred(call: ApiCall) -> bool:
    """Whether the claim can wait for the first attempt's transaction (one commit fewer per
    call). Not when the connection has a rate budget: the call may wait for it, and claimed
    first, its started_at tells the sweep that a worker has it meanwhile."""
    connection = call.connection
    return (
        call.purpose != CallPurpose.REPLAY
        and connection is not None
        and not connection.rpm_limit
        and not connection.tpm_limit
    )


def _messages_query(conversation_id: int, start: int, end: int) -> QuerySet[Any]:
    messages = Message.objects.filter(
        conversation_id=conversation_id, index__gte=start, index__lt=end
    )
    return messages.order_by("index").values_list("data", flat=True)


@dataclass(frozen=True)
class _MessagesRead:
    """`_messages_query` compiled once per process: its text, the slots of the conversation,
    the start and the end in its parameters, and the converters of its one column (JSON)."""

    sql: str
    params: tuple[Any, ...]
    conversation_slot: int
    start_slot: int
    end_slot: int
    compiler: Any
    converters: dict[int, Any]


_START_STAND_IN = 2**31 - 9
_END_STAND_IN = 2**31 - 7
_messages_reads: dict[str, _MessagesRead | None] = {}


def _messages_read() -> _MessagesRead | None:
    alias = db_connection.alias
    if alias in _messages_reads:
        return _messages_reads[alias]
    queryset = _messages_query(_CHAT_STAND_IN, _START_STAND_IN, _END_STAND_IN)
    compiler = queryset.query.get_compiler(using=queryset.db)
    sql, params = compiler.as_sql()
    # A parameter may come wrapped in its column's type (psycopg's Int4 for the index): an int
    # still, and given back in the same wrapper (_messages_between).
    slots = [
        [i for i, v in enumerate(params) if isinstance(v, int) and v == stand_in]
        for stand_in in (_CHAT_STAND_IN, _START_STAND_IN, _END_STAND_IN)
    ]
    read = None
    if all(len(found) == 1 for found in slots) and not any(
        str(stand_in) in sql for stand_in in (_START_STAND_IN, _END_STAND_IN)
    ):
        columns = [column for column, _, _ in compiler.select[: compiler.col_count]]
        converters = compiler.get_converters(columns)
        [chat], [start], [end] = slots
        read = _MessagesRead(sql, tuple(params), chat, start, end, compiler, converters)
    _messages_reads[alias] = read
    return read


def _messages_between(conversation_id: int, start: int, end: int) -> list[Any]:
    """The `data` of the conversation's messages `start` to `end` - 1, in order. One
    statement compiled once per process (compiling the ORM's filter was ~5 % of a worker's
    CPU per chat call, py-spy on bench/calls.py)."""
    read = _messages_read()
    if read is None:
        return list(_messages_query(conversation_id, start, end))
    params = list(read.params)
    for slot, value in (
        (read.conversation_slot, conversation_id),
        (read.start_slot, start),
        (read.end_slot, end),
    ):
        params[slot] = type(params[slot])(value)
    rows = rows_fetch(read.sql, params)
    if read.converters:
        rows = list(read.compiler.apply_converters(rows, read.converters))
    return [row[0] for row in rows]


# Per process, the messages of each recent chat as this process last read them: the chat's
# next call here reads only the messages added since (the previous reply, the new question)
# where it read its whole history again, a read (and the JSON of every message decoded)
# growing with the chat's length. The part read before stands: messages are only ever added
# (an index is never given twice, a row never changed, one goes only with its
# conversation). Keyed by the conversation's id and code: on SQLite an id can come back
# after a rollback, a code (a UUID) cannot. Bounded as the carried states are.
HISTORY_CHATS = 64
_histories: OrderedDict[tuple[int, Any], list[Any]] = OrderedDict()
_histories_lock = threading.Lock()


def _request_messages(conversation: Conversation, end: int) -> list[Any]:
    """The `data` of the conversation's messages 0 to `end` - 1, in order: the request's
    messages (a list of the caller's own)."""
    key = (conversation.pk, conversation.code)
    with _histories_lock:
        known = _histories.pop(key, None)
    if known is None:
        messages = _messages_between(conversation.pk, 0, end)
    elif len(known) < end:
        added = _messages_between(conversation.pk, len(known), end)
        if len(added) == end - len(known):
            messages = [*known, *added]
        else:  # not what was expected: the whole read again
            messages = _messages_between(conversation.pk, 0, end)
    else:
        messages = known
    with _histories_lock:
        _histories[key] = messages
        _histories.move_to_end(key)
        while len(_histories) > HISTORY_CHATS:
            _histories.popitem(last=False)
    return messages[:end]


def histories_forget() -> None:
    """Drop this process's chat histories (tests)."""
    with _histories_lock:
        _histories.clear()


def _recorded_turn(call: ApiCall, *, delivered_before: bool) -> int | None:
    """The turn an earlier delivery recorded before it died, if it did. (A call still
    pending when read was never claimed, so it has no turn: no query for it.)"""
    if not delivered_before or call.chat is None or call.index is None:
        return None
    return (
        Turn.objects.filter(conversation_id=call.chat.conversation_id, index=call.index)
        .values_list("pk", flat=True)
        .first()
    )


def api_call_run(call_id: int) -> None:
    """The task's body: claim the call, make it, record what came of it."""
    call = _claimable_call(call_id)
    delivered_before = call is not None and call.status == CallStatus.RUNNING
    claim = _claim_update(call, count_attempt=True) if call and _claim_deferred(call) else None
    if call is None or (claim is None and not _claim(call)):
        logger.info("call %s is finished already; nothing to do", call_id)
        return
    if call.purpose == CallPurpose.REPLAY:  # made by its experiment's run, never alone
        return
    try:
        if call.purpose == CallPurpose.CHAT:
            _chat_turn_run(call, claim, delivered_before=delivered_before)
        else:
            _connection_test_run(call, claim)
    except CallNotClaimed:
        logger.info("call %s was finished meanwhile; nothing sent", call_id)


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _call(
    call: ApiCall,
    request: ChatRequest,
    *,
    record_success: bool = True,
    claim: Claim | None = None,
    progress: Progress | None = None,
) -> CallResult:
    connection = call.connection
    if connection is None:
        raise CallFailed("the connection of this call was deleted")
    cap = connection.monthly_spend_cap
    if cap is not None:
        spent = connection_spend(connection=connection, since=_month_start(timezone.now()))
        if spent >= cap:
            raise CallFailed(f"the connection's monthly spend cap of ${cap} is reached")
    return chat_completion_call(
        call=call,
        connection=connection,
        request=request,
        record_success=record_success,
        claim=claim,
        progress=progress,
    )


def _connection_test_run(call: ApiCall, claim: Claim | None) -> None:
    request = ChatRequest(
        model=call.model,
        messages=[{"role": "user", "content": TEST_PROMPT}],
        max_completion_tokens=TEST_MAX_TOKENS,
    )
    try:
        result = _call(call, request, claim=claim)
    except CallFailed as failed:
        api_call_fail(call_id=call.pk, message=failed.message)
        return
    book = price_book(call.organization)
    cost = None
    if result.usage is not None:
        priced = book.price(
            model=call.model,
            at=result.started_at,
            buckets=buckets_from_usage(usage_from_dict(result.usage)),
            service_tier=result.service_tier,
            batch=False,
        )
        cost = priced.cost.total if priced.cost else None
    _call_succeed(call, result, cost=cost, reply=result.content[:2000])


def _call_succeed(
    call: ApiCall,
    result: CallResult,
    *,
    cost: Decimal | None,
    reply: str = "",
    turn_id: int | None = None,
) -> None:
    update = call_succeeded(call, result, cost=cost, reply=reply, turn=turn_id)
    row_update(model=ApiCall, pk=call.pk, values=update.values)


def api_call_fail(*, call_id: int, message: str) -> None:
    """Give up on a call; a chat turn is still recorded, as a request that got no reply
    (its estimate is kept, it is billed nothing)."""
    call = ApiCall.objects.select_related("chat__conversation__organization").get(pk=call_id)
    turn_id = None
    if call.purpose == CallPurpose.CHAT and call.chat is not None:
        turn_id, _ = _turn_record(call, None)
    ApiCall.objects.filter(pk=call_id, status__in=(CallStatus.PENDING, CallStatus.RUNNING)).update(
        status=CallStatus.FAILED, finished_at=timezone.now(), error=message[:4000], turn_id=turn_id
    )


def _chat_turn_run(call: ApiCall, claim: Claim | None, *, delivered_before: bool) -> None:
    chat = call.chat
    assert chat is not None and call.index is not None
    existing = _recorded_turn(call, delivered_before=delivered_before)
    if existing is not None:  # recorded by an earlier delivery that died before finishing
        ApiCall.objects.filter(pk=call.pk, status__in=_WAITING).update(
            status=CallStatus.SUCCEEDED, turn_id=existing
        )
        return
    messages = _request_messages(chat.conversation, call.request_end)
    request = ChatRequest(
        model=call.model,
        messages=messages,
        stream=call.stream,
        prompt_cache_key=chat.prompt_cache_key,
        max_completion_tokens=chat.max_completion_tokens,
    )
    # A streamed reply's text so far, for the chat page until the turn is recorded.
    partial = ReplyPartial(call.code) if call.stream else None
    if partial is not None and delivered_before:
        partial.clear()  # what the killed delivery had received is not this run's reply
    try:
        try:
            # The answered attempt is marked in the turn's transaction (_turn_record).
            result = _call(call, request, record_success=False, claim=claim, progress=partial)
        except CallFailed as failed:
            api_call_fail(call_id=call.pk, message=failed.message)
            return
        _turn_record(call, result, messages=messages)  # the call and attempt marked with it
    finally:
        # After the turn's commit: until then the page shows the text so far.
        if partial is not None and partial.published:
            partial.clear()


@dataclass(frozen=True)
class _Carried:
    """A conversation's analysis state after its latest turn recorded here, and the price
    book it was made with (one re-read since: the earlier turns' rates may differ)."""

    book: PriceBook
    state: ConversationState


# Per process, the analysis state each recent chat's latest turn left (engine.analysis.
# analyze_next): its next turn, if this process records it, analyses only its own call where
# it analysed the whole conversation again (work growing with the chat's length). Turns
# another process recorded since are analysed from it one by one (_caught_up); only when
# that cannot be is the conversation read and analysed whole. Bounded: a state holds its
# messages' tokens.
CARRIED_CHATS = 64
_carried: OrderedDict[int, _Carried] = OrderedDict()
_carried_lock = threading.Lock()


def _carried_take(conversation_id: int, book: PriceBook, calls: int) -> ConversationState | None:
    """The conversation's state if its call `calls` can start from it (it simulated that
    many calls or fewer, with this book); taken out, so that no other thread uses it
    meanwhile (it is put back once the turn is committed)."""
    with _carried_lock:
        carried = _carried.pop(conversation_id, None)
    if carried is None or carried.book is not book or carried.state.calls > calls:
        return None
    return carried.state


def _caught_up(
    state: ConversationState,
    conversation: Conversation,
    calls: int,
    analyse: Callable[..., CallAnalysis | None],
) -> ConversationState | None:
    """`state` brought up to the conversation's call `calls`: the turns recorded since it
    was kept, most often by the worker's other process (with a prefork pool of 2, about
    every other turn), read and analysed one by one from it, instead of the whole
    conversation again (all its turns read, a render and a cache simulation of every call:
    work growing with the chat's length). None where one of them cannot be (analyze_next
    says which): then the conversation is."""
    missed = conversation_calls_from(conversation, state.calls)[: calls - state.calls]
    if len(missed) != calls - state.calls:
        return None
    for call in missed:
        if analyse(state, call=call) is None:
            return None
    return state


def _carried_put(conversation_id: int, book: PriceBook, state: ConversationState) -> None:
    with _carried_lock:
        _carried[conversation_id] = _Carried(book, state)
        _carried.move_to_end(conversation_id)
        while len(_carried) > CARRIED_CHATS:
            _carried.popitem(last=False)


def carried_forget() -> None:
    """Drop this process's carried analysis states (tests)."""
    with _carried_lock:
        _carried.clear()


def _analysis(
    chat: Chat,
    call: ApiCall,
    result: CallResult | None,
    book: PriceBook,
    now: datetime,
    messages: list[Any] | None,
) -> tuple[CallAnalysis, ConversationState | None]:
    """costlab's own figures for the new turn: the stored conversation plus this call,
    analysed like an import (estimate, simulated cache, price), reported usage beside; and
    the state its next turn can start from. The same figures as analysing the whole
    conversation again (analysis.analyze; tests/calls/test_call_service.py)."""
    index = call.index or 0
    conversation = chat.conversation
    if messages is None:
        messages = _request_messages(conversation, call.request_end)
    messages = messages[: call.request_end]
    if result is not None:
        messages.append({"role": "assistant", "content": result.content})
    new_call = Call(
        request=list(range(call.request_end)),
        response=call.request_end if result is not None else None,
        model=call.model,
        prompt_cache_key=chat.prompt_cache_key,
        service_tier=result.service_tier if result is not None else None,
        started_at=result.started_at if result is not None else (call.started_at or now),
        latency_ms=result.latency_ms if result is not None else None,
        max_output_tokens=chat.max_completion_tokens,
        usage=usage_from_dict(result.usage) if result and result.usage else None,
    )
    transcript = Transcript(
        messages=messages, calls=[], title=conversation.title, model=conversation.model or None
    )
    rates_for = partial(book.call_rates, now=now)
    org = str(chat.organization.code)
    next_call = partial(
        analyze_next,
        transcript=transcript,
        call=new_call,
        profile_for=book.profile,
        policy_for=book.policy,
        rates_for=rates_for,
    )
    state = _carried_take(conversation.pk, book, index)
    if state is not None and state.calls < index:
        state = _caught_up(state, conversation, index, next_call)
    analysed = next_call(state) if state is not None else None
    if analysed is None:
        stored = conversation_transcript(conversation, messages=messages)
        transcript.calls = (stored.calls or [])[:index]
        state = conversation_start(
            transcript,
            profile_for=book.profile,
            policy_for=book.policy,
            rates_for=rates_for,
            retention_seconds=DEFAULT_RETENTION_SECONDS,
            org=org,
        )
        analysed = next_call(state)
    if analysed is None:  # a call earlier than the one before it: the whole conversation
        transcript.calls = [*(transcript.calls or []), new_call]
        analysis = analyze(
            [transcript],
            profile_for=book.profile,
            policy_for=book.policy,
            rates_for=rates_for,
            retention_seconds=DEFAULT_RETENTION_SECONDS,
            org=org,
        )
        return analysis.conversations[0].calls[-1], None
    return analysed, state


def _turn_record(
    call: ApiCall, result: CallResult | None, *, messages: list[Any] | None = None
) -> tuple[int | None, Decimal | None]:
    """The turn of this call, written once (a second writer hits the unique constraint and
    leaves the first one's rows as they are): its id, and what it is billed. `messages`: the
    request's messages as the caller read them (index 0 to request_end), if it did. With a
    `result`, the call is marked succeeded in the same transaction as its turn (one commit,
    and no moment where the turn is there but its call still running)."""
    chat = call.chat
    assert chat is not None and call.index is not None
    conversation = chat.conversation
    now = timezone.now()
    book = price_book(chat.organization)
    analysis, state = _analysis(chat, call, result, book, now, messages)
    at = analysis.call.started_at or now
    model = call.model[:200]
    records = turn_usage_fields(model=model, result=analysis, book=book, at=at)
    reason = analysis.miss_reason
    turn = {
        "conversation_id": conversation.pk,
        "index": call.index,
        "request_ranges": request_ranges(list(range(call.request_end))),
        "response_id": None,
        "model": model,
        "service_tier": ((result.service_tier if result else None) or "")[:20],
        "prompt_cache_key": (chat.prompt_cache_key or "")[:300],
        "max_output_tokens": chat.max_completion_tokens,
        "external_id": (result.response_id if result else "")[:300],
        "started_at": at,
        "latency_ms": result.latency_ms if result else None,
        "estimated_prompt_tokens": analysis.estimated_prompt_tokens,
        "estimated_completion_tokens": analysis.estimated_completion_tokens,
        "simulated_cached_tokens": analysis.simulated_cached_tokens,
        "miss_reason": reason.kind if reason else "",
        "miss_detail": reason.describe()[:300] if reason else "",
        "miss_token": (reason.token if reason and reason.kind == "prefix_changed" else None),
        "miss_message": (reason.message if reason and reason.kind == "prefix_changed" else None),
        "over_context": analysis.over_context,
    }
    steps: list[Step] = []
    if result is not None:  # the reply, then the turn that points at it
        reply = {
            "conversation_id": conversation.pk,
            "index": call.request_end,
            "role": "assistant",
            "data": {"role": "assistant", "content": result.content},
            "sent_at": now,
        }
        steps.append(Insert(Message, [reply]))
        turn["response_id"] = Written(0)
    turn_step = len(steps)
    steps.append(Insert(Turn, [turn]))
    usage_rows = [
        {
            "turn_id": Written(turn_step),
            "organization_id": conversation.organization_id,
            "conversation_id": conversation.pk,
            **fields,
        }
        for fields in records
    ]
    steps.append(Insert(UsageRecord, usage_rows))
    billed = next((r["cost_total"] for r in records if r["is_billing"]), None)
    if result is not None:  # the call, and the attempt that got its answer, marked
        steps.append(call_succeeded(call, result, cost=billed, turn=Written(turn_step)))
        if result.attempt_id is not None:
            steps.append(Update(CallAttempt, result.attempt_id, attempt_values(result)))
    try:
        # One statement on PostgreSQL, its rollup sums included (turns.turn_write).
        turn_id = turn_write(
            organization=chat.organization,
            conversation=conversation,
            steps=steps,
            turn_step=turn_step,
            usage_rows=usage_rows,
            book=book,
        )
        if state is not None:  # kept for the next turn once this one is committed
            transaction.on_commit(partial(_carried_put, conversation.pk, book, state))
    except IntegrityError:
        logger.info("turn %s of chat %s was recorded already", call.index, chat.pk)
        existing, cost = turn_recorded(conversation=conversation, index=call.index)
        if result is not None:
            with transaction.atomic():
                _call_succeed(call, result, cost=cost, turn_id=existing)
                attempt_succeeded(result)
        return existing, cost
    return turn_id, billed
