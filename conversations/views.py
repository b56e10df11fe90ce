"""Thin views: parse the request, call a selector or a service, render.

Every view resolves the organization through the user's membership first, so a user of
organization A gets a 404 for anything of organization B, pages and partials alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseStopPolling
from django_htmx.middleware import HtmxDetails

from . import breakdowns, cache_report, charts, fix_list, selectors, what_if
from .csv_export import csv_lines
from .engine.metrics import COST_REDUCTION_TARGET, HIT_RATE_TARGET
from .forms import (
    BreakdownForm,
    InviteForm,
    OrganizationDeleteForm,
    RoleForm,
    TagsForm,
    UploadForm,
    UsageFilterForm,
    tags_text,
)
from .jsonl_export import jsonl_lines
from .models import Conversation, Membership, Organization, Role
from .services import deletion
from .services import imports as import_services
from .services import members as member_services
from .services import tags as tag_services


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


# Views that answer an htmx request with a fragment say so, or a browser's cache may hand
# the fragment back as the page (Back after a swap pushed the URL) or the page to a swap.
HTMX_HEADERS = ("HX-Request", "HX-History-Restore-Request")


def wants_fragment(request: HtmxHttpRequest) -> bool:
    """True for an htmx swap; a history restore (htmx found no cached copy of a pushed URL)
    replaces the whole body, so it gets the whole page."""
    return bool(request.htmx) and not request.htmx.history_restore_request


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    organizations = selectors.user_organizations(request.user)
    if len(organizations) == 1:
        return redirect("org_overview", slug=organizations[0].slug)
    return render(request, "conversations/home.html", {"organizations": organizations})


def _unpriced_models(
    organization: Organization, totals: selectors.OrgTotals, *, links: bool
) -> list[tuple[str, int, str | None]]:
    """Each unpriced model, its calls, and (`links`) a link to Django admin's new price row
    with the model and its start filled in."""
    if not links or not totals.unpriced_models:
        return [(model, calls, None) for model, calls in totals.unpriced_models]
    since = selectors.unpriced_since(organization, [m for m, _ in totals.unpriced_models])
    add = reverse("admin:pricing_modelprice_add")

    def link(model: str) -> str | None:
        if model not in since:
            return None
        start = (since[model] - timedelta(days=1)).isoformat()
        return f"{add}?{urlencode({'model': model, 'effective_from': start})}"

    return [(model, calls, link(model)) for model, calls in totals.unpriced_models]


@login_required
@require_GET
@vary_on_headers(*HTMX_HEADERS)
def org_overview(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    membership = selectors.membership_get(user=request.user, slug=slug)
    organization = membership.organization
    form = UsageFilterForm(request.GET)
    filters = form.to_filter()
    totals = selectors.org_totals(organization, filters)
    # Days summed by week or month when there are too many for a bar each.
    day_bin, day_rows = charts.day_bins(selectors.cost_by_day(organization, filters))
    conversations = selectors.conversation_list(organization, filters, sort=form.sort_value)
    context = {
        "organization": organization,
        "membership": membership,
        "form": form,
        "totals": totals,
        # Staff edit the price book (Django admin): each unpriced model links to a new row,
        # starting a day before its first unpriced call (any time zone's day is covered).
        "unpriced_models": _unpriced_models(organization, totals, links=request.user.is_staff),
        "replays": selectors.replay_share(organization, filters),
        "calibration": selectors.calibration(organization, filters),
        "calibration_replayed": selectors.calibration_replayed_calls(organization, filters),
        "models": selectors.models_used(organization),
        "model_figure": charts.cost_by_model_figure(selectors.cost_by_model(organization, filters)),
        "day_bin": day_bin,
        "day_figure": charts.cost_by_day_figure(day_rows, day_bin),
        "hits_figure": charts.cache_hits_by_day_figure(day_rows, day_bin),
        "conversations": conversations,
        "conversations_unpriced": any(row.unpriced for row in conversations),
        "conversations_total": totals.conversations,
        "sort": form.sort_value,
        "query": request.GET.urlencode(),
    }
    template = "conversations/overview.html"
    if wants_fragment(request):
        template += "#dashboard"
    return render(request, template, context)


@login_required
@require_GET
@vary_on_headers(*HTMX_HEADERS)
def conversation_table(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The sortable conversation list alone, for HTMX swaps. Opened as a page (a link
    copied, a new tab), it is the overview it belongs to, with the same filters and order:
    the list alone had no layout, navigation or stylesheet."""
    if not wants_fragment(request):  # (a history restore replaces the whole body too)
        return org_overview(request, slug)
    membership = selectors.membership_get(user=request.user, slug=slug)
    form = UsageFilterForm(request.GET)
    filters = form.to_filter()
    conversations = selectors.conversation_list(
        membership.organization, filters, sort=form.sort_value
    )
    return render(
        request,
        "conversations/overview.html#conversation-table",
        {
            "organization": membership.organization,
            "membership": membership,
            "conversations": conversations,
            "conversations_unpriced": any(row.unpriced for row in conversations),
            "conversations_total": selectors.conversation_count(membership.organization, filters),
            "sort": form.sort_value,
            "form": form,
        },
    )


@login_required
@require_GET
def conversation_detail(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = selectors.membership_get(user=request.user, slug=slug)
    conversation = selectors.conversation_get(organization=membership.organization, code=code)
    return _conversation_page(request, membership, conversation, _tags_form(conversation))


def _conversation_page(
    request: HttpRequest,
    membership: Membership,
    conversation: Conversation,
    tags_form: TagsForm,
    status: int = 200,
) -> HttpResponse:
    turns = selectors.conversation_turns(conversation)
    summary = selectors.conversation_summary(turns)
    context = {
        "organization": membership.organization,
        "membership": membership,
        "conversation": conversation,
        "turns": turns,
        "summary": summary,
        "turn_figure": charts.conversation_turns_figure(turns),
        "tags_form": tags_form,
        # The what-if's scenario, from the URL its select wrote (HX-Replace-Url below), so
        # a reload or a shared link shows the retention that was chosen.
        # As asked: the what-if says so when it is not a scenario (and corrects the URL).
        "retention": request.GET.get("retention") or None,
    }
    return render(request, "conversations/conversation.html", context, status=status)


def _retention(request: HttpRequest) -> str:
    retention = request.GET.get("retention", what_if.DEFAULT_RETENTION)
    return retention if retention in what_if.RETENTION_SCENARIOS else what_if.DEFAULT_RETENTION


@login_required
@require_GET
def conversation_what_if(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    """Projection and strategy comparison, loaded after the page so it never slows it."""
    membership = selectors.membership_get(user=request.user, slug=slug)
    conversation = selectors.conversation_get(organization=membership.organization, code=code)
    retention = _retention(request)
    asked = request.GET.get("retention")
    context = {
        "organization": membership.organization,
        "conversation": conversation,
        "what_if": what_if.conversation_what_if(conversation, retention=retention),
        "retention_scenarios": what_if.RETENTION_SCENARIOS,
        # A scenario from a hand-edited link: said, not silently replaced by the default.
        "retention_refused": asked if asked is not None and asked != retention else None,
    }
    response = render(request, "conversations/conversation.html#what-if", context)
    if request.htmx and "retention" in request.GET:
        # The page's address keeps the choice (replaced, not pushed: a scenario is not a
        # page to go Back to), so a reload shows it again rather than the default.
        page = reverse("conversation_detail", args=[slug, code])
        response["HX-Replace-Url"] = f"{page}?{urlencode({'retention': retention})}"
    return response


@login_required
@require_POST
def conversation_delete(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = selectors.membership_get(user=request.user, slug=slug)
    conversation = selectors.conversation_get(organization=membership.organization, code=code)
    if not membership.can_delete:
        return HttpResponse("Viewers cannot delete conversations.", status=403)
    deletion.conversation_delete(conversation=conversation)
    messages.success(request, f"Deleted the conversation {conversation}.")
    return redirect("org_overview", slug=slug)


@login_required
@require_http_methods(["GET", "POST"])
def imports(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    membership = selectors.membership_get(user=request.user, slug=slug)
    organization = membership.organization
    form = UploadForm()
    if request.method == "POST":
        if not membership.can_import:
            return HttpResponse("Viewers cannot import.", status=403)
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            job = import_services.import_job_create(
                organization=organization,
                user=request.user,
                upload=form.cleaned_data["file"],
                second_upload=form.cleaned_data.get("second_file"),
                format=form.cleaned_data.get("format") or "",
                tags=form.cleaned_data.get("tags") or {},
            )
            # A duplicate's page says so itself, with a link to the first import of it.
            return redirect("import_job_detail", slug=slug, code=job.code)
    context = {
        "organization": organization,
        "membership": membership,
        "form": form,
        "jobs": selectors.import_jobs(organization),
        "without_job": selectors.imported_without_job(organization),
    }
    return render(
        request, "conversations/imports.html", context, status=400 if form.errors else 200
    )


@login_required
@require_GET
def import_job_detail(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = selectors.membership_get(user=request.user, slug=slug)
    job = selectors.import_job_get(organization=membership.organization, code=code)
    import_services.import_progress_apply(job)
    context = {"organization": membership.organization, "membership": membership, "job": job}
    return render(request, "conversations/import_job.html", context)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def import_job_progress(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    """Polled by the progress bar every second; a finished job answers 286 (HTMX's
    'stop polling') with its final state."""
    membership = selectors.membership_get(user=request.user, slug=slug)
    job = selectors.import_job_get(organization=membership.organization, code=code)
    import_services.import_progress_apply(job)
    context = {"organization": membership.organization, "job": job}
    response = render(request, "conversations/import_job.html#progress", context)
    if job.is_finished and request.htmx:
        stop = HttpResponseStopPolling(response.content)
        return stop
    return response


ADMINS_ONLY = "Only the organization's admins manage it."


@login_required
@require_http_methods(["GET", "POST"])
def members(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    membership = selectors.membership_get(user=request.user, slug=slug)
    if not membership.is_admin:
        return HttpResponse(ADMINS_ONLY, status=403)
    organization = membership.organization
    form = InviteForm()
    if request.method == "POST":
        form = InviteForm(request.POST)
        if form.is_valid():
            try:
                added = member_services.membership_invite(
                    organization=organization,
                    identifier=form.cleaned_data["identifier"],
                    role=form.cleaned_data["role"],
                )
            except member_services.MemberError as exc:
                form.add_error("identifier", str(exc))
            else:
                messages.success(
                    request, f"{added.user.get_username()} is now a member ({added.role})."
                )
                return redirect("members", slug=slug)
    context = {
        "organization": organization,
        "membership": membership,
        "members": selectors.members(organization),
        "form": form,
        "roles": Role.choices,
        "delete_form": OrganizationDeleteForm(slug=slug),
    }
    return render(
        request, "conversations/members.html", context, status=400 if form.errors else 200
    )


@login_required
@require_POST
def member_role(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = selectors.membership_get(user=request.user, slug=slug)
    target = selectors.member_get(organization=membership.organization, code=code)
    if not membership.is_admin:
        return HttpResponse(ADMINS_ONLY, status=403)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a role: viewer, analyst or admin.")
        return redirect("members", slug=slug)
    try:
        member_services.membership_role_change(membership=target, role=form.cleaned_data["role"])
    except member_services.MemberError as exc:
        messages.error(request, str(exc))
        return redirect("members", slug=slug)
    messages.success(request, f"{target.user.get_username()} is now {target.role}.")
    if target.pk == membership.pk and not target.is_admin:
        return redirect("org_overview", slug=slug)  # no longer sees the members page
    return redirect("members", slug=slug)


@login_required
@require_POST
def member_remove(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = selectors.membership_get(user=request.user, slug=slug)
    target = selectors.member_get(organization=membership.organization, code=code)
    if not membership.is_admin:
        return HttpResponse(ADMINS_ONLY, status=403)
    leaving = target.pk == membership.pk
    try:
        member_services.membership_remove(membership=target)
    except member_services.MemberError as exc:
        messages.error(request, str(exc))
        return redirect("members", slug=slug)
    messages.success(request, f"{target.user.get_username()} is no longer a member.")
    if leaving:
        return redirect("home")
    return redirect("members", slug=slug)


@login_required
@require_POST
def organization_delete(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    membership = selectors.membership_get(user=request.user, slug=slug)
    if not membership.is_admin:
        return HttpResponse(ADMINS_ONLY, status=403)
    form = OrganizationDeleteForm(request.POST, slug=slug)
    if not form.is_valid():
        messages.error(request, f"Nothing was deleted: type {slug} to confirm.")
        return redirect("members", slug=slug)
    name = membership.organization.name
    deletion.organization_delete(organization=membership.organization)
    messages.success(request, f"Deleted the organization {name} and everything in it.")
    return redirect("home")


def _tags_form(conversation: Conversation) -> TagsForm:
    return TagsForm(initial={"tags": tags_text(conversation.tags)})


@login_required
@require_POST
def conversation_tags(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = selectors.membership_get(user=request.user, slug=slug)
    conversation = selectors.conversation_get(organization=membership.organization, code=code)
    if not membership.can_import:
        return HttpResponse("Viewers cannot change tags.", status=403)
    form = TagsForm(request.POST)
    if not form.is_valid():
        # The page again with what was typed and the error beside it: a redirect lost every
        # line, the good ones with the bad.
        return _conversation_page(request, membership, conversation, form, status=400)
    tag_services.conversation_tags_set(conversation=conversation, tags=form.cleaned_data["tags"])
    messages.success(request, "Tags saved.")
    return redirect("conversation_detail", slug=slug, code=code)


def _period(
    organization: Organization, form: BreakdownForm
) -> tuple[breakdowns.Slice, breakdowns.Slice | None]:
    current = form.to_slice(organization.time_zone)
    return current, current.previous() if form.compare_value else None


@login_required
@require_GET
@vary_on_headers(*HTMX_HEADERS)
def cache_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """Where the organization's cache misses cost money, and why."""
    membership = selectors.membership_get(user=request.user, slug=slug)
    organization = membership.organization
    form = BreakdownForm(request.GET)
    slice_ = form.to_slice(organization.time_zone)
    by_day = cache_report.lost_by_day(organization, slice_)
    by_model = cache_report.lost_by_model(organization, slice_)
    context = {
        "organization": organization,
        "membership": membership,
        "form": form,
        "models": selectors.models_used(organization),
        "summary": cache_report.cache_summary(organization, slice_),
        "by_reason": cache_report.lost_by_reason(organization, slice_),
        "breakers": cache_report.prefix_breakers(organization, slice_),
        "key_problems": cache_report.key_problems(organization, slice_),
        "day_figure": charts.lost_by_day_figure(by_day),
        "targets_figure": charts.cache_targets_figure(
            breakdowns.breakdown(organization, slice_, breakdowns.DIMENSIONS["day"], limit=400)
        ),
        "model_figure": charts.lost_by_model_figure(by_model),
        "hit_rate_target": HIT_RATE_TARGET,
        "cost_reduction_target": COST_REDUCTION_TARGET,
        "query": request.GET.urlencode(),
    }
    template = "conversations/cache.html"
    if wants_fragment(request):
        template += "#cache-body"
    return render(request, template, context)


@login_required
@require_GET
def cache_fixes(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The fix list, loaded after the cache page: it re-runs the simulator."""
    membership = selectors.membership_get(user=request.user, slug=slug)
    form = BreakdownForm(request.GET)
    context = {
        "organization": membership.organization,
        "fixes": fix_list.fix_list(
            membership.organization, form.to_slice(membership.organization.time_zone)
        ),
        "query": request.GET.urlencode(),
    }
    return render(request, "conversations/cache.html#fixes", context)


@login_required
@require_GET
@vary_on_headers(*HTMX_HEADERS)
def breakdown_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    membership = selectors.membership_get(user=request.user, slug=slug)
    organization = membership.organization
    form = BreakdownForm(request.GET)
    current, previous = _period(organization, form)
    dimension = form.dimension
    rows = breakdowns.breakdown(organization, current, dimension)
    shift = None
    if previous is not None:
        before = breakdowns.breakdown(organization, previous, dimension)
        shift = breakdowns.previous_shift(current, previous, dimension)
        paired = breakdowns.beside_previous(rows, before, dimension, shift, zone=current.zone)
    else:
        paired = [(row, None) for row in rows]
    dated = dimension.name in breakdowns.PERIOD_KEYS
    # A day beside the day `shift` days before it; months (or weeks of a period that is
    # not whole weeks) have no partner, so their column gives way to a hint.
    previous_column = breakdowns.compared(current, previous, dimension)
    context = {
        "organization": organization,
        "membership": membership,
        "form": form,
        "dimension": dimension,
        "dimensions": [
            *((d.name, d.label) for d in breakdowns.DIMENSIONS.values()),
            *(
                (f"{breakdowns.TAG_PREFIX}{k}", f"Tag {k}")
                for k in breakdowns.tag_keys(organization)
            ),
        ],
        "models": selectors.models_used(organization),
        "rows": paired,
        "previous_column": previous_column,
        "previous_shift": shift if dated else None,
        # The table's footnotes, only for marks it shows.
        "any_unpriced": any(row.unpriced for row in rows),
        "any_costlier": any(row.costlier for row in rows),
        "totals": breakdowns.slice_totals(organization, current),
        "previous_totals": (
            breakdowns.slice_totals(organization, previous) if previous is not None else None
        ),
        "previous": previous,
        "compare_unavailable": form.compare_value and previous is None,
        "figure": charts.breakdown_figure(
            [row for row, _ in paired],
            dimension,
            {row.key: partner for row, partner in paired} if previous_column else None,
        ),
        "query": request.GET.urlencode(),
    }
    template = "conversations/breakdown.html"
    if wants_fragment(request):
        template += "#breakdown-body"
    return render(request, template, context)


EXPORT_TABLES = ("conversations", "turns")


@login_required
@require_GET
def usage_export(request: HtmxHttpRequest, slug: str) -> HttpResponse | StreamingHttpResponse:
    """CSV (or JSON Lines: format=jsonl) of a table (conversations, turns) or of a breakdown
    (`by`), over the filters of the page it was linked from; streamed row by row from a
    server-side cursor."""
    membership = selectors.membership_get(user=request.user, slug=slug)
    organization = membership.organization
    form = BreakdownForm(request.GET)
    if not form.is_valid():
        errors = "; ".join(
            f"{name}: {' '.join(str(e) for e in problems)}"
            for name, problems in form.errors.items()
        )
        return HttpResponse(f"Bad filters: {errors}", status=400, content_type="text/plain")
    output = request.GET.get("format", "csv")
    if output not in ("csv", "jsonl"):
        return HttpResponse(
            f"format {output!r}: expected csv or jsonl", status=400, content_type="text/plain"
        )
    slice_ = form.to_slice(organization.time_zone)
    table = request.GET.get("table", "")
    header: list[str]
    rows: Iterator[tuple[Any, ...]]
    if table == "turns":
        header = [name for name, _ in breakdowns.TURN_COLUMNS]
        rows = breakdowns.turn_export_rows(organization, slice_)
    elif table == "conversations":
        header = list(breakdowns.CONVERSATION_COLUMNS)
        rows = breakdowns.conversation_export_rows(organization, slice_)
    elif table in ("", "breakdown"):
        table = form.dimension.name.replace(":", "-")
        previous = slice_.previous() if form.compare_value else None
        header = breakdowns.breakdown_export_header(
            form.dimension,
            with_previous=breakdowns.compared(slice_, previous, form.dimension),
        )
        rows = breakdowns.breakdown_export_rows(organization, slice_, form.dimension, previous)
    else:
        return HttpResponse(
            f"table {table!r}: expected conversations, turns or breakdown",
            status=400,
            content_type="text/plain",
        )
    if output == "jsonl":
        response = StreamingHttpResponse(
            jsonl_lines(header, rows), content_type="application/x-ndjson"
        )
    else:
        response = StreamingHttpResponse(csv_lines(header, rows), content_type="text/csv")
    name = f"{organization.slug}-{slugify(table)}.{output}"  # a tag name may hold quotes
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
