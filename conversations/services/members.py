"""Members of an organization, as its admins manage them: invite an existing user, change a
role, remove. An organization always keeps an admin: the last one can be neither demoted nor
removed. Changes lock the organization's row, so two admins removing each other at the same
moment cannot both succeed."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from ..models import Membership, Organization, Role


class MemberError(Exception):
    """A change refused; the message says why, for the page."""


def _lock(organization: Organization) -> None:
    Organization.objects.select_for_update().filter(pk=organization.pk).first()


def _admins_besides(membership: Membership) -> bool:
    return (
        Membership.objects.filter(organization_id=membership.organization_id, role=Role.ADMIN)
        .exclude(pk=membership.pk)
        .exists()
    )


@transaction.atomic
def membership_invite(*, organization: Organization, identifier: str, role: str) -> Membership:
    """Add an existing user, found by username or else by email address (accounts are
    created by the site's operators, not here)."""
    identifier = identifier.strip()
    users = get_user_model().objects.filter(is_active=True)
    user = users.filter(username=identifier).first()
    if user is None and "@" in identifier:
        by_email = list(users.filter(email__iexact=identifier)[:2])
        if len(by_email) > 1:
            raise MemberError(f"More than one user has the address {identifier}: use a username.")
        user = by_email[0] if by_email else None
    if user is None:
        raise MemberError(
            f"No user {identifier!r}. Members must have an account: ask a site operator to "
            "create one, then invite its username or email address."
        )
    _lock(organization)
    if Membership.objects.filter(organization=organization, user=user).exists():
        raise MemberError(f"{user.get_username()} is already a member.")
    return Membership.objects.create(organization=organization, user=user, role=role)


@transaction.atomic
def membership_role_change(*, membership: Membership, role: str) -> Membership:
    _lock(membership.organization)
    membership.refresh_from_db()
    if membership.role == Role.ADMIN and role != Role.ADMIN and not _admins_besides(membership):
        raise MemberError(
            f"{membership.user.get_username()} is the only admin: make someone else admin first."
        )
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    _lock(membership.organization)
    membership.refresh_from_db()
    if membership.role == Role.ADMIN and not _admins_besides(membership):
        raise MemberError(
            f"{membership.user.get_username()} is the only admin and cannot be removed: "
            "make someone else admin first."
        )
    membership.delete()
