from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import unescape
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from conversations.charts import conversation_turns_figure
from conversations.engine.pricing import usage_from_dict
from conversations.engine.types import Call, Transcript
from conversations.models import (
    Conversation,
    ImportJob,
    ImportStatus,
    Membership,
    Organization,
)
from conversations.selectors import (
    UsageFilter,
    conversation_list,
    conversation_summary,
    conversation_turns,
    org_totals,
)
from conversations.services.transcripts import transcripts_store

from .factories import MembershipFactory

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def first_group(pattern: str, html: str) -> str:
    match = re.search(pattern, html, re.S)
    assert match, f"{pattern!r} not on the page"
    return match[1]


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
def org_with_data(client: Client) -> Organization:
    membership = MembershipFactory.create()
    org = membership.organization
    hello = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    transcripts_store(
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


def test_it_totals_billing_usage_and_names_unpriced_models(org_with_data: Organization) -> None:
    totals = org_totals(org_with_data, UsageFilter())
    # $1.375 input + $0.01 output for the first, $0.005 + $0.0001 for the second.
    assert totals.cost == Decimal("1.375") + Decimal("0.01") + Decimal("0.005") + Decimal("0.0001")
    assert (totals.calls, totals.priced_calls) == (3, 2)
    assert totals.unpriced_models == [("llama-local", 1)]
    assert totals.hit_calls == 1 and totals.eligible_calls == 2
    assert totals.cached_tokens == 900_000


def test_it_lists_conversations_as_rows_by_cost_up_to_the_limit(
    org_with_data: Organization,
) -> None:
    rows = conversation_list(org_with_data, UsageFilter(), limit=2)
    assert [r.title for r in rows] == ["expensive", "cheap"]
    assert (rows[0].turn_count, rows[0].prompt, rows[0].cached) == (1, 1_000_000, 900_000)
    assert rows[1].cost == Decimal("0.005") + Decimal("0.0001") and rows[1].unpriced == 0


def test_it_gives_turn_rows_where_reported_usage_wins_and_a_pending_request_is_unbilled(
    org_with_data: Organization, fixtures: Path
) -> None:
    (reported,) = conversation_turns(Conversation.objects.get(title="cheap"))
    assert reported.reported is not None and reported.estimated is not None
    assert reported.shown is reported.reported and reported.billing is reported.reported
    call_command(
        "import_transcripts", str(fixtures / "chat_small.json"), "--org", org_with_data.slug
    )
    rows = conversation_turns(Conversation.objects.get(title="Capital cities"))
    assert [r.turn.index for r in rows] == [0, 1, 2]
    assert all(r.reported is None and r.shown is r.estimated for r in rows)
    # The trailing user message got no reply: estimated, shown, but never billed.
    assert [r.billing is not None for r in rows] == [True, True, False]
    first, second, pending = (r.estimated for r in rows)
    assert first is not None and second is not None and pending is not None
    summary = conversation_summary(rows)
    assert summary.prompt_tokens == first.prompt_tokens + second.prompt_tokens
    assert pending.prompt_tokens > 0 and summary.reported_turns == 0
    assert summary.billed_turns == 2
    # The chart draws what was billed: the request with no reply has no bar.
    bars = conversation_turns_figure(rows)["data"][:3]
    assert [sum(bar["y"][n] for bar in bars) for n in range(3)][2] == 0
    assert bars[1]["y"][0] == first.input_uncached + first.input_cache_write
    # Nothing billed yet costs nothing (a new chat); billed but unpriced is unknown.
    assert conversation_summary(rows[2:]).cost == 0 and conversation_summary([]).cost == 0


def test_an_unpriced_conversations_chart_draws_no_empty_dollar_axis(
    org_with_data: Organization,
) -> None:
    unpriced = conversation_turns(Conversation.objects.get(title="local model"))
    assert unpriced and all(
        r.billing is not None and r.billing.cost_total is None for r in unpriced
    )
    figure = conversation_turns_figure(unpriced)
    assert [trace["name"] for trace in figure["data"]] == [
        "Cached input",
        "Uncached input",
        "Output",
    ]
    assert "yaxis2" not in figure["layout"]
    assert "has no price" in figure["layout"]["annotations"][0]["text"]
    priced = conversation_turns_figure(conversation_turns(Conversation.objects.get(title="cheap")))
    assert priced["data"][-1]["name"] == "Cumulative cost" and "annotations" not in priced["layout"]


def test_it_shows_the_overview_with_charts_and_the_unpriced_models(
    client: Client, org_with_data: Organization
) -> None:
    response = client.get(reverse("org_overview", args=[org_with_data.slug]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "$1.39" in html  # 1.3901 rounded for people
    assert "llama-local" in html and "Unpriced" in html
    for figure in ("model-figure", "day-figure", "hits-figure"):
        data = json.loads(
            first_group(rf'id="{figure}" type="application/json">(.*?)</script>', html)
        )
        assert data["data"], figure
    rows = re.findall(r'/c/[0-9a-f-]+/">([^<]+)</a>', html)
    assert rows[:2] == ["expensive", "cheap"]  # sorted by cost, highest first


def test_it_swaps_only_the_dashboard_for_htmx_and_filters_by_model(
    client: Client, org_with_data: Organization
) -> None:
    url = reverse("org_overview", args=[org_with_data.slug])
    response = client.get(url, {"model": "llama-local"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="dashboard">')
    assert "<html" not in html
    assert "local model" in html and "expensive" not in html


def test_filters_that_match_nothing_say_so_and_cost_nothing(
    client: Client, org_with_data: Organization
) -> None:
    url = reverse("org_overview", args=[org_with_data.slug])
    html = client.get(url, {"date_from": "2099-01-01"}).content.decode()
    assert 'data-kpi="cost">$0.00<' in html  # no call: nothing spent, not "unpriced"
    # No chart drawn empty (Plotly's default axes read as data): a line that says why.
    for figure in ("model-figure", "day-figure", "hits-figure"):
        assert f'data-figure-empty="{figure}"' in html and f'id="{figure}"' not in html


def test_an_invalid_filter_is_said_and_the_valid_ones_still_apply(
    client: Client, org_with_data: Organization
) -> None:
    url = reverse("org_overview", args=[org_with_data.slug])
    html = client.get(url, {"date_from": "garbage", "model": "llama-local"}).content.decode()
    assert "data-filter-errors" in html and "Enter a valid date" in html
    assert "local model" in html and "expensive" not in html  # the model filter kept
    inverted = client.get(url, {"date_from": "2024-06-02", "date_to": "2024-06-01"})
    assert "it is before From" in inverted.content.decode()
    # A valid sort stays when a date is not one.
    sorted_ = client.get(url, {"date_from": "garbage", "sort": "title"}).content.decode()
    assert 'name="sort" value="title"' in sorted_
    # The breakdown says it too, and applies the start alone.
    breakdown = reverse("breakdown_page", args=[org_with_data.slug])
    page = client.get(breakdown, {"date_from": "2024-06-02", "date_to": "2024-06-01"})
    assert "it is before From" in page.content.decode()


def test_the_conversation_list_says_when_it_shows_only_the_first_rows(
    client: Client, org_with_data: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conversations import selectors

    listed = selectors.conversation_list
    monkeypatch.setattr(
        selectors,
        "conversation_list",
        lambda *args, **kwargs: listed(*args, **{**kwargs, "limit": 1}),
    )
    total = selectors.conversation_count(org_with_data, selectors.UsageFilter())
    assert total > 1
    html = client.get(reverse("org_overview", args=[org_with_data.slug])).content.decode()
    assert f"The first 1 of {total}" in html and 'data-shown="1"' in html
    assert "by=conversation" in html
    table = client.get(
        reverse("conversation_table", args=[org_with_data.slug]), headers={"HX-Request": "true"}
    )
    assert f"The first 1 of {total}" in table.content.decode()
    assert "<html" not in table.content.decode()


def test_it_gives_a_history_restore_the_whole_page(
    client: Client, org_with_data: Organization
) -> None:
    url = reverse("org_overview", args=[org_with_data.slug])
    headers = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
    html = client.get(url, {"model": "llama-local"}, headers=headers).content.decode()
    assert "<html" in html and 'id="filters"' in html
    assert "local model" in html and "expensive" not in html


def test_it_says_the_overview_varies_with_the_htmx_headers(
    client: Client, org_with_data: Organization
) -> None:
    url = reverse("org_overview", args=[org_with_data.slug])
    headers: dict[str, str]
    for headers in ({}, {"HX-Request": "true"}):
        vary = client.get(url, headers=headers).headers["Vary"]
        assert "HX-Request" in vary and "HX-History-Restore-Request" in vary, headers


def test_it_stops_htmx_polling_a_finished_job_and_says_it_varies(
    client: Client, org_with_data: Organization
) -> None:
    job = ImportJob.objects.create(
        organization=org_with_data, original_name="done.json", status=ImportStatus.SUCCEEDED
    )
    url = reverse("import_job_progress", args=[org_with_data.slug, job.code])
    polled = client.get(url, headers={"HX-Request": "true"})
    plain = client.get(url)
    assert (polled.status_code, plain.status_code) == (286, 200)
    for response in (polled, plain):
        assert "HX-Request" in response.headers["Vary"]


def test_the_conversation_table_opened_as_a_page_is_the_overview(
    client: Client, org_with_data: Organization
) -> None:
    url = reverse("conversation_table", args=[org_with_data.slug])
    page = client.get(url, {"sort": "cost"})
    html = page.content.decode()
    assert "<html" in html and 'id="filters"' in html and "HX-Request" in page.headers["Vary"]
    rows = re.findall(r'/c/[0-9a-f-]+/">([^<]+)</a>', html)
    assert rows == ["local model", "cheap", "expensive"]  # its order kept
    fragment = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in fragment and 'id="conversation-table"' in fragment
    # Back to it after a swap: htmx asks again for a restore, which replaces the whole body.
    restore = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
    restored = client.get(url, {"sort": "cost"}, headers=restore).content.decode()
    assert "<html" in restored and 'id="filters"' in restored


def test_the_unpriced_note_shows_only_beside_an_unpriced_row(
    client: Client, org_with_data: Organization
) -> None:
    url = reverse("org_overview", args=[org_with_data.slug])
    note = "* includes unpriced calls: the cost shown covers the priced ones only."
    assert note in client.get(url).content.decode()  # "local model" is unpriced
    priced = client.get(url, {"model": "gpt-4o"}).content.decode()
    assert "expensive" in priced and note not in priced
    table = reverse("conversation_table", args=[org_with_data.slug])
    fragment = client.get(table, {"model": "llama-local"}, headers={"HX-Request": "true"})
    assert note in fragment.content.decode()


def test_it_sorts_the_conversation_table_partial(
    client: Client, org_with_data: Organization
) -> None:
    url = reverse("conversation_table", args=[org_with_data.slug])
    html = client.get(url, {"sort": "cost"}, headers={"HX-Request": "true"}).content.decode()
    rows = re.findall(r'/c/[0-9a-f-]+/">([^<]+)</a>', html)
    assert rows == ["local model", "cheap", "expensive"]  # unpriced first when ascending


def test_a_first_click_sorts_names_from_a_and_figures_from_the_biggest() -> None:
    from conversations.templatetags.costlab import sort_toggle

    assert sort_toggle("title", "-cost") == "title"
    assert sort_toggle("title", "title") == "-title"
    assert sort_toggle("title", "-title") == "title"
    assert sort_toggle("cost", "title") == "-cost"
    assert sort_toggle("cost", "-cost") == "cost"
    assert sort_toggle("created", "cost") == "-created"


def test_it_shows_reported_and_estimated_usage_on_the_conversation_page(
    client: Client, org_with_data: Organization
) -> None:
    conversation = Conversation.objects.get(title="cheap")
    html = client.get(
        reverse("conversation_detail", args=[org_with_data.slug, conversation.code])
    ).content.decode()
    assert "Estimate vs report" in html
    assert "est." in html  # the estimate beside the reported prompt tokens
    assert "2,000" in html


def test_it_compares_strategies_and_projects_the_next_turns(client: Client, tmp_path: Path) -> None:
    from django.core.management import call_command

    membership = MembershipFactory.create()
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
    response = client.get(url, {"retention": "1h"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    # The page's address keeps the scenario, and the page loads it again from there.
    page_url = reverse("conversation_detail", args=[org.slug, conversation.code])
    assert response["HX-Replace-Url"] == f"{page_url}?retention=1h"
    reloaded = client.get(page_url, {"retention": "1h"}).content.decode()
    assert f'hx-get="{url}?retention=1h"' in reloaded
    assert f'hx-get="{url}"' in client.get(page_url).content.decode()
    bogus = client.get(url, {"retention": "bogus"}, headers={"HX-Request": "true"})
    assert "“bogus” is not one of these" in bogus.content.decode()
    assert "data-retention-refused" not in html
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
        "trim:" + first_group(r"trim:(\d+)", html),
        "summarize:" + first_group(r"summarize:(\d+)", html),
    }
    assert costs["window:8"] < costs["full"]
    # The full strategy replays exactly what was stored.
    stored = org_totals(org, UsageFilter()).cost
    assert stored is not None
    assert costs["full"] == stored.quantize(Decimal("0.0001"))
    assert "10 more turns" in html and 'value="1h" selected' in html
    # gpt-4o is not offered extended retention, nor caches by breakpoints: both say so.
    left_out = re.findall(r"<span data-lever-left-out>([^<]+)</span>", html)
    assert left_out == [
        "extended retention (24h): not offered under the prefix_128 cache rules",
        "explicit breakpoint after the system prompt: only for models that cache by "
        "breakpoints (GPT-5.6 on)",
    ]
    # The levers' note shows exactly when their rows are all alike.
    rows = re.findall(r'<tr data-lever="[^"]+"><td>[^<]+</td>(.*?)</tr>', html, re.S)
    assert len(rows) > 1 and ("data-levers-alike" in html) == (len(set(rows)) == 1)


def test_the_imports_page_says_where_the_demo_conversations_came_from(
    client: Client, tmp_path: Path
) -> None:
    """A walk's user saw "Imported transcript" on the demo's conversations and "Nothing
    imported yet" on the imports page."""
    call_command("seed_demo", stdout=io.StringIO())
    demo = Organization.objects.get(slug="demo")
    client.force_login(demo.memberships.get().user)
    stored = demo.conversations.count()  # transcripts and an API log, no live chat yet
    page = client.get(reverse("imports", args=["demo"])).content.decode()
    assert "Nothing imported yet." in page
    assert f"Not listed here: {stored} imported conversations" in page
    assert "the demo data that <code>make run</code> loads" in page
    # A file imported through a job is listed, and not counted there.
    path = tmp_path / "one.json"
    path.write_text(
        json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    )
    call_command("import_transcripts", str(path), "--org", "demo")
    page = client.get(reverse("imports", args=["demo"])).content.decode()
    assert "Nothing imported yet." not in page
    assert f"Not listed here: {stored} imported conversations" in page
    other = MembershipFactory.create()
    client.force_login(other.user)
    assert (
        "data-without-job"
        not in client.get(reverse("imports", args=[other.organization.slug])).content.decode()
    )


def test_the_imports_list_says_why_a_file_failed_and_what_is_unpriced(
    client: Client, org_with_data: Organization
) -> None:
    failed = ImportJob.objects.create(
        organization=org_with_data,
        original_name="broken.jsonl",
        status=ImportStatus.FAILED,
        error="broken.jsonl line 3: malformed JSON (Expecting value)",
    )
    done = ImportJob.objects.create(
        organization=org_with_data,
        original_name="mixed.jsonl",
        status=ImportStatus.SUCCEEDED,
        cost=Decimal("0.5"),
        unpriced_turns=5,
        warnings=["web search fees are not counted", "another"],
    )
    html = client.get(reverse("imports", args=[org_with_data.slug])).content.decode()
    assert failed.error in html and "data-job-error" in html
    assert f"{done.unpriced_turns} unpriced turns" in html and "2 warnings" in html


def test_an_unpriced_model_says_how_to_price_it_and_links_staff_to_its_row(
    client: Client, org_with_data: Organization
) -> None:
    url = reverse("org_overview", args=[org_with_data.slug])
    html = client.get(url).content.decode()
    # A member who is not staff: the steps in words, no link into the admin.
    assert f"manage.py recompute_costs --org {org_with_data.slug}" in html
    assert "Re-price stored usage" in html
    assert "data-price-link" not in html and "/admin/" not in html
    user = Membership.objects.get(organization=org_with_data).user
    user.is_staff = user.is_superuser = True
    user.save()
    client.force_login(user)
    html = client.get(url).content.decode()
    link = unescape(first_group(r'<a href="([^"]+)" data-price-link="llama-local">', html))
    # The llama call was made on 2026-11-03: the row starts the day before.
    add = reverse("admin:pricing_modelprice_add")
    assert link == f"{add}?model=llama-local&effective_from=2026-11-02"
    assert 'data-price-link="gpt-4o"' not in html  # priced
    form = client.get(link).content.decode()
    assert 'value="llama-local"' in form
    assert re.search(r'name="effective_from_0"[^>]*value="2026-11-02"', form) or re.search(
        r'value="2026-11-02"[^>]*name="effective_from_0"', form
    )
    assert client.get(f"{add}?model=x&effective_from=not-a-day").status_code == 200


def test_the_overview_draws_a_long_span_by_week(client: Client) -> None:
    membership = MembershipFactory.create()
    org = membership.organization
    hello = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    transcripts_store(
        organization=org,
        transcripts=[
            Transcript(
                messages=hello,
                title=f"day {days}",
                model="gpt-4o",
                calls=[Call(request=[0], response=1, started_at=T0 + timedelta(days=days))],
            )
            for days in (0, 1, 200)
        ],
    )
    client.force_login(membership.user)
    url = reverse("org_overview", args=[org.slug])
    html = client.get(url).content.decode()
    assert "<h2>Cost by week</h2>" in html and "<h2>Cache hit rate by week</h2>" in html
    data = json.loads(first_group(r'id="day-figure" type="application/json">(.*?)</script>', html))
    # T0 (a Monday) and the day after are one week's bar; 200 days later, another.
    assert data["data"][0]["x"] == ["2026-11-02", "2027-05-17"]
    html = client.get(url, {"date_from": "2026-11-01", "date_to": "2026-11-30"}).content.decode()
    assert "<h2>Cost by day</h2>" in html
