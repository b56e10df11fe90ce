"""Cache and price rules per model, end to end through imports, pages and the admin."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from conversations.models import MissReason, Turn, UsageRecord
from conversations.selectors import UsageFilter, org_totals

from ..factories import OrganizationFactory, UserFactory


def _log(path: Path, calls: list[tuple[Any, Any]]) -> Path:
    path.write_text("\n".join(json.dumps({"request": q, "response": r}) for q, r in calls))
    return path


def _response(model: str, usage: Any, content: str = "ok") -> dict[str, Any]:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1780000000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": usage,
    }


@pytest.mark.django_db
def test_it_never_counts_a_gpt4_call_as_a_missed_hit(tmp_path: Path) -> None:
    org = OrganizationFactory.create()
    system = {"role": "system", "content": "Policy. " * 1500}
    messages = [system, {"role": "user", "content": "hello"}]
    usage = {"prompt_tokens": 3010, "completion_tokens": 1, "total_tokens": 3011}
    calls = [({"model": "gpt-4", "messages": messages}, _response("gpt-4-0613", usage))] * 1
    path = _log(tmp_path / "gpt4.jsonl", calls)
    call_command("import_transcripts", str(path), "--org", org.slug)
    turn = Turn.objects.get(conversation__organization=org)
    assert turn.miss_reason == MissReason.NOT_SUPPORTED
    assert turn.miss_detail == "gpt-4-0613 has no prompt caching"
    record = UsageRecord.objects.get(turn=turn, is_billing=True)
    assert record.cache_eligible is False
    totals = org_totals(org, UsageFilter())
    assert (totals.eligible_calls, totals.hit_calls) == (0, 0)


@pytest.mark.django_db
def test_it_bills_reported_cache_writes_at_the_write_rate(tmp_path: Path) -> None:
    org = OrganizationFactory.create()
    messages = [{"role": "user", "content": "hello"}]
    for spelling in ("cache_write_tokens", "cache_creation_tokens"):
        usage = {
            "prompt_tokens": 10_000,
            "completion_tokens": 100,
            "total_tokens": 10_100,
            "prompt_tokens_details": {"cached_tokens": 4000, spelling: 5000},
        }
        request = {"model": "gpt-5.6", "messages": messages, "prompt_cache_key": spelling}
        path = _log(tmp_path / f"{spelling}.jsonl", [(request, _response("gpt-5.6", usage))])
        call_command("import_transcripts", str(path), "--org", org.slug)
    records = UsageRecord.objects.filter(organization=org, is_billing=True)
    assert records.count() == 2
    for record in records:
        assert (record.input_uncached, record.input_cached, record.input_cache_write) == (
            1000,
            4000,
            5000,
        )
        # gpt-5.6: input $4, cached $0.40, write $5, output $20 per 1M tokens.
        assert record.cost_input_cache_write == Decimal("0.025")
        assert record.cost_input_cached == Decimal("0.0016")
        assert record.cost_total == Decimal("0.004") + Decimal("0.0016") + Decimal(
            "0.025"
        ) + Decimal("0.002")
        # Without caching, all 10,000 prompt tokens would be plain input.
        assert record.cost_uncached == Decimal("0.04") + Decimal("0.002")


@pytest.mark.django_db
def test_it_simulates_and_prices_writes_for_a_breakpoint_model(tmp_path: Path) -> None:
    org = OrganizationFactory.create()
    messages = [{"role": "system", "content": "Rules. " * 800}]
    for i in range(3):
        messages += [
            {"role": "user", "content": f"Question {i} " + "detail " * 100},
            {"role": "assistant", "content": f"Answer {i} " + "because " * 100},
        ]
    path = tmp_path / "chat.json"
    path.write_text(json.dumps({"model": "gpt-5.6", "messages": messages}))
    call_command("import_transcripts", str(path), "--org", org.slug)
    turns = list(Turn.objects.filter(conversation__organization=org).order_by("index"))
    assert turns[0].simulated_cached_tokens == 0 and turns[0].simulated_cache_write_tokens > 1024
    assert turns[1].simulated_cached_tokens == turns[0].simulated_cache_write_tokens
    estimated = UsageRecord.objects.get(turn=turns[0], source="estimated")
    assert estimated.input_cache_write == turns[0].simulated_cache_write_tokens
    assert estimated.cost_input_cache_write == (
        Decimal(5) * estimated.input_cache_write / 1_000_000
    ).quantize(Decimal("0.000000000001"))


@pytest.mark.django_db
def test_it_shows_cache_policies_and_a_rows_matrix_in_the_admin(client: Client) -> None:
    from pricing.models import CachePolicy, ModelPrice

    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))
    policy = CachePolicy.objects.get(name="breakpoints")
    page = client.get(f"/admin/pricing/cachepolicy/{policy.pk}/change/").content.decode()
    assert 'name="min_tokens"' in page and 'name="writes_billed"' in page
    row = ModelPrice.objects.get(model="gpt-5.6", organization=None)
    page = client.get(f"/admin/pricing/modelprice/{row.pk}/change/").content.decode()
    # The matrix as a table: priority above 272k pays $16/1M input.
    assert "priority / above" in page and "<td>16</td>" in page
    assert 'name="cache_policy"' in page


@pytest.mark.django_db
def test_it_shows_the_calibration_of_the_orgs_own_calls(client: Client, tmp_path: Path) -> None:
    from ..factories import MembershipFactory

    membership = MembershipFactory.create()
    org = membership.organization
    messages = [{"role": "user", "content": "Capital of France?"}]
    usage = {"prompt_tokens": 13, "completion_tokens": 2, "total_tokens": 15}
    calls = [({"model": "gpt-4o", "messages": messages}, _response("gpt-4o", usage, "Paris."))]
    call_command("import_transcripts", str(_log(tmp_path / "c.jsonl", calls)), "--org", org.slug)
    turn = Turn.objects.get(conversation__organization=org)
    client.force_login(membership.user)
    html = client.get(f"/o/{org.slug}/").content.decode()
    assert 'id="calibration"' in html and 'data-model="gpt-4o"' in html
    exact = "100.0%" if turn.estimated_prompt_tokens == 13 else "0.0%"
    row = html.split('data-model="gpt-4o"')[1].split("</tr>")[0]
    assert f'<td class="num">{exact}</td>' in row
