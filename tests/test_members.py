"""Org admins manage members in the app: invite an existing user by username or email, change
a role, remove; the last admin can be neither demoted nor removed; only admins manage."""

from __future__ import annotations

import threading

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse

from conversations.models import Membership, Organization, Role
from conversations.services import members as member_services

from .factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(client: Client) -> Membership:
    membership = MembershipFactory.create(role=Role.ADMIN)
    client.force_login(membership.user)
    return membership


def members_url(organization: Organization) -> str:
    return reverse("members", args=[organization.slug])


def roles(organization: Organization) -> dict[str, str]:
    return {
        m.user.username: m.role
        for m in Membership.objects.filter(organization=organization).select_related("user")
    }


def test_it_invites_an_existing_user_by_username_or_email(
    client: Client, admin: Membership
) -> None:
    org = admin.organization
    bea = UserFactory.create(username="bea")
    cy = UserFactory.create(username="cy", email="Cy@Example.org")
    response = client.post(members_url(org), {"identifier": "bea", "role": Role.ANALYST})
    assert response.status_code == 302
    response = client.post(members_url(org), {"identifier": "cy@example.ORG", "role": Role.VIEWER})
    assert response.status_code == 302
    assert roles(org) == {
        admin.user.username: "admin",
        bea.username: "analyst",
        cy.username: "viewer",
    }
    page = client.get(members_url(org)).content.decode()
    assert 'data-member="bea"' in page and "Cy@Example.org" in page


@pytest.mark.parametrize(
    ("identifier", "message"),
    [
        ("nobody", "No user &#x27;nobody&#x27;"),
        ("twin@example.org", "More than one user has the address"),
        ("member", "already a member"),
    ],
)
def test_it_explains_an_invitation_it_cannot_make(
    client: Client, admin: Membership, identifier: str, message: str
) -> None:
    UserFactory.create(email="twin@example.org")
    UserFactory.create(email="TWIN@example.org")
    MembershipFactory.create(
        organization=admin.organization, user=UserFactory.create(username="member")
    )
    before = roles(admin.organization)
    response = client.post(
        members_url(admin.organization), {"identifier": identifier, "role": "viewer"}
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    assert roles(admin.organization) == before


def test_it_changes_a_role(client: Client, admin: Membership) -> None:
    member = MembershipFactory.create(organization=admin.organization, role=Role.VIEWER)
    url = reverse("member_role", args=[admin.organization.slug, member.code])
    assert client.post(url, {"role": Role.ANALYST}).status_code == 302
    member.refresh_from_db()
    assert member.role == Role.ANALYST
    assert client.post(url, {"role": "owner"}).status_code == 302  # not a role: nothing changes
    member.refresh_from_db()
    assert member.role == Role.ANALYST


def test_it_never_demotes_or_removes_the_last_admin(client: Client, admin: Membership) -> None:
    slug = admin.organization.slug
    demote = client.post(
        reverse("member_role", args=[slug, admin.code]), {"role": Role.VIEWER}, follow=True
    )
    assert "is the only admin" in demote.content.decode()
    remove = client.post(reverse("member_remove", args=[slug, admin.code]), follow=True)
    assert "is the only admin and cannot be removed" in remove.content.decode()
    admin.refresh_from_db()
    assert admin.role == Role.ADMIN


def test_it_removes_members_and_lets_an_admin_leave_when_another_remains(
    client: Client, admin: Membership
) -> None:
    slug = admin.organization.slug
    viewer = MembershipFactory.create(organization=admin.organization, role=Role.VIEWER)
    other_admin = MembershipFactory.create(organization=admin.organization, role=Role.ADMIN)
    assert client.post(reverse("member_remove", args=[slug, viewer.code])).status_code == 302
    assert not Membership.objects.filter(pk=viewer.pk).exists()
    leave = client.post(reverse("member_remove", args=[slug, admin.code]))
    assert leave.status_code == 302 and leave["Location"] == reverse("home")
    assert list(Membership.objects.filter(organization=admin.organization)) == [other_admin]
    assert client.get(members_url(admin.organization)).status_code == 404  # no longer a member


@pytest.mark.django_db(transaction=True)
def test_it_keeps_an_admin_when_two_remove_each_other_at_once() -> None:
    first = MembershipFactory.create(role=Role.ADMIN)
    second = MembershipFactory.create(organization=first.organization, role=Role.ADMIN)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def remove(membership: Membership) -> None:
        try:
            start.wait()
            member_services.membership_remove(membership=membership)
            outcomes.append("removed")
        except member_services.MemberError:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=remove, args=(m,)) for m in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused", "removed"]
    assert Membership.objects.filter(organization=first.organization, role=Role.ADMIN).count() == 1


@pytest.mark.parametrize("role", [Role.VIEWER, Role.ANALYST])
def test_it_lets_only_admins_manage_members(client: Client, role: str) -> None:
    membership = MembershipFactory.create(role=role)
    other = MembershipFactory.create(organization=membership.organization, role=Role.VIEWER)
    client.force_login(membership.user)
    org = membership.organization
    outsider = UserFactory.create(username="outsider")
    assert client.get(members_url(org)).status_code == 403
    assert (
        client.post(members_url(org), {"identifier": "outsider", "role": "admin"}).status_code
        == 403
    )
    role_url = reverse("member_role", args=[org.slug, membership.code])
    assert client.post(role_url, {"role": Role.ADMIN}).status_code == 403
    assert client.post(reverse("member_remove", args=[org.slug, other.code])).status_code == 403
    assert (
        client.post(
            reverse("organization_delete", args=[org.slug]), {"confirm": org.slug}
        ).status_code
        == 403
    )
    assert not Membership.objects.filter(user=outsider).exists()
    membership.refresh_from_db()
    assert membership.role == role
    assert (
        Membership.objects.filter(pk=other.pk).exists()
        and Organization.objects.filter(pk=org.pk).exists()
    )
    overview = client.get(reverse("org_overview", args=[org.slug])).content.decode()
    assert members_url(org) not in overview


def test_it_shows_admins_the_members_link(client: Client, admin: Membership) -> None:
    overview = client.get(reverse("org_overview", args=[admin.organization.slug])).content.decode()
    assert f'href="{members_url(admin.organization)}"' in overview


def test_it_deletes_the_organization_only_when_its_slug_is_typed(
    client: Client, admin: Membership
) -> None:
    org = admin.organization
    url = reverse("organization_delete", args=[org.slug])
    wrong = client.post(url, {"confirm": "not-it"}, follow=True)
    assert f"type {org.slug} to confirm" in wrong.content.decode()
    assert Organization.objects.filter(pk=org.pk).exists()
    right = client.post(url, {"confirm": org.slug})
    assert right.status_code == 302 and right["Location"] == reverse("home")
    assert not Organization.objects.filter(pk=org.pk).exists()
    assert not Membership.objects.filter(organization_id=org.pk).exists()
