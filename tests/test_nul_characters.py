"""A NUL character in a file (JSON "\\u0000") goes in as U+FFFD with a warning naming the
line: PostgreSQL refuses NUL in text and jsonb, and the import used to fail with
"internal error (DataError)" instead of naming where the character was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conversations.models import ImportStatus, Message
from conversations.services import imports

from .factories import OrganizationFactory
from .import_checks import analyze_json

pytestmark = pytest.mark.django_db

WARNING = "NUL characters (\\u0000) replaced by U+FFFD"


def _chat(text: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": text},
            {"role": "assistant", "content": "ok"},
        ],
    }


@pytest.mark.parametrize("layout", ["jsonl", "json array"])
def test_a_nul_character_goes_in_replaced_and_named(tmp_path: Path, layout: str) -> None:
    chats = [_chat("plain"), _chat("bad\u0000byte"), _chat('a "\\\\u0000" written as text')]
    if layout == "jsonl":
        path = tmp_path / "chats.jsonl"
        path.write_text("\n".join(json.dumps(c) for c in chats) + "\n")
        where = "chats.jsonl line 2"
    else:
        path = tmp_path / "chats.json"
        path.write_text(json.dumps(chats))
        where = "chats.json record 2"
    org = OrganizationFactory.create()
    job = imports.import_path(organization=org, paths=[path])
    assert job.status == ImportStatus.SUCCEEDED, job.error
    assert job.conversations == 3
    nul = [w for w in job.warnings if WARNING in w]
    assert nul == [f"{where}: {nul[0].split(': ', 1)[1]}"]  # one warning, for line 2 only
    texts = set(
        Message.objects.filter(conversation__organization=org, role="user").values_list(
            "data__content", flat=True
        )
    )
    assert texts == {"plain", "bad\ufffdbyte", 'a "\\\\u0000" written as text'}
    # analyze says the same.
    assert [w for w in analyze_json(path)["warnings"] if WARNING in w] == nul
