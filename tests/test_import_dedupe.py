"""Duplicates per conversation: a file whose conversations another import already stored
does not store them again, and the summary says how many were skipped."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from conversations.models import Conversation, ImportJob, ImportStatus, Organization, Turn
from conversations.services import imports

from .factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def _import(org: Organization, path: Path) -> ImportJob:
    job = imports.import_path(organization=org, paths=[path])
    assert job.status == ImportStatus.SUCCEEDED, job.error
    return job


def _export(oracles: Path) -> list[dict[str, Any]]:
    exported: list[dict[str, Any]] = json.loads(
        (oracles / "mitkury_example-conversation.json").read_text()
    )
    return exported


def test_it_skips_an_exported_conversation_imported_from_an_earlier_export(
    oracles: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    org = OrganizationFactory.create()
    _import(org, oracles / "mitkury_example-conversation.json")
    # A later export: the same conversation, edited since (same id, other content),
    # and one new conversation.
    (conversation,) = _export(oracles)
    grown = copy.deepcopy(conversation)
    grown["mapping"][grown["current_node"]]["message"]["content"]["parts"] = ["Edited later"]
    newer = copy.deepcopy(conversation)
    newer["id"], newer["title"] = "conv-456", "Another chat"
    newer["mapping"][newer["current_node"]]["message"]["content"]["parts"] = ["Something new"]
    later = tmp_path / "conversations.json"
    later.write_text(json.dumps([grown, newer]))
    call_command("import_transcripts", str(later), "--org", org.slug)
    job = ImportJob.objects.filter(organization=org).latest("created")
    assert (job.conversations, job.skipped_conversations) == (1, 1)
    assert job.warnings[0] == (
        "1 conversation(s) already imported from another file, not stored again "
        "(0 with the same content, 1 with the same conversation id)"
    )
    assert "1 conversations already imported, skipped" in capsys.readouterr().out
    assert sorted(
        Conversation.objects.filter(organization=org).values_list("external_id", flat=True)
    ) == [
        "conv-123",
        "conv-456",
    ]


def test_it_skips_api_log_conversations_with_the_same_content(
    fixtures: Path, tmp_path: Path
) -> None:
    org = OrganizationFactory.create()
    first = fixtures / "formats" / "api_log_prefix.jsonl"
    _import(org, first)
    stored = Conversation.objects.filter(organization=org).count()
    # The same calls, logged again with other envelope keys, plus one new call.
    lines = [json.loads(line) for line in first.read_text().splitlines() if line.strip()]
    for line in lines:
        line["logged_by"] = "proxy-2"
    new = copy.deepcopy(lines[0])
    new["request"]["messages"][-1]["content"] = "A question never asked before"
    new["response"]["id"] = "chatcmpl-new"
    second = tmp_path / "proxy-2.jsonl"
    second.write_text("\n".join(json.dumps(line) for line in [*lines, new]) + "\n")
    job = _import(org, second)
    assert (job.conversations, job.skipped_conversations) == (1, stored)
    assert Conversation.objects.filter(organization=org).count() == stored + 1
    assert Turn.objects.filter(conversation__import_job=job).count() == 1


def test_it_keeps_a_logs_later_calls_under_a_conversation_id_seen_before(
    fixtures: Path, tmp_path: Path
) -> None:
    """A log rotated mid-conversation: day two's calls carry day one's conversation id
    and must go in."""
    org = OrganizationFactory.create()
    day_one = fixtures / "formats" / "api_log_conversation_id.jsonl"
    _import(org, day_one)
    line = json.loads(day_one.read_text().splitlines()[0])
    line["response"]["id"] = "r-day-two"
    line["request"]["messages"].append({"role": "user", "content": "And UDP?"})
    day_two = tmp_path / "day-two.jsonl"
    day_two.write_text(json.dumps(line) + "\n")
    job = _import(org, day_two)
    assert (job.conversations, job.skipped_conversations) == (1, 0)
    assert Conversation.objects.filter(organization=org, external_id="c-1").count() == 2


def test_it_keeps_batches_that_reuse_custom_ids(oracles: Path, tmp_path: Path) -> None:
    org = OrganizationFactory.create()
    inputs = oracles / "litellm_batch_input_furniture.jsonl"
    outputs = oracles / "litellm_batch_output_sample.jsonl"
    imports.import_path(organization=org, paths=[inputs, outputs])
    # Another batch: the same custom_ids ("request-1", ...), other requests.
    other = tmp_path / "other_input.jsonl"
    other.write_text(inputs.read_text().replace("Hello world!", "Good evening!"))
    job = imports.import_path(organization=org, paths=[other, outputs])
    assert job.status == ImportStatus.SUCCEEDED
    assert job.skipped_conversations == 0
    assert Conversation.objects.filter(organization=org, external_id="request-1").count() == 2


def test_it_succeeds_with_nothing_new_when_every_conversation_was_imported(
    fixtures: Path, tmp_path: Path
) -> None:
    org = OrganizationFactory.create()
    original = fixtures / "formats" / "api_log_prefix.jsonl"
    _import(org, original)
    reordered = tmp_path / "again.jsonl"
    # Other bytes (key order), the same content.
    lines = [json.loads(line) for line in original.read_text().splitlines() if line.strip()]
    reordered.write_text("\n".join(json.dumps(line, sort_keys=True) for line in lines) + "\n")
    job = _import(org, reordered)
    assert (job.conversations, job.turns, job.skipped_conversations) == (0, 0, 2)
    assert Conversation.objects.filter(organization=org).count() == 2
