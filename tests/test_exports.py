"""CSV (and JSON Lines) exports (issue 14): streamed, neutralised against formula injection, the same slice
as the page, from the browser and from `manage.py export_usage`."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.http import StreamingHttpResponse
from django.test import Client
from django.urls import reverse

from conversations.csv_export import csv_lines, neutralise
from conversations.engine.pricing import usage_from_dict
from conversations.engine.types import Call, Transcript
from conversations.models import Conversation, Membership, Organization
from conversations.services.transcripts import transcripts_store
from pricing.models import ModelPrice

from .factories import MembershipFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
ATTACKS = ['=HYPERLINK("http://x")', "@SUM(1)", "+1", "-1", "\tlead"]


def _call(model: str, at: datetime, prompt: int, user: str | None = None) -> Call:
    return Call(
        request=[0],
        response=1,
        model=model,
        started_at=at,
        end_user=user,
        prompt_cache_key="k1",
        usage=usage_from_dict({"prompt_tokens": prompt, "completion_tokens": 10}),
    )


@pytest.fixture
def member() -> Membership:
    return MembershipFactory.create()


def _store(organization: Organization) -> None:
    """One conversation per attack string: as title, as model name and as tag value; a
    priced gpt-4o conversation on another day."""
    hello = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    transcripts = [
        Transcript(
            messages=hello,
            calls=[_call(attack, T0, 100, user="u-1")],
            title=attack,
            model=attack,
            tags={"team": attack, attack: "x"},
        )
        for attack in ATTACKS
    ]
    transcripts.append(
        Transcript(
            messages=hello,
            calls=[_call("gpt-4o", T0 + timedelta(days=1), 1000, user="u-2")],
            title="priced",
            model="gpt-4o",
        )
    )
    transcripts_store(organization=organization, transcripts=transcripts)


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_it_neutralises_every_formula_start() -> None:
    for attack in ATTACKS:
        assert neutralise(attack) == "'" + attack
    assert neutralise("\rx") == "'\rx"
    assert neutralise("plain =1") == "plain =1"
    lines = "".join(csv_lines(["a", "b", "c"], [("=1", Decimal("-0.5"), None)]))
    # Numbers stay numbers (a negative amount is data); unknown money stays empty.
    assert _rows(lines) == [["a", "b", "c"], ["'=1", "-0.500000000000", ""]]


def _export(client: Client, organization: Organization, **params: str) -> str:
    response = client.get(reverse("usage_export", args=[organization.slug]), params)
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv"
    return b"".join(response.streaming_content).decode()


def test_it_neutralises_titles_models_and_tags_in_every_export(
    client: Client, member: Membership
) -> None:
    _store(member.organization)
    client.force_login(member.user)

    conversations = _rows(_export(client, member.organization, table="conversations"))
    header = conversations[0]
    by_title = {row[header.index("title")]: row for row in conversations[1:]}
    for attack in ATTACKS:
        row = by_title["'" + attack]
        assert row[header.index("model")] == "'" + attack
        # Tags are "name=value; ...": the attack as a tag name starts the cell.
        assert row[header.index("tags")].startswith(("'", "team=")), row
    tag_cells = [row[header.index("tags")] for row in conversations[1:]]
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in tag_cells)

    turns = _rows(_export(client, member.organization, table="turns"))
    assert {row[turns[0].index("title")] for row in turns[1:]} >= {"'" + a for a in ATTACKS}
    by_tag = _rows(_export(client, member.organization, by="tag:team"))
    assert {row[0] for row in by_tag[1:]} == {"'" + a for a in ATTACKS} | {""}
    by_model = _rows(_export(client, member.organization, by="model"))
    for row in by_model[1:]:
        assert not row[0].startswith(("=", "+", "-", "@", "\t"))


def test_it_exports_the_pages_slice(client: Client, member: Membership) -> None:
    _store(member.organization)
    client.force_login(member.user)
    day = (T0 + timedelta(days=1)).date().isoformat()

    rows = _rows(_export(client, member.organization, date_from=day, date_to=day, by="model"))

    assert [row[0] for row in rows[1:]] == ["gpt-4o"]
    header = rows[0]
    assert rows[1][header.index("calls")] == "1"
    rate = ModelPrice.objects.get(model="gpt-4o", organization=None).input_per_1m
    out = ModelPrice.objects.get(model="gpt-4o", organization=None).output_per_1m
    assert Decimal(rows[1][header.index("cost")]) == (1000 * rate + 10 * out) / 1_000_000
    # Unpriced models have an empty cost, never 0.
    everything = _rows(_export(client, member.organization, by="model"))
    costs = {row[0]: row[everything[0].index("cost")] for row in everything[1:]}
    assert costs["'@SUM(1)"] == ""


def test_it_refuses_bad_filters_with_a_clear_message(client: Client, member: Membership) -> None:
    client.force_login(member.user)
    url = reverse("usage_export", args=[member.organization.slug])
    response = client.get(url, {"by": "nonsense"})
    assert response.status_code == 400
    assert b"Unknown grouping 'nonsense'" in response.content
    assert client.get(url, {"table": "secrets"}).status_code == 400


def test_it_exports_from_the_command_line(member: Membership) -> None:
    _store(member.organization)
    out = io.StringIO()
    call_command("export_usage", "--org", member.organization.slug, "--by", "user", stdout=out)
    rows = _rows(out.getvalue())
    assert rows[0][:3] == ["user", "calls", "cost"]
    assert {row[0]: row[1] for row in rows[1:]} == {"u-1": "5", "u-2": "1"}

    out = io.StringIO()
    call_command(
        "export_usage",
        "--org",
        member.organization.slug,
        "--by",
        "turn",
        "--from",
        "2026-11-03",
        "--to",
        "2026-11-03",
        stdout=out,
    )
    turns = _rows(out.getvalue())
    assert len(turns) == 2 and turns[1][turns[0].index("title")] == "priced"

    with pytest.raises(CommandError, match="--by 'nothing'"):
        call_command("export_usage", "--org", member.organization.slug, "--by", "nothing")
    with pytest.raises(CommandError, match="no organization"):
        call_command("export_usage", "--org", "nope")


def test_it_streams_turns_without_loading_them(client: Client, member: Membership) -> None:
    """3,000 calls come out in chunks of a server-side cursor: the first line is ready
    before the rows are read, and every call is in the file once."""
    messages: list[dict[str, str]] = []
    calls = []
    for n in range(3000):
        messages += [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": "a"}]
        calls.append(_call("gpt-4o", T0 + timedelta(seconds=n), 10))
        calls[-1].request, calls[-1].response = [2 * n], 2 * n + 1
    transcripts_store(
        organization=member.organization,
        transcripts=[Transcript(messages=messages, calls=calls, title="long", model="gpt-4o")],
    )
    client.force_login(member.user)
    response = client.get(
        reverse("usage_export", args=[member.organization.slug]), {"table": "turns"}
    )
    assert isinstance(response, StreamingHttpResponse)
    lines = iter(response.streaming_content)
    assert next(lines).decode().startswith("conversation,title,source,turn")
    rest = b"".join(lines).decode()
    assert len(_rows(rest)) == 3000
    assert Conversation.objects.filter(organization=member.organization).count() == 1


def test_it_hides_another_organizations_export(client: Client, member: Membership) -> None:
    _store(member.organization)
    stranger = MembershipFactory.create()
    client.force_login(stranger.user)
    url = reverse("usage_export", args=[member.organization.slug])
    assert client.get(url, {"table": "turns"}).status_code == 404


def _jsonl(client: Client, organization: Organization, **params: str) -> list[dict[str, Any]]:
    response = client.get(
        reverse("usage_export", args=[organization.slug]), {**params, "format": "jsonl"}
    )
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "application/x-ndjson"
    assert response["Content-Disposition"].endswith('.jsonl"')
    text = b"".join(response.streaming_content).decode()
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize(
    "params", [{"by": "model"}, {"table": "conversations"}, {"table": "turns"}]
)
def test_json_lines_hold_the_csv_rows_unneutralised_with_exact_money(
    client: Client, member: Membership, params: dict[str, str]
) -> None:
    """The same rows as the CSV, keyed by its header. Text as it is (no spreadsheet reads
    it), money as its exact digits, unknown money null."""
    _store(member.organization)
    client.force_login(member.user)
    csv_rows = _rows(_export(client, member.organization, **params))
    objects = _jsonl(client, member.organization, **params)
    header = csv_rows[0]
    assert len(objects) == len(csv_rows) - 1
    for obj, row in zip(objects, csv_rows[1:], strict=True):
        assert list(obj) == header
        for name, cell in zip(header, row, strict=True):
            value = obj[name]
            if value is None:
                assert cell == ""  # unknown: empty in CSV, null here, never 0
            elif isinstance(value, str):
                assert cell in (value, neutralise(value)), (name, value, cell)
            elif isinstance(value, bool):
                assert cell == str(value).lower(), (name, value, cell)
            else:
                assert cell == str(value), (name, value, cell)
    costs = [obj["cost"] for obj in objects if "cost" in obj]
    assert any(c is None for c in costs)  # the attack models have no price
    assert all(c is None or Decimal(c) == Decimal(c.strip()) for c in costs)
    if "table" not in params:  # by model: the raw model names, attacks included
        assert {obj["model"] for obj in objects} >= set(ATTACKS)


def test_json_lines_from_the_command_line(member: Membership) -> None:
    _store(member.organization)
    out = io.StringIO()
    call_command(
        "export_usage", "--org", member.organization.slug, "--by", "user", "--format", "jsonl",
        stdout=out,
    )  # fmt: skip
    users = {obj["user"]: obj["calls"] for obj in map(json.loads, out.getvalue().splitlines())}
    assert users == {"u-1": 5, "u-2": 1}


def test_an_unknown_export_format_is_refused(client: Client, member: Membership) -> None:
    client.force_login(member.user)
    url = reverse("usage_export", args=[member.organization.slug])
    response = client.get(url, {"format": "xlsx"})
    assert response.status_code == 400 and b"expected csv or jsonl" in response.content
    stranger = MembershipFactory.create()
    client.force_login(stranger.user)
    assert client.get(url, {"format": "jsonl", "table": "turns"}).status_code == 404


def test_the_exports_read_as_the_pages_do(client: Client, member: Membership) -> None:
    """Turns numbered from 1 as on the conversation page, money with the same 12 places on
    every row (a sum of nothing came out as "0"), booleans as JSON writes them, a title
    column only where the key has a title, and links with no stray '&' when unfiltered."""
    _store(member.organization)
    client.force_login(member.user)
    turns = _rows(_export(client, member.organization, table="turns"))
    header = turns[0]
    assert {row[header.index("turn")] for row in turns[1:]} == {"1"}
    assert {row[header.index("cache_eligible")] for row in turns[1:]} <= {"true", "false"}
    money = [
        row[header.index(name)]
        for row in turns[1:]
        for name in ("cost", "cost_without_cache")
        if row[header.index(name)]
    ]
    assert money and all(len(cell.split(".")[1]) == 12 for cell in money), money
    conversations = _rows(_export(client, member.organization, table="conversations"))
    lost = conversations[0].index("money_lost_to_misses")
    assert all(len(row[lost].split(".")[1]) == 12 for row in conversations[1:] if row[lost])
    by_model = _rows(_export(client, member.organization, by="model"))
    assert "title" not in by_model[0]
    by_conversation = _rows(_export(client, member.organization, by="conversation"))
    assert by_conversation[0][:2] == ["conversation", "title"]
    page = client.get(reverse("breakdown_page", args=[member.organization.slug]))
    export = reverse("usage_export", args=[member.organization.slug])
    assert f'href="{export}?table=turns&amp;format=jsonl"' in page.content.decode()
    assert "?&amp;" not in page.content.decode()
