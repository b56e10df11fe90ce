"""Writes: a conversation's tags (free key/value metadata the breakdowns group by)."""

from __future__ import annotations

from django.db import transaction

from conversations.models import Conversation

from . import dimension_rollups


def conversation_tags_set(*, conversation: Conversation, tags: dict[str, str]) -> Conversation:
    """Replace the conversation's tags: the page edits the whole set at once. The rollup
    by tag follows in the same transaction."""
    with transaction.atomic():
        conversation.tags = dict(tags)
        conversation.save(update_fields=["tags"])
        dimension_rollups.conversations_retagged(
            organization=conversation.organization, conversation_ids=[conversation.pk]
        )
    return conversation
