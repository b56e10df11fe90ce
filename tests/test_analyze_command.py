from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from pytest_django import Settings

from conversations.models import Conversation

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


def run_json(*args: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    call_command("analyze", *args, "--format", "json")
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def test_it_reports_turns_with_a_pending_request_and_stores_nothing(
    fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = run_json(str(fixtures / "chat_small.json"), capsys=capsys)
    (conversation,) = data["conversations"]
    assert conversation["title"] == "Capital cities" and conversation["model"] == "gpt-4o"
    turns = conversation["turns"]
    assert [t["index"] for t in turns] == [0, 1, 2]
    assert turns[-1]["completion_tokens"] == 0  # the trailing user message: pending request
    assert turns[0]["prompt_tokens"] < turns[1]["prompt_tokens"] < turns[2]["prompt_tokens"]
    assert all(t["miss_reason"]["kind"] == "below_minimum" for t in turns)
    # Costs are decimal strings and add up; the pending request shows what it would cost
    # but, like an import, counts in no total: it was never billed.
    total = sum(float(t["cost"]) for t in turns[:-1])
    assert float(turns[-1]["cost"]) > 0
    assert float(turns[-1]["cumulative_cost"]) == pytest.approx(total)
    assert isinstance(data["totals"]["cost"], str)
    assert float(data["totals"]["cost"]) == pytest.approx(total)
    assert not Conversation.objects.exists()


def test_it_prices_as_another_model_when_asked(
    fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = run_json(str(fixtures / "chat_small.json"), capsys=capsys)
    mini = run_json(str(fixtures / "chat_small.json"), "--model", "gpt-4o-mini", capsys=capsys)
    assert mini["conversations"][0]["model"] == "gpt-4o-mini"
    assert float(mini["totals"]["cost"]) < float(base["totals"]["cost"])


def test_it_exits_2_with_one_line_for_input_that_is_not_a_transcript(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\n")
    result = subprocess.run(
        [sys.executable, "manage.py", "analyze", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "notes.txt" in lines[0]


def test_it_compares_strategies_on_a_long_conversation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = [{"role": "system", "content": "Rules. " * 400}]
    for i in range(30):
        messages += [
            {"role": "user", "content": f"Question {i}: " + "detail " * 120},
            {"role": "assistant", "content": f"Answer {i}: " + "because " * 200},
        ]
    path = tmp_path / "long.json"
    path.write_text(json.dumps({"model": "gpt-4o", "messages": messages}))
    full = run_json(str(path), capsys=capsys)["totals"]
    window = run_json(str(path), "--strategy", "window:6", capsys=capsys)["totals"]
    assert float(window["cost"]) < float(full["cost"])
    assert window["peak_prompt_tokens"] < full["peak_prompt_tokens"]


def test_it_asks_for_migrate_instead_of_a_traceback_on_a_new_database(
    fixtures: Path, tmp_path: Path
) -> None:
    # a real, empty SQLite database in a fresh var folder, whatever DATABASE_URL says
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["COSTLAB_VAR_DIR"] = str(tmp_path / "var")
    for command in (
        ["analyze", str(fixtures / "chat_small.json")],
        ["import_transcripts", str(fixtures / "chat_small.json"), "--org", "demo"],
    ):
        result = subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "unapplied migration(s): run `python manage.py migrate` first" in lines[0]


def test_it_holds_analyze_to_the_record_limit_of_imports(
    tmp_path: Path, settings: Settings
) -> None:
    from django.core.management import CommandError

    settings.COSTLAB_MAX_RECORD_BYTES = 1_000
    line = {"messages": [{"role": "user", "content": "x" * 2_000}]}
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(CommandError) as caught:
        call_command("analyze", str(path))
    message = str(caught.value)
    assert "long.jsonl line 1, field messages[0].content: this line is over the limit" in message
    assert "of 1,000 bytes" in message
