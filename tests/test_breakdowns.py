"""Breakdowns by every dimension (issue 14): filters that combine and stay in the URL, a
period beside the previous one, tags set on import and in the page, the request's end
user read from logs."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from conversations import breakdowns, cache_report
from conversations.breakdowns import (
    DIMENSIONS,
    BreakdownRow,
    Slice,
    breakdown,
    dimension_get,
    slice_totals,
)
from conversations.engine.pricing import usage_from_dict
from conversations.engine.types import Call, Transcript
from conversations.formats import parse_files
from conversations.models import Conversation, ConversationSource, Membership, Organization, Role
from conversations.services.imports import import_job_create, import_job_process
from conversations.services.transcripts import transcripts_store
from conversations.templatetags.costlab import usd

from .factories import MembershipFactory

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def _call(at: datetime, model: str = "gpt-4o", key: str | None = None) -> Call:
    return Call(
        request=[0],
        response=1,
        model=model,
        started_at=at,
        prompt_cache_key=key,
        usage=usage_from_dict({"prompt_tokens": 2000, "completion_tokens": 100}),
    )


@pytest.fixture
def member() -> Membership:
    return MembershipFactory.create(role=Role.ANALYST)


def _store(organization: Organization) -> None:
    """Week 1 (Nov 2-8): 3 calls of team a (2 gpt-4o on key k1, 1 gpt-4o-mini), 1 of
    team b. Week 2 (Nov 9-15): 1 call of team a on gpt-4o, key k1."""
    hello = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]

    def one(at: datetime, team: str, model: str = "gpt-4o", key: str | None = "k1") -> Transcript:
        return Transcript(
            messages=hello, calls=[_call(at, model, key)], model=model, tags={"team": team}
        )

    transcripts_store(
        organization=organization,
        transcripts=[
            one(T0, "a"),
            one(T0 + timedelta(days=1), "a"),
            one(T0 + timedelta(days=2), "a", "gpt-4o-mini", None),
            one(T0 + timedelta(days=3), "b"),
            one(T0 + timedelta(days=7), "a"),
        ],
    )


def test_it_groups_by_every_dimension(member: Membership) -> None:
    _store(member.organization)
    org = member.organization
    counts = {
        name: {row.label: row.calls for row in breakdown(org, Slice(), dim)}
        for name, dim in DIMENSIONS.items()
    }
    assert counts["model"] == {"gpt-4o": 4, "gpt-4o-mini": 1}
    assert counts["key"] == {"k1": 4, "(none)": 1}
    assert counts["source"] == {str(ConversationSource.API_LOG.label): 5}
    assert counts["week"] == {"2026-11-02": 4, "2026-11-09": 1}
    assert counts["month"] == {"2026-11-01": 5}
    assert sum(counts["day"].values()) == 5 and len(counts["day"]) == 5
    assert len(counts["conversation"]) == 5
    tag = dimension_get("tag:team")
    assert tag is not None
    assert {r.label: r.calls for r in breakdown(org, Slice(), tag)} == {"a": 4, "b": 1}


def test_it_combines_filters_over_a_half_open_period(member: Membership) -> None:
    _store(member.organization)
    org = member.organization
    week1 = Slice.of_dates(date(2026, 11, 2), date(2026, 11, 8))
    assert week1.end == datetime(2026, 11, 9, tzinfo=UTC)  # the last day included, no more
    assert slice_totals(org, week1).calls == 4
    both = Slice.of_dates(date(2026, 11, 2), date(2026, 11, 8), model="gpt-4o", tag_key="team",
                          tag_value="a")  # fmt: skip
    assert slice_totals(org, both).calls == 2
    assert slice_totals(org, Slice(prompt_cache_key="")).calls == 1  # calls without a key

    week2 = Slice.of_dates(date(2026, 11, 9), date(2026, 11, 15))
    previous = week2.previous()
    assert previous is not None
    assert (previous.start, previous.end) == (week1.start, week1.end)
    assert slice_totals(org, previous).calls == 4


def test_it_keeps_filters_in_the_url_and_compares_periods(
    client: Client, member: Membership
) -> None:
    _store(member.organization)
    client.force_login(member.user)
    url = reverse("breakdown_page", args=[member.organization.slug])
    query = {"by": "model", "date_from": "2026-11-09", "date_to": "2026-11-15", "compare": "on"}

    page = client.get(url, query).content.decode()

    assert 'data-previous="calls">previous period 4<' in page
    # gpt-4o-mini was used the week before only: listed with no call this week.
    assert re.findall(r'data-key="([^"]+)">.*?data-calls>(\d+)<', page, re.S) == [
        ("gpt-4o", "1"),
        ("gpt-4o-mini", "0"),
    ]
    # The export links carry the same filters.
    assert "date_from=2026-11-09&amp;date_to=2026-11-15" in page
    fragment = client.get(url, {**query, "tag": "team=b"}, headers={"HX-Request": "true"})
    assert fragment.content.decode().lstrip().startswith('<div id="breakdown-body">')
    assert 'data-kpi="calls">0<' in fragment.content.decode()
    # A bad filter is shown as an error and drops itself only.
    bad = client.get(url, {"tag": "no-equals", "model": "gpt-4o-mini"}).content.decode()
    assert "Write a tag filter as name=value." in bad
    assert 'data-kpi="calls">1<' in bad


def test_a_day_or_week_is_compared_with_the_same_one_a_period_earlier(
    client: Client, member: Membership
) -> None:
    """A day's key is its date, so matching keys across two periods paired nothing: every
    'Previous cost' was a dash. Nov 9 is set beside Nov 2, the week of Nov 9 beside the week
    of Nov 2; months of a 7-day period have no partner and say so."""
    _store(member.organization)
    org = member.organization
    client.force_login(member.user)
    url = reverse("breakdown_page", args=[org.slug])
    week = {"date_from": "2026-11-09", "date_to": "2026-11-15", "compare": "on"}
    one_call = slice_totals(org, Slice.of_dates(date(2026, 11, 2), date(2026, 11, 2))).cost
    four_calls = slice_totals(org, Slice.of_dates(date(2026, 11, 2), date(2026, 11, 8))).cost
    assert one_call is not None and four_calls is not None and four_calls > one_call

    def cells(by: str, query: dict[str, str]) -> list[tuple[str, str, str]]:
        page = client.get(url, {**query, "by": by}).content.decode()
        return re.findall(
            r'data-key="([^"]+)".*?data-previous-cost>([^<]*)<.*?data-change>([^<]*)<',
            page,
            re.S,
        )

    def cost_on(day: int) -> Decimal:
        cost = slice_totals(org, Slice.of_dates(date(2026, 11, day), date(2026, 11, day))).cost
        assert cost is not None
        return cost

    by_day = cells("day", week)
    # Nov 10-12 had no call, Nov 3-5 had: listed, $0 now, so the rows add up to both periods.
    gone = "\u2212100.0%"
    assert by_day == [
        ("2026-11-09", usd(one_call), "0.0%"),
        *((f"2026-11-{day + 7}", usd(cost_on(day)), gone) for day in (3, 4, 5)),
    ]
    assert sum(cost_on(day) for day in (2, 3, 4, 5)) == four_calls
    by_week = cells("week", week)
    fall = f"{(one_call - four_calls) / four_calls * 100:.1f}%".replace("-", "\u2212")
    assert by_week == [("2026-11-09", usd(four_calls), fall)]
    day_page = client.get(url, {**week, "by": "day"}).content.decode()
    assert "Cost 7 days earlier" in day_page
    # The chart sets the earlier day's bar beside each day's.
    figure = json.loads(re.findall(r'id="breakdown-figure"[^>]*>(.*?)</script>', day_page)[0])
    bars = {trace["name"]: trace["y"] for trace in figure["data"]}
    assert bars["Previous period"] == [float(cost_on(day)) for day in (2, 3, 4, 5)]
    assert bars["This period"] == [float(one_call), 0, 0, 0]
    # Ten days: days still pair (Nov 9 with Oct 30, which had nothing), weeks do not.
    ten = {**week, "date_to": "2026-11-18"}
    assert cells("day", ten)[0] == ("2026-11-09", "$0.00", "new")
    by_month = client.get(url, {**ten, "by": "week"}).content.decode()
    assert "data-previous-cost" not in by_month and "data-previous-unaligned" in by_month
    month = client.get(url, {**week, "by": "month"}).content.decode()
    assert "Months do not line up" in month
    assert "<td>Nov 2026</td>" in month  # as the overview names a month, not "2026-11-01"
    # A model is the same key in both periods, as before.
    # gpt-4o-mini was used before only: listed at $0 now, where it was left out.
    assert cells("model", week) == [
        ("gpt-4o", usd(one_call * 3), "\u221266.7%"),
        ("gpt-4o-mini", usd(cost_on(4)), gone),
    ]


def test_it_sets_tags_in_the_page(client: Client, member: Membership) -> None:
    _store(member.organization)
    conversation = Conversation.objects.filter(organization=member.organization).first()
    assert conversation is not None
    client.force_login(member.user)
    url = reverse("conversation_tags", args=[member.organization.slug, conversation.code])

    client.post(url, {"tags": "team = search\nenv=prod\n"})

    conversation.refresh_from_db()
    assert conversation.tags == {"team": "search", "env": "prod"}
    refused = client.post(url, {"tags": "owner=ana\nno equals sign"})
    conversation.refresh_from_db()
    assert conversation.tags == {"team": "search", "env": "prod"}  # nothing half-stored
    # The page again, with what was typed (the good line too) and why it was refused.
    page = refused.content.decode()
    assert refused.status_code == 400 and 'role="alert"' in page
    assert "owner=ana\nno equals sign</textarea>" in page and "Line 2" in page
    viewer = MembershipFactory.create(organization=member.organization, role=Role.VIEWER)
    client.force_login(viewer.user)
    assert client.post(url, {"tags": "x=y"}).status_code == 403


def test_it_tags_an_import_and_reads_metadata_and_end_users(
    member: Membership, tmp_path: Path
) -> None:
    chat = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        "model": "gpt-4o",
        "metadata": {"feature": "search", "nested": {"no": 1}},
    }
    upload = SimpleUploadedFile("chat.json", json.dumps(chat).encode())
    job = import_job_create(
        organization=member.organization,
        user=member.user,
        upload=upload,
        tags={"batch": "nov"},
    )
    import_job_process(job)
    conversation = Conversation.objects.get(organization=member.organization)
    assert conversation.tags == {"feature": "search", "batch": "nov"}

    log = tmp_path / "log.jsonl"
    entry = {
        "request": {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "hi"}],
            "safety_identifier": "user-7",
        },
        "api_key": "sk-proj-SECRET-abcd",
        "project": "proj-search",
        "response": {
            "model": "gpt-4o",
            "choices": [{"message": {"role": "assistant", "content": "yo"}}],
            "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
        },
    }
    log.write_text(json.dumps(entry) + "\n")
    transcripts = list(parse_files([log]))
    assert transcripts[0].calls is not None
    call = transcripts[0].calls[0]
    assert (call.end_user, call.project) == ("user-7", "proj-search")
    assert call.api_key == "sk-...abcd"  # never the secret
    transcripts_store(organization=member.organization, transcripts=transcripts)
    for name, label in (("api_key", "sk-...abcd"), ("project", "proj-search"), ("user", "user-7")):
        rows = breakdown(member.organization, Slice(), DIMENSIONS[name])
        assert label in {row.label for row in rows}, name
    assert "SECRET" not in str(list(Conversation.objects.values_list("turns__api_key")))


def test_it_tags_a_command_line_import(member: Membership, fixtures: Path) -> None:
    call_command(
        "import_transcripts",
        str(fixtures / "chat_small.json"),
        "--org",
        member.organization.slug,
        "--tag",
        "team=search",
        "--tag",
        "env = prod",
        stdout=io.StringIO(),
    )
    conversation = Conversation.objects.get(organization=member.organization)
    assert conversation.tags == {"team": "search", "env": "prod"}
    with pytest.raises(CommandError, match="--tag: Line 1: write a tag as name=value"):
        call_command(
            "import_transcripts",
            str(fixtures / "chat_small.json"),
            "--org",
            member.organization.slug,
            "--tag",
            "nope",
        )


def test_its_footnotes_explain_only_the_marks_the_table_shows(
    client: Client, member: Membership
) -> None:
    _store(member.organization)
    client.force_login(member.user)
    url = reverse("breakdown_page", args=[member.organization.slug])
    page = client.get(url, {"by": "model"}).content.decode()
    assert "includes unpriced calls" not in page and "caching cost more than it saved" not in page
    local = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    transcripts_store(
        organization=member.organization,
        transcripts=[
            Transcript(messages=local, calls=[_call(T0, "llama-local")], model="llama-local")
        ],
    )
    page = client.get(url, {"by": "model"}).content.decode()
    assert "* includes unpriced calls." in page and "$0.00*" not in page
    assert "caching cost more than it saved: cache writes" not in page


def test_a_row_whose_cache_writes_cost_more_than_they_saved_is_costlier() -> None:
    row = BreakdownRow(
        key="gpt-5.6",
        title=None,
        calls=2,
        cost=Decimal("0.12"),
        cost_uncached=Decimal("0.10"),
        prompt=2000,
        cached_tokens=0,
        completion_tokens=10,
        eligible=2,
        hits=0,
        unpriced=0,
        lost=None,
    )
    assert row.costlier and row.cost_reduction is not None and row.cost_reduction < 0
    saved = dataclasses.replace(row, cost=Decimal("0.05"))
    unpriced = dataclasses.replace(row, cost=None)
    assert not saved.costlier and not unpriced.costlier


def test_a_slice_with_no_call_costs_nothing_not_unpriced(
    client: Client, member: Membership
) -> None:
    """A filter nothing matches: $0.00 spent and lost, as the overview says; "unpriced" is
    for billed calls without a price."""
    _store(member.organization)
    client.force_login(member.user)
    slug = member.organization.slug
    for view, kpis in (("breakdown_page", ("cost", "lost")), ("cache_page", ())):
        page = client.get(reverse(view, args=[slug]), {"model": "nothing-like-it"})
        html = page.content.decode()
        assert page.status_code == 200 and "unpriced" not in html
        for kpi in kpis:
            assert re.search(rf'data-kpi="{kpi}">\$0\.00<', html), kpi
    empty = Slice(model="nothing-like-it")
    totals = breakdowns.raw_slice_totals(member.organization, empty)
    assert (totals.calls, totals.cost, totals.lost) == (0, Decimal(0), Decimal(0))
    summary = cache_report.raw_cache_summary(member.organization, empty)
    assert (summary.calls, summary.cost, summary.lost) == (0, Decimal(0), Decimal(0))
    whole = breakdowns.slice_totals(member.organization, Slice())
    assert whole.calls and whole.cost and whole.cost > 0


def test_a_duplicate_upload_says_so_once_with_a_link_to_the_first(
    client: Client, member: Membership
) -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o"}
    first = import_job_create(
        organization=member.organization,
        user=member.user,
        upload=SimpleUploadedFile("chat.json", json.dumps(chat).encode()),
    )
    import_job_process(first)
    client.force_login(member.user)
    url = reverse("imports", args=[member.organization.slug])
    again = SimpleUploadedFile("again.json", json.dumps(chat).encode())
    page = client.post(url, {"file": again, "format": ""}, follow=True).content.decode()
    assert page.count("already imported") == 1 and "nothing new was created" in page
    first_url = reverse("import_job_detail", args=[member.organization.slug, first.code])
    assert f'<a href="{first_url}">chat.json</a>' in page
    assert '<p class="crumbs"><a href="' in client.get(url).content.decode()
    # A bad tag line refuses the form, and says the file must be chosen again.
    bad = SimpleUploadedFile("third.json", json.dumps(chat).encode())
    refused = client.post(url, {"file": bad, "format": "", "tags": "no equals"})
    assert refused.status_code == 400 and "data-choose-again" in refused.content.decode()
    assert "data-choose-again" not in client.get(url).content.decode()


def test_a_change_says_new_unpriced_or_unknown_apart() -> None:
    from conversations.templatetags.costlab import cost_change

    def row(cost: Decimal | None) -> BreakdownRow:
        return BreakdownRow("k", None, 1, cost, cost, 1, 0, 1, 1, 0, 0, Decimal(0))

    assert cost_change(row(Decimal(2)), row(Decimal(0))) == "new"
    assert cost_change(row(Decimal(0)), row(Decimal(4))) == "\u2212100.0%"
    assert cost_change(row(Decimal(3)), row(Decimal(2))) == "+50.0%"
    assert cost_change(row(None), row(Decimal(2))) == "unpriced"
    assert cost_change(row(Decimal(2)), row(None)) == "unpriced"
    assert cost_change(row(Decimal(2)), None) == "—"  # a partner past the list's limit


def test_a_compared_breakdown_exports_the_previous_period_beside_it(
    client: Client, member: Membership
) -> None:
    """The export of a compared table carries what the page shows: each group's previous
    cost and calls, the previous period's groups alone included; figures named as in the
    conversations' and calls' files."""
    _store(member.organization)
    org = member.organization
    client.force_login(member.user)
    url = reverse("usage_export", args=[org.slug])
    week = {"date_from": "2026-11-09", "date_to": "2026-11-15", "compare": "on"}
    rows = list(csv.reader(io.StringIO(b"".join(client.get(url, {**week, "by": "model"}).streaming_content).decode())))  # type: ignore[attr-defined]  # fmt: skip
    header = rows[0]
    assert header[:4] == ["model", "calls", "cost", "cost_without_cache"]
    assert header[-4:] == [
        "unpriced_calls",
        "money_lost_to_misses",
        "previous_cost",
        "previous_calls",
    ]
    by_model = {row[0]: dict(zip(header, row, strict=True)) for row in rows[1:]}
    assert set(by_model) == {"gpt-4o", "gpt-4o-mini"}
    assert (by_model["gpt-4o"]["calls"], by_model["gpt-4o"]["previous_calls"]) == ("1", "3")
    assert (by_model["gpt-4o-mini"]["calls"], by_model["gpt-4o-mini"]["previous_calls"]) == (
        "0",
        "1",
    )
    previous = slice_totals(org, Slice.of_dates(date(2026, 11, 2), date(2026, 11, 8))).cost
    assert sum(Decimal(row["previous_cost"]) for row in by_model.values()) == previous
    # Months do not line up with a 7-day period: no previous columns.
    months = client.get(url, {**week, "by": "month"})
    first = b"".join(months.streaming_content).decode().splitlines()[0]  # type: ignore[attr-defined]
    assert "previous_cost" not in first


def test_the_command_line_exports_a_comparison_too(member: Membership) -> None:
    _store(member.organization)
    out = io.StringIO()
    slug = member.organization.slug
    call_command(
        "export_usage", "--org", slug, "--by", "model", "--from", "2026-11-09", "--to",
        "2026-11-15", "--compare", stdout=out,
    )  # fmt: skip
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0][-2:] == ["previous_cost", "previous_calls"]
    assert {row[0]: row[-1] for row in rows[1:]} == {"gpt-4o": "3", "gpt-4o-mini": "1"}
    with pytest.raises(CommandError, match="--compare needs --from and --to"):
        call_command("export_usage", "--org", slug, "--by", "model", "--compare")
