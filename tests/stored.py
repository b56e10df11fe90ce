"""Assertions shared by the import tests: what a failed import must have left behind."""

from __future__ import annotations

from conversations.models import Conversation, Message, Organization, Turn, UsageDay, UsageRecord


def assert_nothing_stored(org: Organization) -> None:
    """No row of the organization's: a failed import is all or nothing, rollups included."""
    assert not Conversation.objects.filter(organization=org).exists()
    assert not Message.objects.filter(conversation__organization=org).exists()
    assert not Turn.objects.filter(conversation__organization=org).exists()
    assert not UsageRecord.objects.filter(organization=org).exists()
    assert not UsageDay.objects.filter(organization=org).exists()
