from __future__ import annotations

import gzip
from decimal import Decimal
from pathlib import Path
from typing import NoReturn

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from pytest_django import Settings

from conversations.models import (
    Conversation,
    ImportJob,
    ImportStatus,
    Message,
    Turn,
    UsageRecord,
    UsageSource,
)
from conversations.ranges import request_ranges

from .factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def test_it_rebuilds_turns_from_a_transcript_and_prices_the_estimate(
    fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    org = OrganizationFactory.create()
    call_command("import_transcripts", str(fixtures / "chat_small.json"), "--org", org.slug)
    conversation = Conversation.objects.get(organization=org)
    assert conversation.title == "Capital cities"
    assert Message.objects.filter(conversation=conversation).count() == 6
    turns = list(Turn.objects.filter(conversation=conversation).order_by("index"))
    # Two answered calls, then the trailing user message as a pending request.
    assert [t.request_ranges for t in turns] == [[[0, 2]], [[0, 4]], [[0, 6]]]
    assert [t.response.index if t.response else None for t in turns] == [2, 4, None]
    records = UsageRecord.objects.filter(conversation=conversation).order_by("turn__index")
    assert [r.source for r in records] == [UsageSource.ESTIMATED] * 3
    # The trailing request got no reply: estimated (for what-ifs) but never billed.
    assert [r.is_billing for r in records] == [True, True, False]
    # Prompt grows every turn; the pending request produced no output.
    assert records[0].prompt_tokens < records[1].prompt_tokens < records[2].prompt_tokens
    assert records[2].completion_tokens == 0
    for r in records:
        expected = (Decimal(r.input_uncached) * Decimal("2.5") + Decimal(r.output) * 10) / 10**6
        assert r.cost_total == expected
        assert r.price is not None and r.price.model == "gpt-4o"
    assert "1 conversations, 3 turns" in capsys.readouterr().out
    job = ImportJob.objects.get(organization=org)
    first, second = records[0].cost_total, records[1].cost_total
    assert first is not None and second is not None
    assert job.cost == first + second
    assert job.tokens == records[0].total_tokens + records[1].total_tokens


def test_it_stores_nothing_from_an_invalid_file_and_names_line_and_field(fixtures: Path) -> None:
    org = OrganizationFactory.create()
    with pytest.raises(CommandError) as excinfo:
        call_command("import_transcripts", str(fixtures / "chat_bad_role.jsonl"), "--org", org.slug)
    message = str(excinfo.value)
    assert "chat_bad_role.jsonl" in message
    assert "line 2" in message
    assert "messages[1].role" in message
    assert not Conversation.objects.filter(organization=org).exists()
    assert not Message.objects.exists() and not UsageRecord.objects.exists()
    job = ImportJob.objects.get(organization=org)
    assert job.status == ImportStatus.FAILED and "line 2" in job.error


def test_it_creates_nothing_new_when_the_same_content_comes_again(
    fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    org = OrganizationFactory.create()
    path = str(fixtures / "chat_small.json")
    call_command("import_transcripts", path, "--org", org.slug)
    call_command("import_transcripts", path, "--org", org.slug)
    assert Conversation.objects.filter(organization=org).count() == 1
    assert "already imported" in capsys.readouterr().out
    # Another organization importing the same file is not a duplicate.
    other = OrganizationFactory.create()
    call_command("import_transcripts", path, "--org", other.slug)
    assert Conversation.objects.filter(organization=other).count() == 1


def test_it_compresses_requests_into_ranges() -> None:
    assert request_ranges([0, 1, 2, 5, 6]) == [[0, 3], [5, 7]]
    assert request_ranges([]) == []
    assert request_ranges([4, 0, 1]) == [[4, 5], [0, 2]]


def test_it_keeps_storage_linear_for_a_long_prefix_flow(tmp_path: Path) -> None:
    import json

    messages = [{"role": "system", "content": "s"}]
    for i in range(500):
        messages += [
            {"role": "user", "content": f"q{i}"},
            {"role": "assistant", "content": f"a{i}"},
        ]
    path = tmp_path / "long.json"
    path.write_text(json.dumps({"model": "gpt-4o-mini", "messages": messages}))
    org = OrganizationFactory.create()
    call_command("import_transcripts", str(path), "--org", org.slug)
    assert Turn.objects.count() == 500
    assert Message.objects.count() == 1001
    # One range per turn: the request of turn t is messages [0, 2t+2).
    assert all(len(t.request_ranges) == 1 for t in Turn.objects.all())


def test_it_imports_the_oracle_batch_pair_with_reported_usage(oracles: Path) -> None:
    org = OrganizationFactory.create()
    call_command(
        "import_transcripts",
        str(oracles / "litellm_batch_input_furniture.jsonl"),
        str(oracles / "litellm_batch_output_sample.jsonl"),
        "--org",
        org.slug,
    )
    records = UsageRecord.objects.filter(organization=org, source=UsageSource.REPORTED)
    assert sorted((r.prompt_tokens, r.completion_tokens) for r in records) == [(20, 10), (22, 10)]
    assert all(r.turn.is_batch and r.is_billing for r in records)
    # gpt-4o-mini at batch rates ($0.075 in, $0.30 out per 1M), no caching discount.
    costs = sorted(r.cost_total for r in records if r.cost_total is not None)
    assert costs == [Decimal("0.0000045"), Decimal("0.00000465")]
    assert all(r.turn.conversation.source == "batch" for r in records)


def test_it_explains_the_size_limit_on_upload(
    client: Client, settings: Settings, fixtures: Path
) -> None:
    from django.urls import reverse

    from .factories import MembershipFactory

    settings.COSTLAB_MAX_UPLOAD_BYTES = 100
    membership = MembershipFactory.create()
    client.force_login(membership.user)
    with (fixtures / "chat_small.json").open("rb") as handle:
        response = client.post(
            reverse("imports", args=[membership.organization.slug]), {"file": handle}
        )
    assert response.status_code == 400
    assert b"the limit is 100 bytes" in response.content
    assert not ImportJob.objects.exists()


def test_it_marks_a_crashed_import_failed_and_stores_nothing(
    fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conversations.services import imports

    def explode(**kwargs: object) -> NoReturn:
        raise RuntimeError("boom")

    monkeypatch.setattr(imports, "transcripts_store", explode)
    org = OrganizationFactory.create()
    with pytest.raises(RuntimeError):
        imports.import_path(organization=org, paths=[fixtures / "chat_small.json"])
    job = ImportJob.objects.get(organization=org)
    assert job.status == ImportStatus.FAILED and "internal error" in job.error
    assert not Conversation.objects.exists()


def test_it_imports_a_gzipped_api_log_with_each_warning_located_once(
    tmp_path: Path, fixtures: Path
) -> None:
    plain = fixtures / "formats" / "api_log_conversation_id.jsonl"
    packed = tmp_path / "calls.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    org = OrganizationFactory.create()
    call_command("import_transcripts", str(packed), "--org", org.slug)
    job = ImportJob.objects.get(organization=org)
    assert job.status == ImportStatus.SUCCEEDED
    assert (job.conversations, job.turns) == (2, 5)
    # the failed call's warning names its own line, once, under the .gz file's name
    assert job.warnings == [
        "calls.jsonl.gz line 4: the call failed (Rate limit reached): kept as a pending call"
    ]


def test_it_takes_the_input_format_under_analyzes_name_and_the_old_one(fixtures: Path) -> None:
    org = OrganizationFactory.create()
    log = str(fixtures / "formats" / "api_log_prefix.jsonl")
    call_command("import_transcripts", log, "--org", org.slug, "--input-format", "api_log")
    chat = str(fixtures / "chat_small.json")
    with pytest.raises(CommandError, match="not a zip archive"):
        call_command("import_transcripts", chat, "--org", org.slug, "--format", "zip")
    with pytest.raises(CommandError, match="not a zip archive"):
        call_command("analyze", log, "--input-format", "zip")
    assert Conversation.objects.filter(organization=org).count() == 2
