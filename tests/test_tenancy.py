"""A user of organization A gets a 404 for anything of organization B, on every URL: the
enumeration test walks the whole URLconf with the table in tests/org_urls.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls import path as url_path
from pytest_django import Settings

from calls.models import ApiCall, EndpointKey, ProviderConnection
from conversations.models import (
    Conversation,
    ImportJob,
    Membership,
    Message,
    Organization,
    Role,
)

from .factories import MembershipFactory, OrganizationFactory
from .org_urls import ORG_URLS, OUTSIDE_ORGS, OrgUrl, World, world_build

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Setup:
    mine: Membership
    theirs: Organization
    conversation: Conversation
    job: ImportJob


@pytest.fixture
def setup(client: Client) -> Setup:
    mine = MembershipFactory.create()
    theirs = OrganizationFactory.create()
    conversation = Conversation.objects.create(organization=theirs, title="secret plans")
    job = ImportJob.objects.create(organization=theirs, original_name="secret.jsonl")
    client.force_login(mine.user)
    return Setup(mine=mine, theirs=theirs, conversation=conversation, job=job)


def test_it_hides_other_organizations_pages_and_partials(client: Client, setup: Setup) -> None:
    theirs, conversation, job = setup.theirs, setup.conversation, setup.job
    urls = [
        reverse("org_overview", args=[theirs.slug]),
        reverse("conversation_table", args=[theirs.slug]),
        reverse("conversation_detail", args=[theirs.slug, conversation.code]),
        reverse("conversation_what_if", args=[theirs.slug, conversation.code]),
        reverse("imports", args=[theirs.slug]),
        reverse("import_job_detail", args=[theirs.slug, job.code]),
        reverse("import_job_progress", args=[theirs.slug, job.code]),
    ]
    for url in urls:
        assert client.get(url).status_code == 404, url
        assert client.get(url, headers={"HX-Request": "true"}).status_code == 404, url


def test_it_hides_another_orgs_objects_behind_my_own_org_slug(client: Client, setup: Setup) -> None:
    mine, conversation, job = setup.mine, setup.conversation, setup.job
    slug = mine.organization.slug
    assert (
        client.get(reverse("conversation_detail", args=[slug, conversation.code])).status_code
        == 404
    )
    assert client.get(reverse("import_job_detail", args=[slug, job.code])).status_code == 404
    assert (
        client.get(reverse("conversation_what_if", args=[slug, conversation.code])).status_code
        == 404
    )
    assert client.get(reverse("import_job_progress", args=[slug, job.code])).status_code == 404


def test_it_refuses_uploads_into_another_org(client: Client, setup: Setup, fixtures: Path) -> None:
    theirs, job = setup.theirs, setup.job
    with (fixtures / "chat_small.json").open("rb") as handle:
        response = client.post(reverse("imports", args=[theirs.slug]), {"file": handle})
    assert response.status_code == 404
    assert not ImportJob.objects.filter(organization=theirs).exclude(pk=job.pk).exists()


def test_it_requires_login(client: Client, setup: Setup) -> None:
    mine = setup.mine
    client.logout()
    response = client.get(reverse("org_overview", args=[mine.organization.slug]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert b"secret plans" not in client.get(reverse("home"), follow=True).content


def test_it_shows_my_own_conversation(client: Client, setup: Setup) -> None:
    mine = setup.mine
    conversation = Conversation.objects.create(organization=mine.organization, title="my plans")
    response = client.get(
        reverse("conversation_detail", args=[mine.organization.slug, conversation.code])
    )
    assert response.status_code == 200
    assert b"my plans" in response.content


@pytest.mark.parametrize(
    ("role", "may_import"), [(Role.VIEWER, False), (Role.ANALYST, True), (Role.ADMIN, True)]
)
def test_it_lets_only_analysts_and_admins_import(
    client: Client, fixtures: Path, settings: Settings, tmp_path: Path, role: str, may_import: bool
) -> None:
    settings.MEDIA_ROOT = tmp_path
    membership = MembershipFactory.create(role=role)
    client.force_login(membership.user)
    url = reverse("imports", args=[membership.organization.slug])
    page = client.get(url).content.decode()
    assert ('id="upload-form"' in page) is may_import
    assert ("Viewers can look but not import" in page) is not may_import
    with (fixtures / "chat_small.json").open("rb") as handle:
        response = client.post(url, {"file": handle})
    assert response.status_code == (302 if may_import else 403)
    assert ImportJob.objects.filter(organization=membership.organization).exists() is may_import


def test_it_answers_404_for_a_code_that_is_not_a_uuid(client: Client, setup: Setup) -> None:
    slug = setup.mine.organization.slug
    for path in (f"/o/{slug}/c/not-a-uuid/", f"/o/{slug}/imports/12345/progress/"):
        assert client.get(path).status_code == 404, path


# The whole URLconf, by enumeration.

METHODS = ("GET", "POST")
HEADERS: tuple[dict[str, str], ...] = ({}, {"HX-Request": "true"})
ORG_ARGUMENT = "<slug:slug>"


def url_entries(
    patterns: Sequence[URLPattern | URLResolver], prefix: str = ""
) -> list[tuple[str | None, str]]:
    """(name, route) of every URL; a namespace listed in OUTSIDE_ORGS stands for its URLs."""
    entries: list[tuple[str | None, str]] = []
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            if pattern.namespace and f"{pattern.namespace}:" in OUTSIDE_ORGS:
                entries.append((f"{pattern.namespace}:", route))
            else:
                entries.extend(url_entries(pattern.url_patterns, route))
        else:
            entries.append((pattern.name, route))
    return entries


def unfillable(patterns: Sequence[URLPattern | URLResolver]) -> list[str]:
    """What the table cannot account for: a URL with no row, an org URL listed as outside
    any org, a row whose URL is gone."""
    problems = []
    entries = url_entries(patterns)
    for name, route in entries:
        if name is None:
            problems.append(f"{route}: unnamed, so the table cannot list it")
        elif name in OUTSIDE_ORGS and ORG_ARGUMENT in route:
            problems.append(f"{name} ({route}) takes an organization: it needs an ORG_URLS row")
        elif name not in ORG_URLS and name not in OUTSIDE_ORGS:
            problems.append(f"{name} ({route}): no row in tests/org_urls.py")
    names = {name for name, _ in entries}
    problems += [f"{name}: in tests/org_urls.py but not a URL" for name in ORG_URLS.keys() - names]
    return problems


def ask(
    client: Client, method: str, url: str, data: dict[str, Any], headers: dict[str, str]
) -> int:
    if method == "GET":
        return client.get(url, headers=headers).status_code
    return client.post(url, data, headers=headers).status_code


def variants(row: OrgUrl, mine: World, theirs: World) -> list[dict[str, object]]:
    """Their object under their slug, and (when the URL names an object) under mine."""
    theirs_kwargs = row.fill(theirs)
    found = [theirs_kwargs]
    if set(theirs_kwargs) != {"slug"}:
        found.append({**theirs_kwargs, "slug": mine.organization.slug})
    return found


def their_state(world: World) -> tuple[object, ...]:
    org = world.organization
    return (
        Organization.objects.filter(pk=org.pk).exists(),
        Conversation.objects.filter(organization=org).count(),
        ImportJob.objects.filter(organization=org).count(),
        sorted(Membership.objects.filter(organization=org).values_list("user_id", "role")),
        # calls/: connections (their keys too), calls made, messages sent in chats
        sorted(
            ProviderConnection.objects.filter(organization=org).values_list(
                "name", "base_url", "api_key_encrypted"
            )
        ),
        ApiCall.objects.filter(organization=org).count(),
        sorted(EndpointKey.objects.filter(organization=org).values_list("key_hash", "revoked")),
        Message.objects.filter(conversation__organization=org).count(),
    )


def test_it_fails_on_a_url_the_table_cannot_fill() -> None:
    def view(request: object) -> HttpResponse:
        return HttpResponse()

    patterns: list[URLPattern | URLResolver] = [
        url_path("o/<slug:slug>/", view, name="org_overview"),
        url_path("o/<slug:slug>/brand-new/", view, name="brand_new"),
        url_path("o/<slug:slug>/home/", view, name="home"),
        url_path("nameless/", view),
    ]
    problems = unfillable(patterns)
    assert any(p.startswith("brand_new (o/<slug:slug>/brand-new/): no row") for p in problems)
    assert any(p.startswith("home (o/<slug:slug>/home/) takes an organization") for p in problems)
    assert any(p.startswith("nameless/: unnamed") for p in problems)
    assert any(
        p.startswith("conversation_detail: in tests/org_urls.py but not a URL") for p in problems
    )


@pytest.mark.parametrize("role", list(Role))
def test_it_answers_404_for_another_orgs_objects_on_every_url(
    client: Client, role: Role, settings: Settings, tmp_path: Path
) -> None:
    settings.MEDIA_ROOT = tmp_path
    assert unfillable(get_resolver().url_patterns) == []
    me = MembershipFactory.create(role=role)
    mine, theirs = world_build(me.organization), world_build(OrganizationFactory.create())
    before = their_state(theirs)
    client.force_login(me.user)
    wrong = []
    for name, row in ORG_URLS.items():
        for kwargs in variants(row, mine, theirs):
            url = reverse(name, kwargs=kwargs)
            for method in METHODS:
                expected = 404 if method in row.methods else 405
                for headers in HEADERS:
                    status = ask(client, method, url, row.data(theirs), headers)
                    if status != expected:
                        wrong.append(f"{role} {method} {url} {headers}: {status}, not {expected}")
    assert wrong == []
    assert their_state(theirs) == before


@pytest.mark.parametrize("role", list(Role))
def test_it_answers_each_role_on_its_own_org_as_the_table_says(
    client: Client, role: Role, settings: Settings, tmp_path: Path
) -> None:
    """The other half: the same URLs filled with the requester's own objects work for the
    roles the table names (so the 404s above are tenancy, not a bad filling) and answer 403
    to the others."""
    settings.MEDIA_ROOT = tmp_path
    me = MembershipFactory.create(role=role)
    client.force_login(me.user)
    wrong = []
    for name, row in ORG_URLS.items():
        for method in METHODS:
            for headers in HEADERS:
                # A world of its own for each request: the POSTs delete and change things.
                organization = OrganizationFactory.create()
                MembershipFactory.create(user=me.user, organization=organization, role=role)
                own = world_build(organization)
                url = reverse(name, kwargs=row.fill(own))
                status = ask(client, method, url, row.data(own), headers)
                allowed = row.methods.get(method)
                ok = (
                    status == 405
                    if allowed is None
                    else (status < 400 or (status == 400 and method == "POST"))
                    if role in allowed
                    else status == 403
                )
                if not ok:
                    wrong.append(f"{role} {method} {url} {headers}: {status}")
    assert wrong == []


def test_it_sends_anonymous_visitors_of_every_org_url_to_log_in(client: Client) -> None:
    world = world_build(OrganizationFactory.create())
    for name, row in ORG_URLS.items():
        url = reverse(name, kwargs=row.fill(world))
        for method in row.methods:
            response = client.get(url) if method == "GET" else client.post(url, row.data(world))
            assert response.status_code == 302, (method, url)
            assert response["Location"].startswith(reverse("login")), (method, url)
