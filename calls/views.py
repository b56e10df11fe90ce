"""Thin views of calls/: provider connections (org admins), live chats (analysts and up),
and the progress of a call (polled by htmx).

Every view resolves the organization through the user's membership first (404 for any
other organization); what a role may do is asked of the membership."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRefresh, HttpResponseStopPolling

from conversations import charts
from conversations import selectors as conversation_selectors
from conversations.csv_export import Cell, csv_lines
from conversations.forms import UsageFilterForm
from conversations.models import ConversationSource, Membership, Organization
from conversations.views import HtmxHttpRequest

from . import charts as experiment_charts
from . import selectors
from .forms import (
    ChatForm,
    ConnectionForm,
    EndpointKeyForm,
    ExperimentForm,
    ExperimentStartForm,
    MessageForm,
)
from .models import Chat, ProviderConnection
from .services import chats as chat_services
from .services import connections as connection_services
from .services import experiments as experiment_services


def _membership(request: HttpRequest, slug: str) -> Membership:
    return conversation_selectors.membership_get(user=request.user, slug=slug)


def _forbidden(text: str) -> HttpResponse:
    return HttpResponse(text, status=403)


# --- Connections -----------------------------------------------------------------------------


@login_required
@require_GET
def connections(request: HttpRequest, slug: str) -> HttpResponse:
    membership = _membership(request, slug)
    organization = membership.organization
    context = {
        "organization": organization,
        "membership": membership,
        "connections": selectors.connections(organization),
    }
    return render(request, "calls/connections.html", context)


@sensitive_post_parameters("api_key")
@login_required
@require_http_methods(["GET", "POST"])
def connection_new(request: HttpRequest, slug: str) -> HttpResponse:
    membership = _membership(request, slug)
    if not membership.can_manage_connections:
        return _forbidden("Only the organization's admins manage connections.")
    return _connection_form(request, membership, connection=None)


@login_required
@require_GET
def connection_detail(request: HttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = _membership(request, slug)
    connection = selectors.connection_get(organization=membership.organization, code=code)
    context = {
        "organization": membership.organization,
        "membership": membership,
        "connection": connection,
        "tests": selectors.connection_tests(connection),
    }
    return render(request, "calls/connection.html", context)


@sensitive_post_parameters("api_key")
@login_required
@require_http_methods(["GET", "POST"])
def connection_edit(request: HttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = _membership(request, slug)
    # Looked up before the role check: another organization's connection is a 404 to anyone.
    connection = selectors.connection_get(organization=membership.organization, code=code)
    if not membership.can_manage_connections:
        return _forbidden("Only the organization's admins manage connections.")
    return _connection_form(request, membership, connection=connection)


def _connection_form(
    request: HttpRequest, membership: Membership, *, connection: ProviderConnection | None
) -> HttpResponse:
    """The connection form, new (`connection` None) or an edit: saved and redirected to the
    connection when valid, shown again with its errors (400) when not."""
    form = ConnectionForm(request.POST or None, connection=connection)
    if request.method == "POST" and form.is_valid():
        try:
            if connection is None:
                connection = connection_services.connection_create(
                    organization=membership.organization,
                    user=request.user if request.user.is_authenticated else None,
                    settings=form.settings(),
                    api_key=form.cleaned_data["api_key"],
                )
            else:
                connection_services.connection_update(
                    connection=connection,
                    settings=form.settings(),
                    api_key=form.cleaned_data["api_key"],
                )
        except ValidationError as invalid:  # a name the organization uses already
            form.add_error(None, invalid)
        else:
            messages.success(request, f"Connection {connection.name} saved.")
            return redirect(
                "connection_detail", slug=membership.organization.slug, code=connection.code
            )
    context = {
        "organization": membership.organization,
        "membership": membership,
        "form": form,
        "connection": connection,
    }
    return render(
        request, "calls/connection_form.html", context, status=400 if form.errors else 200
    )


@login_required
@require_POST
def connection_delete(request: HttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = _membership(request, slug)
    connection = selectors.connection_get(organization=membership.organization, code=code)
    if not membership.can_manage_connections:
        return _forbidden("Only the organization's admins manage connections.")
    connection_services.connection_delete(connection=connection)
    messages.success(request, f"Connection {connection.name} deleted.")
    return redirect("connections", slug=slug)


@login_required
@require_POST
def connection_test(request: HttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = _membership(request, slug)
    connection = selectors.connection_get(organization=membership.organization, code=code)
    if not membership.can_manage_connections:
        return _forbidden("Only the organization's admins test connections.")
    call = chat_services.connection_test_request(connection=connection)
    return redirect("call_detail", slug=slug, code=call.code)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def call_detail(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    """A call and its attempts; polled by htmx until it is finished (then 286)."""
    membership = _membership(request, slug)
    call = selectors.call_get(organization=membership.organization, code=code)
    context = {
        "organization": membership.organization,
        "membership": membership,
        "call": call,
        "attempts": selectors.call_attempts(call),
    }
    if request.htmx:
        response = render(request, "calls/call.html#outcome", context)
        return HttpResponseStopPolling(response.content) if call.is_finished else response
    return render(request, "calls/call.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def endpoint_keys(request: HttpRequest, slug: str) -> HttpResponse:
    """Keys of costlab's own /v1/ endpoint: a new key is shown on the answer to its POST,
    once; only its hash is kept."""
    membership = _membership(request, slug)
    if not membership.can_manage_connections:
        return _forbidden("Only the organization's admins manage endpoint keys.")
    organization = membership.organization
    form = EndpointKeyForm(request.POST or None)
    issued = None
    if request.method == "POST" and form.is_valid():
        if _form_sent_before("endpoint_key", form.cleaned_data["once"]):
            messages.warning(
                request,
                "This form was sent already, and its key was shown once, on the page that "
                "answered it (only its hash is kept). Issue another key if it was not copied.",
            )
        else:
            user = request.user if request.user.is_authenticated else None
            _, issued = connection_services.endpoint_key_issue(
                organization=organization, name=form.cleaned_data["name"], user=user
            )
        form = EndpointKeyForm()
    context = {
        "organization": organization,
        "membership": membership,
        "form": form,
        "issued": issued,
        "keys": selectors.endpoint_keys(organization),
        "base_url": request.build_absolute_uri("/v1"),
    }
    response = render(request, "calls/endpoint_keys.html", context)
    response["Cache-Control"] = "no-store"  # the page may hold a new key
    return response


# How long a form's token is remembered as sent: a reload of the page a day later re-posts it.
FORM_SENT_SECONDS = 86_400


def _form_sent_before(kind: str, once: str) -> bool:
    """Whether the form with token `once` (random, one per form shown) was sent before: a
    reload of the page that answered its POST, or a second click while the first was on its
    way. The cache's add() notes it: atomic on Redis (two requests at once, one wins), where
    a session read then written let both through; the file cache of a one-machine setup
    checks then writes. A form without a token (a script's POST) is never taken for one sent
    before."""
    if not once:
        return False
    return not cache.add(f"costlab:form-sent:{kind}:{once}", 1, FORM_SENT_SECONDS)


@login_required
@require_POST
def endpoint_key_revoke(request: HttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = _membership(request, slug)
    key = selectors.endpoint_key_get(organization=membership.organization, code=code)
    if not membership.can_manage_connections:
        return _forbidden("Only the organization's admins manage endpoint keys.")
    connection_services.endpoint_key_revoke(key=key)
    messages.success(request, f"Key …{key.last4} revoked.")
    return redirect("endpoint_keys", slug=slug)


# --- Live chat -----------------------------------------------------------------------------


@login_required
@require_GET
def chats(request: HttpRequest, slug: str) -> HttpResponse:
    membership = _membership(request, slug)
    context = {
        "organization": membership.organization,
        "membership": membership,
        "chats": selectors.chats(membership.organization),
    }
    return render(request, "calls/chats.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def chat_new(request: HttpRequest, slug: str) -> HttpResponse:
    membership = _membership(request, slug)
    if not membership.can_chat:
        return _forbidden("Viewers cannot start chats; ask an admin for the analyst role.")
    organization = membership.organization
    available = selectors.connections(organization)
    form = ChatForm(request.POST or None, connections=available)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        connection = data["connection"]
        options = chat_services.ChatOptions(
            connection=connection,
            model=data["model"] or connection.default_model or "gpt-4o-mini",
            system_prompt=data["system_prompt"],
            use_cache_key=data["use_cache_key"],
            stream=data["stream"],
            max_completion_tokens=data["max_completion_tokens"],
        )
        user = request.user if request.user.is_authenticated else None
        chat = chat_services.chat_create(organization=organization, user=user, options=options)
        return redirect("chat_detail", slug=slug, code=chat.code)
    context = {
        "organization": organization,
        "membership": membership,
        "form": form,
        "connections": available,
        "priced_models": selectors.priced_models(organization),
    }
    return render(request, "calls/chat_new.html", context, status=400 if form.errors else 200)


def _chat_context(request: HttpRequest, membership: Membership, code: UUID) -> dict[str, object]:
    chat = selectors.chat_get(organization=membership.organization, code=code)
    # The pending call is read before the turns: the worker records a turn and finishes its
    # call in one commit, so a call read as finished has its turn among those read after.
    # Read the other way round, a commit between the two reads gave a poll with no figures
    # that stopped polling (286): the figures never came (seen in the browser test).
    pending = selectors.chat_pending_call(chat)
    turns = conversation_selectors.conversation_turns(chat.conversation)
    return {
        "organization": membership.organization,
        "membership": membership,
        "chat": chat,
        "conversation": chat.conversation,
        "entries": selectors.chat_entries(chat, turns),
        "pending": pending,
        "live_version": selectors.chat_live_version(chat, pending, turns=len(turns)),
        # A streamed reply's text so far, shown (and polled faster) until its turn is in.
        "partial": selectors.reply_partial(pending, turns) if pending is not None else None,
        "summary": conversation_selectors.conversation_summary(turns),
        "turn_figure": charts.conversation_turns_figure(turns),
        "form": MessageForm(),
        "builtin": selectors.connection_is_this_server(
            chat.connection, host=request.get_host(), port=request.get_port()
        ),
    }


@login_required
@require_GET
@vary_on_headers("HX-Request")
def chat_detail(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    """The chat; its live part is polled by htmx while a reply is awaited (286 after), with
    the version it shows: 204, nothing to swap, while that is unchanged."""
    membership = _membership(request, slug)
    if request.htmx and not request.htmx.history_restore_request:
        seen = request.GET.get("v")
        if seen is not None:
            chat = selectors.chat_get(organization=membership.organization, code=code)
            pending = selectors.chat_pending_call(chat)
            if pending is not None and seen == selectors.chat_live_version(chat, pending):
                return HttpResponse(status=204)  # nothing new: htmx swaps nothing
        context = _chat_context(request, membership, code)
        response = render(request, "calls/chat.html#live", context)
        if _can_send(membership, context):  # Send is enabled again once the reply is in
            response.content += _rendered(request, "calls/chat.html#send_button", context)
        return response if context["pending"] else HttpResponseStopPolling(response.content)
    return render(request, "calls/chat.html", _chat_context(request, membership, code))


@login_required
@require_GET
def chat_streaming(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    """A streamed reply's text so far, polled every 500 ms apart from the chat's live part
    (every message and the chart, polled every second and sent only when changed); 286 once
    no reply is awaited, and the live part's next poll brings the recorded one."""
    membership = _membership(request, slug)
    chat = selectors.chat_get(organization=membership.organization, code=code)
    pending, partial = selectors.chat_streaming(chat)
    context = {
        "organization": membership.organization,
        "chat": chat,
        "pending": pending,
        "partial": partial,
    }
    response = render(request, "calls/chat.html#streaming", context)
    return response if pending is not None else HttpResponseStopPolling(response.content)


def _can_send(membership: Membership, context: dict[str, object]) -> bool:
    chat = context["chat"]
    assert isinstance(chat, Chat)
    return membership.can_chat and chat.connection_id is not None


def _rendered(request: HttpRequest, template: str, context: dict[str, object]) -> bytes:
    """A partial out of band (htmx swaps it by its id), beside the response's own part."""
    return render(request, template, {**context, "button_oob": True, "live_oob": True}).content


@login_required
@require_POST
def chat_send(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = _membership(request, slug)
    chat = selectors.chat_get(organization=membership.organization, code=code)
    if not membership.can_chat:
        return _forbidden("Viewers cannot send messages.")
    form = MessageForm(request.POST)
    if not form.is_valid():
        error, status = "Type a message first.", 400
    elif chat.connection is None:
        error, status = "This chat's connection was deleted.", 400
    else:
        try:
            chat_services.chat_message_send(chat=chat, text=form.cleaned_data["text"])
        except chat_services.ChatBusy as busy:
            error, status = str(busy).capitalize() + ".", 409
        else:
            if request.htmx:  # an empty box, the live part (the message, then waiting)
                context = _chat_context(request, membership, code)
                response = render(request, "calls/chat.html#send", context)
                response.content += _rendered(request, "calls/chat.html#live", context)
                # and the title, which the first message gives the chat
                response.content += _rendered(request, "calls/chat.html#title", context)
                return response
            return redirect("chat_detail", slug=slug, code=chat.code)
    # The message stays in the box: a redirect would have emptied it, and a user who typed
    # while the previous reply was on its way lost what they wrote.
    if request.htmx and chat.connection is None:
        return HttpResponseClientRefresh()  # the page again: it has no send box now
    context = _chat_context(request, membership, code)
    context["form"] = form
    if request.htmx:  # htmx swaps a 2xx only: the refusal is said in the box's card
        response = render(request, "calls/chat.html#send", {**context, "send_error": error})
        if context["pending"]:
            # A reply is awaited (sent from another tab, say) and this page may not be
            # polling: the live part with it starts the poll that enables Send again.
            response.content += _rendered(request, "calls/chat.html#live", context)
        return response
    messages.error(request, error)
    return render(request, "calls/chat.html", context, status=status)


# --- Experiments -------------------------------------------------------------------------------


def _candidates(request: HttpRequest, membership: Membership) -> list[tuple[str, str]]:
    """The conversations offered: the overview's filtered ones (its query string, which a
    POST keeps in the form's address), and on POST those submitted that are the
    organization's too (never a replay)."""
    organization = membership.organization
    limit = settings.COSTLAB_EXPERIMENT_MAX_CONVERSATIONS
    offered = _filtered_candidates(request, organization, limit)
    if request.method != "POST":
        return offered
    # The form posts to its own address, filters included: a refused form offers the same
    # list again (with only the checked ones it offered nothing to check after "none").
    codes = []
    for code in request.POST.getlist("conversations"):
        try:
            codes.append(UUID(code))
        except ValueError:
            continue
    known = {code for code, _ in offered}
    chosen = organization.conversations.filter(code__in=codes).exclude(
        source=ConversationSource.REPLAY
    )
    return offered + [
        (str(c.code), c.title or str(c.code)) for c in chosen if str(c.code) not in known
    ]


def _filtered_candidates(
    request: HttpRequest, organization: Organization, limit: int
) -> list[tuple[str, str]]:
    filters = UsageFilterForm(request.GET).to_filter()
    rows = conversation_selectors.conversation_list(organization, filters, limit=limit * 2)
    replays = set(
        organization.conversations.filter(
            source=ConversationSource.REPLAY, code__in=[r.code for r in rows]
        ).values_list("code", flat=True)
    )
    return [(str(r.code), r.title or str(r.code)) for r in rows if r.code not in replays][:limit]


@login_required
@require_GET
def experiments(request: HttpRequest, slug: str) -> HttpResponse:
    membership = _membership(request, slug)
    context = {
        "organization": membership.organization,
        "membership": membership,
        "experiments": selectors.experiments(membership.organization),
    }
    return render(request, "calls/experiments.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def experiment_new(request: HttpRequest, slug: str) -> HttpResponse:
    membership = _membership(request, slug)
    if not membership.can_chat:
        return _forbidden("Experiments spend the organization's money: analysts and admins.")
    organization = membership.organization
    form = ExperimentForm(
        request.POST or None, organization=organization, candidates=_candidates(request, membership)
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            variants = [
                experiment_services.variant_parse(line)
                for line in data["variants"].splitlines()
                if line.strip()
            ]
            experiment = experiment_services.experiment_create(
                organization=organization,
                user=request.user if request.user.is_authenticated else None,
                conversations=list(
                    organization.conversations.filter(code__in=data["conversations"])
                ),
                variants=variants,
                connection=data["connection"],
                history_mode=data["history_mode"],
                cap=data["cap"],
                name=data["name"],
            )
        except experiment_services.ExperimentInvalid as invalid:
            form.add_error(None, str(invalid))
        else:
            return redirect("experiment_detail", slug=slug, code=experiment.code)
    context = {"organization": organization, "membership": membership, "form": form}
    return render(request, "calls/experiment_new.html", context, status=400 if form.errors else 200)


def _chart_choices(originals: list[tuple[str, str]], turns: Counter[str]) -> list[tuple[str, str]]:
    """The chart's conversations by title, each with its number of turns, and its code's
    start where two share a title: ordered by code, two "Imported transcript" read alike."""
    titles = Counter(title for _, title in originals)
    choices = []
    for code, title in sorted(originals, key=lambda o: (o[1].casefold(), o[0])):
        count = turns[code]
        label = f"{title or code} ({count} turn{'s' if count != 1 else ''})"
        if title and titles[title] > 1:
            label += f" #{code[:8]}"
        choices.append((code, label))
    return choices


@login_required
@require_GET
@vary_on_headers("HX-Request")
def experiment_detail(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    """The prediction, the run's progress (polled by htmx until it ends: then 286) and the
    results, with a per-turn chart of one conversation (?conversation=CODE)."""
    membership = _membership(request, slug)
    experiment = selectors.experiment_get(organization=membership.organization, code=code)
    progress = selectors.experiment_progress(experiment)
    results = selectors.experiment_results(experiment)
    originals = sorted({(t.conversation, t.title) for r in results for t in r.turns})
    # By default the conversation with the most turns: the first by code drew a one-turn
    # conversation as a single point (a walk's reading); its chart is the one worth opening on.
    # Each turn once: every variant replays it (counted per variant, a 2-turn chat read 6).
    turns = Counter(conversation for conversation, _ in {
        (t.conversation, t.index) for r in results for t in r.turns
    })  # fmt: skip
    longest = min(originals, key=lambda o: (-turns[o[0]], o[1]), default=("", ""))[0]
    asked = request.GET.get("conversation", "")
    asked = asked if asked in turns else ""
    chosen = asked or longest
    estimate = experiment.predicted_spend
    context = {
        "organization": membership.organization,
        "membership": membership,
        "experiment": experiment,
        "variants": experiment.variants.select_related("connection"),
        "progress": progress,
        "results": results,
        "originals": _chart_choices(originals, turns),
        "chosen": chosen,
        # The poll keeps only a choice the user made: a default picked while the run had
        # few results would stay pinned.
        "asked": asked,
        "figure": experiment_charts.predicted_vs_measured_figure(results, chosen)
        if chosen
        else None,
        "needs_confirmation": experiment_services.needs_confirmation(experiment),
        "threshold": settings.COSTLAB_EXPERIMENT_CONFIRM_USD,
        "default_cap": experiment_services.default_cap(estimate) if estimate else None,
        "start_form": ExperimentStartForm(),
    }
    if request.htmx and not request.htmx.history_restore_request:
        response = render(request, "calls/experiment.html#live", context)
        return HttpResponseStopPolling(response.content) if progress.is_finished else response
    return render(request, "calls/experiment.html", context)


@login_required
@require_POST
def experiment_start(request: HttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = _membership(request, slug)
    experiment = selectors.experiment_get(organization=membership.organization, code=code)
    if not membership.can_chat:
        return _forbidden("Experiments spend the organization's money: analysts and admins.")
    form = ExperimentStartForm(request.POST)
    if not form.is_valid():
        messages.error(request, form.errors.as_text())
        return redirect("experiment_detail", slug=slug, code=code)
    cap = form.cleaned_data["cap"]
    try:
        experiment_services.experiment_start(
            experiment=experiment,
            membership=membership,
            confirmed=form.cleaned_data["confirm"],
            cap=cap,
        )
    except experiment_services.ExperimentRefused as refused:
        messages.error(request, str(refused))
    return redirect("experiment_detail", slug=slug, code=code)


@login_required
@require_POST
def experiment_cancel(request: HttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = _membership(request, slug)
    experiment = selectors.experiment_get(organization=membership.organization, code=code)
    if not membership.can_chat:
        return _forbidden("Only analysts and admins cancel experiments.")
    experiment_services.experiment_cancel(experiment=experiment, membership=membership)
    messages.success(request, "Cancelled: no further call will start.")
    return redirect("experiment_detail", slug=slug, code=code)


CSV_COLUMNS = (
    "variant", "conversation", "title", "turn", "status",
    "predicted_prompt_tokens", "measured_prompt_tokens",
    "predicted_cached_tokens", "measured_cached_tokens", "cached_gap",
    "predicted_cost", "measured_cost", "latency_ms", "ttft_ms", "attempts", "error",
)  # fmt: skip


@login_required
@require_GET
def experiment_csv(request: HttpRequest, slug: str, code: UUID) -> StreamingHttpResponse:
    membership = _membership(request, slug)
    experiment = selectors.experiment_get(organization=membership.organization, code=code)
    results = selectors.experiment_results(experiment)

    def rows() -> Iterator[list[Cell]]:
        for result in results:
            for t in result.turns:
                yield [
                    result.label,
                    t.conversation,
                    t.title,
                    t.index + 1,  # from 1, as the chart and the usage exports number turns
                    t.status,
                    t.predicted_prompt_tokens,
                    t.measured_prompt_tokens,
                    t.predicted_cached_tokens,
                    t.measured_cached_tokens,
                    t.cached_gap,
                    t.predicted_cost,
                    t.measured_cost,
                    t.latency_ms,
                    t.ttft_ms,
                    t.attempts,
                    t.error,
                ]

    # The exports' one writer: text cells neutralised against formulas, one row in memory.
    response = StreamingHttpResponse(
        csv_lines(CSV_COLUMNS, rows()), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="experiment-{experiment.code}.csv"'
    return response
