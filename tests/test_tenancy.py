"""A user of organization A gets a 404 for anything of organization B."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings

from conversations.models import Conversation, ImportJob, Membership, Organization, Role

from .factories import MembershipFactory, OrganizationFactory

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
    client: Client,
    fixtures: Path,
    settings: Settings,
    tmp_path: Path,
    role: str,
    may_import: bool,
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
