"""The cache page and a breakdown in a real Chromium (issue 14): charts drawn, the fix list
loaded after the page, two filters that stay in the URL, and Back."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from conversations.engine.types import Transcript
from conversations.models import Role
from conversations.services.transcripts import transcripts_store
from tests.factories import MembershipFactory
from tests.test_browser import (  # noqa: F401 - fixtures, registered by import
    Tab,
    allow_async_unsafe,
    browser,
    log_in,
    price_book,
    tab,
    wait_for_charts,
)
from tests.test_cache_page import STATIC, T0, conversation, timestamped_traffic

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_shows_where_the_cache_loses_money(
    tab: Tab,  # noqa: F811
    allow_async_unsafe: None,  # noqa: F811
) -> None:
    membership = MembershipFactory.create(role=Role.VIEWER)
    timestamped_traffic(membership.organization)
    log_in(tab, membership.user.username)
    page = tab.page

    page.goto(tab.url(f"/o/{membership.organization.slug}/cache/"))

    assert wait_for_charts(page) == 3  # targets by day, lost per day, lost per model
    expect(page.locator('[data-kpi="hit-requests"]')).to_have_text("59.0%")
    expect(page.locator('#lost-by-reason tr[data-reason="prefix_changed"] td').nth(1)).to_have_text(
        "40"
    )
    breaker = page.locator('#breakers tr[data-breaker="1"]')
    expect(breaker.locator("[data-calls]")).to_have_text("40")
    expect(breaker.locator("[data-causes]")).to_contain_text("timestamp or id in the system prompt")
    left = page.locator('#breakers pre[data-side="left"] mark').inner_text()
    right = page.locator('#breakers pre[data-side="right"] mark').inner_text()
    assert left != right
    # The fix list arrives by htmx after the page; its links lead to the calls.
    fix = page.locator('#fixes li[data-fix="move_volatile"]')
    expect(fix).to_contain_text("would have saved")
    href = fix.locator("p.calls a").first.get_attribute("href")
    assert href is not None and re.search(r"/c/[0-9a-f-]+/#turn-1$", href)
    tab.assert_no_js_errors()


def test_it_keeps_two_breakdown_filters_in_the_url_and_goes_back(
    tab: Tab,  # noqa: F811
    allow_async_unsafe: None,  # noqa: F811
) -> None:
    membership = MembershipFactory.create()
    slug = membership.organization.slug
    transcripts: list[Transcript] = []
    for n in range(6):
        one = conversation(STATIC, T0 + timedelta(minutes=n), key=f"k{n % 2}", n=n)
        one.tags = {"team": "search" if n < 4 else "ads"}
        transcripts.append(one)
    transcripts_store(organization=membership.organization, transcripts=transcripts)
    log_in(tab, membership.user.username)
    page = tab.page
    page.goto(tab.url(f"/o/{slug}/breakdown/?by=key"))
    wait_for_charts(page)
    expect(page.locator('[data-kpi="calls"]')).to_have_text("6")

    page.fill("input[name=tag]", "team=search")
    page.press("input[name=tag]", "Enter")
    expect(page).to_have_url(re.compile(r"tag=team%3Dsearch"))
    expect(page.locator('[data-kpi="calls"]')).to_have_text("4")
    page.fill("input[name=key]", "k1")
    page.press("input[name=key]", "Enter")
    expect(page).to_have_url(re.compile(r"key=k1.*tag=team%3Dsearch|tag=team%3Dsearch.*key=k1"))
    expect(page.locator('[data-kpi="calls"]')).to_have_text("2")
    expect(page.locator("#breakdown-table tbody tr")).to_have_count(1)
    wait_for_charts(page, "#breakdown-body")

    page.go_back()
    expect(page).to_have_url(re.compile(r"tag=team%3Dsearch"))
    expect(page).not_to_have_url(re.compile(r"key=k1"))
    expect(page.locator('[data-kpi="calls"]')).to_have_text("4")
    expect(page.locator("input[name=key]")).to_have_value("")
    page.go_back()
    expect(page.locator('[data-kpi="calls"]')).to_have_text("6")
    # A menu applies at once, and Back undoes it too.
    page.select_option("select[name=by]", "tag:team")
    expect(page).to_have_url(re.compile(r"by=tag%3Ateam"))
    expect(page.locator("#breakdown-table tbody tr")).to_have_count(2)
    page.go_back()
    expect(page.locator("#breakdown-table tbody tr[data-key=k0]")).to_have_count(1)
    tab.assert_no_js_errors()


def test_a_compared_breakdown_by_day_draws_both_periods_on_a_date_axis(
    tab: Tab,  # noqa: F811
    allow_async_unsafe: None,  # noqa: F811
) -> None:
    """Two days a week apart and the week before them: each day beside the same day a week
    earlier, grey bars for the earlier week, dates spaced as dates."""
    membership = MembershipFactory.create()
    slug = membership.organization.slug
    days = [0, 2, 7, 9]  # T0 is Mon Nov 2: two calls each week
    transcripts_store(
        organization=membership.organization,
        transcripts=[conversation(STATIC, T0 + timedelta(days=d), n=d) for d in days],
    )
    log_in(tab, membership.user.username)
    page = tab.page
    page.goto(
        tab.url(f"/o/{slug}/breakdown/?by=day&date_from=2026-11-09&date_to=2026-11-15&compare=on")
    )
    wait_for_charts(page, "#breakdown-body")
    expect(page.locator("#breakdown-table tbody tr")).to_have_count(2)
    expect(page.locator("#breakdown-table thead")).to_contain_text("Cost 7 days earlier")
    for row in range(2):
        expect(
            page.locator("#breakdown-table tbody tr").nth(row).locator("[data-change]")
        ).to_have_text("0.0%")
    chart = page.locator("[data-figure=breakdown-figure]")
    assert (
        page.evaluate("document.querySelector('[data-figure=breakdown-figure]').layout.xaxis.type")
        == "date"
    )
    assert chart.locator(".barlayer .trace").count() == 2
    tab.assert_no_js_errors()
