from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from conversations import services
from conversations.engine.pricing import usage_from_dict
from conversations.engine.types import Call, Transcript
from conversations.models import Conversation, ImportJob, ImportStatus
from conversations.selectors import UsageFilter, org_totals

from .factories import MembershipFactory

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def _reported(prompt: int, cached: int, completion: int) -> Call:
    return Call(
        request=[0],
        response=1,
        model="gpt-4o",
        started_at=T0,
        latency_ms=1000,
        usage=usage_from_dict(
            {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "prompt_tokens_details": {"cached_tokens": cached},
            }
        ),
    )


@pytest.fixture
def org_with_data(client):
    membership = MembershipFactory()
    org = membership.organization
    hello = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    services.transcripts_store(
        organization=org,
        transcripts=[
            Transcript(
                messages=hello,
                title="expensive",
                model="gpt-4o",
                calls=[_reported(1_000_000, 900_000, 1000)],
            ),
            Transcript(
                messages=hello, title="cheap", model="gpt-4o", calls=[_reported(2000, 0, 10)]
            ),
            Transcript(
                messages=hello,
                title="local model",
                model="llama-local",
                calls=[
                    Call(
                        request=[0],
                        response=1,
                        model="llama-local",
                        started_at=T0 + timedelta(days=1),
                    )
                ],
            ),
        ],
    )
    client.force_login(membership.user)
    return org


def test_it_totals_billing_usage_and_names_unpriced_models(org_with_data):
    totals = org_totals(org_with_data, UsageFilter())
    # $1.375 input + $0.01 output for the first, $0.005 + $0.0001 for the second.
    assert totals.cost == Decimal("1.375") + Decimal("0.01") + Decimal("0.005") + Decimal("0.0001")
    assert (totals.calls, totals.priced_calls) == (3, 2)
    assert totals.unpriced_models == [("llama-local", 1)]
    assert totals.hit_calls == 1 and totals.eligible_calls == 2
    assert totals.cached_tokens == 900_000


def test_it_shows_the_overview_with_charts_and_the_unpriced_models(client, org_with_data):
    response = client.get(reverse("org_overview", args=[org_with_data.slug]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "$1.39" in html  # 1.3901 rounded for people
    assert "llama-local" in html and "Unpriced" in html
    for figure in ("model-figure", "day-figure", "hits-figure"):
        data = json.loads(
            re.search(rf'id="{figure}" type="application/json">(.*?)</script>', html, re.S)[1]
        )
        assert data["data"], figure
    rows = re.findall(r'/c/[0-9a-f-]+/">([^<]+)</a>', html)
    assert rows[:2] == ["expensive", "cheap"]  # sorted by cost, highest first


def test_it_swaps_only_the_dashboard_for_htmx_and_filters_by_model(client, org_with_data):
    url = reverse("org_overview", args=[org_with_data.slug])
    response = client.get(url, {"model": "llama-local"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="dashboard">')
    assert "<html" not in html
    assert "local model" in html and "expensive" not in html


def test_it_gives_a_history_restore_the_whole_page(client, org_with_data):
    url = reverse("org_overview", args=[org_with_data.slug])
    headers = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
    html = client.get(url, {"model": "llama-local"}, headers=headers).content.decode()
    assert "<html" in html and 'id="filters"' in html
    assert "local model" in html and "expensive" not in html


def test_it_says_the_overview_varies_with_the_htmx_headers(client, org_with_data):
    url = reverse("org_overview", args=[org_with_data.slug])
    for headers in ({}, {"HX-Request": "true"}):
        vary = client.get(url, headers=headers).headers["Vary"]
        assert "HX-Request" in vary and "HX-History-Restore-Request" in vary, headers


def test_it_stops_htmx_polling_a_finished_job_and_says_it_varies(client, org_with_data):
    job = ImportJob.objects.create(
        organization=org_with_data, original_name="done.json", status=ImportStatus.SUCCEEDED
    )
    url = reverse("import_job_progress", args=[org_with_data.slug, job.code])
    polled = client.get(url, headers={"HX-Request": "true"})
    plain = client.get(url)
    assert (polled.status_code, plain.status_code) == (286, 200)
    for response in (polled, plain):
        assert "HX-Request" in response.headers["Vary"]


def test_it_sorts_the_conversation_table_partial(client, org_with_data):
    url = reverse("conversation_table", args=[org_with_data.slug])
    html = client.get(url, {"sort": "cost"}, headers={"HX-Request": "true"}).content.decode()
    rows = re.findall(r'/c/[0-9a-f-]+/">([^<]+)</a>', html)
    assert rows == ["local model", "cheap", "expensive"]  # unpriced first when ascending


def test_it_shows_reported_and_estimated_usage_on_the_conversation_page(client, org_with_data):
    conversation = Conversation.objects.get(title="cheap")
    html = client.get(
        reverse("conversation_detail", args=[org_with_data.slug, conversation.code])
    ).content.decode()
    assert "Estimate vs report" in html
    assert "est." in html  # the estimate beside the reported prompt tokens
    assert "2,000" in html


def test_it_compares_strategies_and_projects_the_next_turns(client, tmp_path):
    from django.core.management import call_command

    membership = MembershipFactory()
    client.force_login(membership.user)
    org = membership.organization
    messages = [{"role": "system", "content": "Rules. " * 600}]
    for i in range(20):
        messages += [
            {"role": "user", "content": f"Question {i}: " + "detail " * 150},
            {"role": "assistant", "content": f"Answer {i}: " + "because " * 250},
        ]
    path = tmp_path / "long.json"
    path.write_text(json.dumps({"model": "gpt-4o", "title": "long", "messages": messages}))
    call_command("import_transcripts", str(path), "--org", org.slug)
    conversation = Conversation.objects.get(organization=org)
    url = reverse("conversation_what_if", args=[org.slug, conversation.code])
    html = client.get(url, {"retention": "1h"}, headers={"HX-Request": "true"}).content.decode()
    costs = {
        label: Decimal(cost.replace("$", "").replace(",", ""))
        for label, cost in re.findall(
            r'data-strategy="([^"]+)">.*?<td class="num">\d+</td><td class="num">([^<]+)',
            html,
            re.S,
        )
    }
    assert set(costs) == {
        "full",
        "window:8",
        "trim:" + re.search(r"trim:(\d+)", html)[1],
        "summarize:" + re.search(r"summarize:(\d+)", html)[1],
    }
    assert costs["window:8"] < costs["full"]
    # The full strategy replays exactly what was stored.
    stored = org_totals(org, UsageFilter()).cost
    assert costs["full"] == stored.quantize(Decimal("0.0001"))
    assert "10 more turns" in html and 'value="1h" selected' in html
