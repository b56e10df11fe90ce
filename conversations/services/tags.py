"""Writes: a conversation's tags (free key/value metadata the breakdowns group by)."""

from __future__ import annotations

from conversations.models import Conversation


def conversation_tags_set(*, conversation: Conversation, tags: dict[str, str]) -> Conversation:
    """Replace the conversation's tags: the page edits the whole set at once."""
    conversation.tags = dict(tags)
    conversation.save(update_fields=["tags"])
    return conversation
