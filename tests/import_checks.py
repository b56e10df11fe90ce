"""Shared by the import tests: what a failed import must have left behind, and what
`analyze` says of the same file (the figures an import must agree with)."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

from django.core.management import call_command

from conversations.models import Conversation, Message, Organization, Turn, UsageDay, UsageRecord


def assert_nothing_stored(org: Organization) -> None:
    """No row of the organization's: a failed import is all or nothing, rollups included."""
    assert not Conversation.objects.filter(organization=org).exists()
    assert not Message.objects.filter(conversation__organization=org).exists()
    assert not Turn.objects.filter(conversation__organization=org).exists()
    assert not UsageRecord.objects.filter(organization=org).exists()
    assert not UsageDay.objects.filter(organization=org).exists()


def analyze_json(path: Path, org: str | None = None) -> dict[str, Any]:
    """`manage.py analyze PATH --format json` (priced with `org`'s book when given)."""
    out = StringIO()
    options = ["--org", org] if org is not None else []
    call_command("analyze", str(path), "--format", "json", *options, stdout=out)
    result: dict[str, Any] = json.loads(out.getvalue())
    return result
