"""The real-log corpus (tests/fixtures/real/) through both doors: `analyze` and an import
give the same turns, pending calls, costs, unpriced counts and warnings for every file."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from conversations.models import ImportStatus, Turn, UsageRecord
from conversations.services import imports
from conversations.services.transcripts import WARNINGS_KEPT

from .factories import OrganizationFactory
from .import_checks import analyze_json

pytestmark = pytest.mark.django_db

REAL = Path(__file__).resolve().parent / "fixtures" / "real"
CORPUS = sorted([*REAL.glob("*.jsonl"), *REAL.glob("edge-cases/*.jsonl")])
# Hand-written files with what the corpus lacks: pending calls (trailing requests, failed
# and unanswered batch requests) and transcripts without reported usage.
FIXTURES = REAL.parent
PENDING = [
    FIXTURES / "chat_small.json",
    FIXTURES / "formats" / "api_log_variants.jsonl",
    FIXTURES / "formats" / "api_log_conversation_id.jsonl",
    FIXTURES / "formats" / "batch_input.jsonl",
    FIXTURES / "formats" / "chat_records.json",
    FIXTURES / "formats" / "sharegpt_variants.jsonl",
]


@pytest.mark.parametrize("path", [*CORPUS, *PENDING], ids=lambda p: p.name)
def test_it_gives_the_same_figures_through_analyze_and_an_import(path: Path) -> None:
    org = OrganizationFactory.create()
    report = analyze_json(path, org.slug)
    job = imports.import_path(organization=org, paths=[path])
    assert job.status == ImportStatus.SUCCEEDED, job.error
    totals = report["totals"]
    assert job.conversations == totals["conversations"]
    assert job.turns == totals["calls"]
    turns = Turn.objects.filter(conversation__import_job=job)
    assert turns.filter(response__isnull=True).count() == totals["pending_calls"]
    assert job.unpriced_turns == totals["unpriced_calls"]
    expected_cost = None if totals["cost"] is None else Decimal(totals["cost"])
    assert job.cost == expected_cost
    assert job.warnings == report["warnings"][:WARNINGS_KEPT]
    # Turn by turn: the estimate, the simulated cache and what the API reported.
    reported = {
        r.turn_id: r
        for r in UsageRecord.objects.filter(conversation__import_job=job, source="reported")
    }
    figures = sorted(
        (t.estimated_prompt_tokens, t.simulated_cached_tokens, _reported(reported.get(t.id)))
        for t in turns
    )
    expected = sorted(
        (
            turn["estimated_prompt_tokens"],
            turn["simulated_cached_tokens"],
            (_known(turn["reported_prompt_tokens"]), _known(turn["reported_cached_tokens"])),
        )
        for conversation in report["conversations"]
        for turn in conversation["turns"]
    )
    assert figures == expected


def _reported(record: UsageRecord | None) -> tuple[int, int]:
    if record is None:
        return (-1, -1)
    return (record.prompt_tokens, record.input_cached)


def _known(count: int | None) -> int:
    return -1 if count is None else count  # sortable beside the counts


def test_it_imports_every_call_of_the_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    """The corpus figures: every call of every file goes in, none refused, with its
    reported usage; the warnings are counted by kind."""
    calls = reported = 0
    kinds: dict[str, int] = {}
    for path in CORPUS:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        report = analyze_json(path, OrganizationFactory.create().slug)
        assert report["totals"]["calls"] == len(lines), path.name
        calls += report["totals"]["calls"]
        reported += report["totals"]["reported_calls"]
        for warning in report["warnings"]:
            kind = _kind(warning)
            kinds[kind] = kinds.get(kind, 0) + 1
    with capsys.disabled():
        print(f"\ncorpus: {len(CORPUS)} files, {calls} calls, {reported} with reported usage")
        for kind, count in sorted(kinds.items(), key=lambda item: -item[1]):
            print(f"  {count:5} warning(s): {kind}")
    assert calls == reported == 4713 + 366 + 1


def _kind(warning: str) -> str:
    for marker, kind in (
        ("not rendered", "Responses items not rendered"),
        ("built-in tools", "Responses built-in tools not counted"),
        ("choices: only the first", "several choices"),
        ("finish_reason", "reply withheld (no message)"),
        ("is not in this log", "previous response not in the log"),
        ("incomplete", "incomplete response"),
        ("total_tokens", "total_tokens disagrees"),
        ("cached of", "cached above prompt"),
        ("stored prompt", "stored prompt"),
    ):
        if marker in warning:
            return kind
    return "other: " + warning.split(": ", 1)[-1][:60]
