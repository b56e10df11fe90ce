"""A live chat in a real headless Chromium: a new chat, two messages answered by a real
worker through costlab's own endpoint, replies and per-turn figures appearing as the page
polls, a streamed reply shown as it comes, and the connection's key nowhere in the HTML."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from pytest_django import Settings
from pytest_django.live_server_helper import LiveServer

from calls import selectors, simulated
from calls.models import Chat
from calls.services.chats import ChatOptions, chat_create
from calls.services.connections import ConnectionSettings, connection_create
from conversations.engine.vocabulary import get_encoding
from conversations.models import Role
from tests.conftest import Worker
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

pytestmark = [
    pytest.mark.browser,
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

SECRET = "sk-browser-SECRET-never-in-html-4321"
# The per-turn chart's element (charts.js draws it; a re-rendered live part replaces it).
CHART = "document.querySelector('[data-figure=\"turn-figure\"]')"
POLICY = "You are the support assistant of ACME. " + "Answer politely and cite the policy. " * 200


def test_a_new_chat_shows_replies_and_per_turn_figures(
    tab: Tab,  # noqa: F811
    live_server: LiveServer,
    worker: Worker,
    allow_async_unsafe: None,  # noqa: F811
) -> None:
    get_encoding("o200k_base")  # the live server runs here: its first call needs no load
    simulated.simulate_reset()
    selectors.endpoint_books_forget()
    membership = MembershipFactory.create(role=Role.ADMIN)
    slug = membership.organization.slug
    connection = connection_create(
        organization=membership.organization,
        user=None,
        settings=ConnectionSettings(
            name="built-in", base_url=f"{live_server.url}/v1", default_model="gpt-4o"
        ),
        api_key=SECRET,
    )
    log_in(tab, membership.user.username)
    page = tab.page
    page.goto(tab.url(f"/o/{slug}/chats/new/"))
    page.select_option("#id_connection", str(connection.pk))
    page.fill("#id_model", "gpt-4o")
    page.fill("#id_system_prompt", POLICY)
    page.fill("#id_max_completion_tokens", "150")
    with page.expect_navigation():
        page.click("#chat-new button[type=submit]")
    chat = Chat.objects.get(organization=membership.organization)
    assert page.url.endswith(f"/chats/{chat.code}/")
    chat_url = page.url
    # A blank message is refused in the send box's card, the page where it was.
    page.fill("#send textarea", "   ")
    page.click("#send button[type=submit]")
    expect(page.locator("[data-send-error]")).to_have_text("Type a message first.")
    assert page.url == chat_url
    for turn, question in enumerate(("Where is my order?", "And the invoice?")):
        page.fill("#send textarea", question)
        page.click("#send button[type=submit]")  # htmx: no navigation
        expect(page.locator(f'[data-role="user"]:has-text("{question}")')).to_be_visible()
        figures = page.locator(f'.figures[data-turn="{turn}"]')
        expect(figures).to_be_visible(timeout=60_000)
        expect(page.locator("[data-waiting]")).to_have_count(0)
        # The reply is in: the box is empty, and Send is enabled again (out of band).
        expect(page.locator("#send textarea")).to_have_value("")
        expect(page.locator("#send-button")).to_be_enabled()
        expect(page.locator("[data-send-error]")).to_have_count(0)
    assert page.url == chat_url  # a reload shows the chat, it sends nothing again
    replies = page.locator('[data-role="assistant"] .text')
    expect(replies).to_have_count(2)
    assert all(len(text.split()) == 150 for text in replies.all_inner_texts())
    first, second = (page.locator(f'.figures[data-turn="{n}"]') for n in (0, 1))
    assert first.locator("[data-cached]").inner_text() == "0"
    assert int(second.locator("[data-cached]").inner_text().replace(",", "")) > 0
    assert re.search(r"\$\d", second.locator("[data-cost]").inner_text())
    assert wait_for_charts(page, "#chat-live") == 1  # the per-turn chart, drawn under the CSP
    html = page.content()
    assert SECRET not in html and SECRET[:-4] not in html
    page.goto(tab.url(f"/o/{slug}/connections/{connection.code}/"))
    html = page.content()
    assert SECRET not in html and SECRET[:-4] not in html and "…4321" in html
    tab.assert_no_js_errors()


def test_a_streamed_reply_shows_as_it_comes(
    tab: Tab,  # noqa: F811
    live_server: LiveServer,
    worker: Worker,
    allow_async_unsafe: None,  # noqa: F811
    settings: Settings,
) -> None:
    """A slow stream (the endpoint's fault, 150 ms between chunks of a few words): the text
    received so far shows before the reply ends, then the recorded reply and its figures
    take its place."""
    settings.COSTLAB_ENDPOINT_SLOW_CHUNK_MS = 150  # the live server runs in this process
    get_encoding("o200k_base")
    simulated.simulate_reset()
    selectors.endpoint_books_forget()
    membership = MembershipFactory.create(role=Role.ADMIN)
    connection = connection_create(
        organization=membership.organization,
        user=None,
        settings=ConnectionSettings(
            name="slow",
            base_url=f"{live_server.url}/v1",
            extra_headers={"X-Costlab-Fault": "slow"},
        ),
        api_key=SECRET,
    )
    options = ChatOptions(connection=connection, model="gpt-4o-mini", max_completion_tokens=120)
    chat = chat_create(organization=membership.organization, user=None, options=options)
    log_in(tab, membership.user.username)
    page = tab.page
    page.goto(tab.url(f"/o/{membership.organization.slug}/chats/{chat.code}/"))
    streaming = page.locator("[data-streaming] .text")
    for turn, question in enumerate(("Tell me a long story.", "And another one.")):
        page.fill("#send textarea", question)
        page.click("#send button[type=submit]")
        expect(streaming).not_to_be_empty(timeout=30_000)  # 30 chunks: about 4.5 s of stream
        so_far = streaming.inner_text()
        if turn:  # the first turn's chart stays as it is while the text streams in
            assert page.evaluate(f"(window.chartSeen = {CHART}) !== null")
            with page.expect_response(lambda r: "?v=" in r.url, timeout=10_000) as polled:
                pass  # the live part's next poll (every second)
            assert polled.value.status == 204  # the reply is still streaming: nothing new
            assert page.evaluate(f"window.chartSeen === {CHART}")
        expect(page.locator(f'.figures[data-turn="{turn}"]')).to_be_visible(timeout=60_000)
        expect(page.locator("[data-streaming]")).to_have_count(0)
        reply = page.locator('[data-role="assistant"] .text').nth(turn).inner_text()
        assert len(reply.split()) == 120 and len(so_far.split()) < 120
        assert reply.startswith(so_far.strip())
    tab.assert_no_js_errors()
