"""Thin views: parse the request, call a selector or a service, render.

Every view resolves the organization through the user's membership first, so a user of
organization A gets a 404 for anything of organization B, pages and partials alike."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseStopPolling
from django_htmx.middleware import HtmxDetails

from . import charts, selectors, what_if
from .forms import InviteForm, OrganizationDeleteForm, RoleForm, UploadForm, UsageFilterForm
from .models import Role
from .services import deletion
from .services import imports as import_services
from .services import members as member_services


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


@login_required
@require_GET
@vary_on_headers(*HTMX_HEADERS)
def org_overview(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    membership = selectors.membership_get(user=request.user, slug=slug)
    organization = membership.organization
    form = UsageFilterForm(request.GET)
    filters = form.to_filter()
    totals = selectors.org_totals(organization, filters)
    by_day = selectors.cost_by_day(organization, filters)
    context = {
        "organization": organization,
        "membership": membership,
        "form": form,
        "totals": totals,
        "calibration": selectors.calibration(organization, filters),
        "calibration_replayed": selectors.calibration_replayed_calls(organization, filters),
        "models": selectors.models_used(organization),
        "model_figure": charts.cost_by_model_figure(selectors.cost_by_model(organization, filters)),
        "day_figure": charts.cost_by_day_figure(by_day),
        "hits_figure": charts.cache_hits_by_day_figure(by_day),
        "conversations": selectors.conversation_list(organization, filters, sort=form.sort_value),
        "sort": form.sort_value,
        "query": request.GET.urlencode(),
    }
    template = "conversations/overview.html"
    if wants_fragment(request):
        template += "#dashboard"
    return render(request, template, context)


@login_required
@require_GET
def conversation_table(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The sortable conversation list alone, for HTMX swaps (it also renders standalone)."""
    membership = selectors.membership_get(user=request.user, slug=slug)
    form = UsageFilterForm(request.GET)
    conversations = selectors.conversation_list(
        membership.organization, form.to_filter(), sort=form.sort_value
    )
    return render(
        request,
        "conversations/overview.html#conversation-table",
        {
            "organization": membership.organization,
            "membership": membership,
            "conversations": conversations,
            "sort": form.sort_value,
            "form": form,
        },
    )


@login_required
@require_GET
def conversation_detail(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    membership = selectors.membership_get(user=request.user, slug=slug)
    conversation = selectors.conversation_get(organization=membership.organization, code=code)
    turns = selectors.conversation_turns(conversation)
    summary = selectors.conversation_summary(turns)
    context = {
        "organization": membership.organization,
        "membership": membership,
        "conversation": conversation,
        "turns": turns,
        "summary": summary,
        "turn_figure": charts.conversation_turns_figure(turns),
    }
    return render(request, "conversations/conversation.html", context)


@login_required
@require_GET
def conversation_what_if(request: HtmxHttpRequest, slug: str, code: UUID) -> HttpResponse:
    """Projection and strategy comparison, loaded after the page so it never slows it."""
    membership = selectors.membership_get(user=request.user, slug=slug)
    conversation = selectors.conversation_get(organization=membership.organization, code=code)
    retention = request.GET.get("retention", what_if.DEFAULT_RETENTION)
    if retention not in what_if.RETENTION_SCENARIOS:
        retention = what_if.DEFAULT_RETENTION
    context = {
        "organization": membership.organization,
        "conversation": conversation,
        "what_if": what_if.conversation_what_if(conversation, retention=retention),
        "retention_scenarios": what_if.RETENTION_SCENARIOS,
    }
    return render(request, "conversations/conversation.html#what-if", context)


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
            )
            if job.duplicate_of_id:
                messages.info(request, f"{job.original_name} was already imported: nothing new.")
            return redirect("import_job_detail", slug=slug, code=job.code)
    context = {
        "organization": organization,
        "membership": membership,
        "form": form,
        "jobs": selectors.import_jobs(organization),
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
