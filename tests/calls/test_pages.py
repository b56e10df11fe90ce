"""The pages of calls/: who may do what, tenancy, htmx polling, the Content Security Policy
with no inline code, and seed_demo's built-in connection."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from pytest_django import Settings

from calls.models import ApiCall, CallStatus, Chat, ProviderConnection
from calls.services import chats, partials
from calls.services.connections import (
    BUILTIN_NAME,
    ConnectionSettings,
    builtin_connection_ensure,
    connection_api_key,
    connection_create,
)
from conversations import selectors as conversation_selectors
from conversations.models import Conversation, Membership, Organization, Role
from costlab import jobs
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db
SECRET = "sk-live-SECRET-never-shown-5678"


def make_connection(organization: Organization) -> ProviderConnection:
    return connection_create(
        organization=organization,
        user=None,
        settings=ConnectionSettings(name="prod", base_url="https://api.example.com/v1"),
        api_key=SECRET,
    )


def make_chat(connection: ProviderConnection) -> Chat:
    return chats.chat_create(
        organization=connection.organization,
        user=None,
        options=chats.ChatOptions(connection=connection, model="gpt-4o"),
    )


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[object, ...]]]:
    """Tasks sent, instead of sending them (no worker in these tests)."""
    sent: list[tuple[str, tuple[object, ...]]] = []
    monkeypatch.setattr(jobs, "enqueue", lambda name, *args: sent.append((name, args)))
    return sent


def as_member(client: Client, role: str) -> Membership:
    membership = MembershipFactory.create(role=role)
    client.force_login(membership.user)
    return membership


def test_it_starts_a_chat_and_sends_a_message_through_the_worker(
    client: Client, queued: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    membership = as_member(client, Role.ANALYST)
    slug = membership.organization.slug
    connection = make_connection(membership.organization)
    page = client.get(reverse("chat_new", args=[slug]))
    assert page.status_code == 200 and b"prod" in page.content
    response = client.post(
        reverse("chat_new", args=[slug]),
        {"connection": connection.pk, "model": "", "system_prompt": "Be brief.", "stream": "on"},
    )
    chat = Chat.objects.get(organization=membership.organization)
    assert response.status_code == 302 and response["Location"].endswith(f"/chats/{chat.code}/")
    assert chat.model == "gpt-4o-mini"  # the connection's default
    assert (chat.stream, chat.use_cache_key) == (True, False)
    conversation = chat.conversation
    assert conversation.source == "live" and conversation.messages.get().role == "system"
    with django_capture_on_commit_callbacks(execute=True):
        sent = client.post(reverse("chat_send", args=[slug, chat.code]), {"text": "Hello there"})
    assert sent.status_code == 302
    call = ApiCall.objects.get(chat=chat)
    assert queued == [(jobs.CALL_RUN, (call.pk,))]
    assert (call.index, call.request_end, call.status) == (0, 2, CallStatus.PENDING)
    conversation.refresh_from_db()
    assert conversation.title == "Hello there"
    # While the reply is awaited, the live part polls; a second message is refused.
    page = client.get(reverse("chat_detail", args=[slug, chat.code]))
    assert b'hx-trigger="every 1s"' in page.content and b"Waiting for the reply" in page.content
    poll = client.get(
        reverse("chat_detail", args=[slug, chat.code]), headers={"HX-Request": "true"}
    )
    assert poll.status_code == 200 and b"<html" not in poll.content
    assert re.search(rb'<button type="submit" id="send-button"\s+disabled', page.content)
    assert b"{#" not in page.content and b"{%" not in page.content  # no template text shown
    again = client.post(reverse("chat_send", args=[slug, chat.code]), {"text": "Hello? Anyone?"})
    assert again.status_code == 409
    assert b"Wait for the reply" in again.content
    assert b"Hello? Anyone?</textarea>" in again.content  # what was typed is not lost
    # Through htmx: the send box's card alone, the refusal in it (a 2xx: htmx swaps it).
    boxed = client.post(
        reverse("chat_send", args=[slug, chat.code]),
        {"text": "Hello? Anyone?"},
        headers={"HX-Request": "true"},
    )
    assert boxed.status_code == 200 and b"<html" not in boxed.content
    assert b'id="send-card"' in boxed.content and b"data-send-error" in boxed.content
    assert b"Wait for the reply" in boxed.content and b"Hello? Anyone?</textarea>" in boxed.content
    # A page that was not polling (loaded before the call) gets the live part, polling, with it.
    stale_live = boxed.content.split(b'id="chat-live"', 1)[1]
    assert b'hx-swap-oob="true"' in stale_live and b'hx-trigger="every 1s"' in stale_live
    assert conversation.messages.filter(role="user").count() == 1
    # Once the call is over, the poll answers 286: htmx stops polling.
    ApiCall.objects.filter(pk=call.pk).update(status=CallStatus.FAILED, error="boom")
    done = client.get(
        reverse("chat_detail", args=[slug, chat.code]), headers={"HX-Request": "true"}
    )
    assert done.status_code == 286 and b"boom" in done.content
    # Send is enabled again, out of band (the poll's own part is the live one).
    enabled = re.search(
        rb'<button type="submit" id="send-button" hx-swap-oob="true"\s*>', done.content
    )
    assert enabled is not None
    # A message sent through htmx: an empty box, and the live part with it, waiting.
    with django_capture_on_commit_callbacks(execute=True):
        sent = client.post(
            reverse("chat_send", args=[slug, chat.code]),
            {"text": "Second try"},
            headers={"HX-Request": "true"},
        )
    assert sent.status_code == 200 and b"data-send-error" not in sent.content
    live = sent.content.split(b'id="chat-live"', 1)[1]
    assert b'hx-swap-oob="true"' in live and b"Second try" in live and b"data-waiting" in live
    assert conversation.messages.filter(role="user").count() == 2


def test_a_streamed_reply_shows_as_it_comes_and_polls_faster_meanwhile(
    client: Client, queued: list[Any]
) -> None:
    membership = as_member(client, Role.ANALYST)
    slug = membership.organization.slug
    chat = make_chat(make_connection(membership.organization))
    assert chat.stream  # the form's default
    call = chats.chat_message_send(chat=chat, text="Tell me <everything>")
    live_url = reverse("chat_detail", args=[slug, chat.code])
    url = reverse("chat_streaming", args=[slug, chat.code])
    waiting = client.get(live_url, headers={"HX-Request": "true"}).content
    assert b"data-waiting" in waiting and b"data-streaming" not in waiting
    # The live part polls every second; the reply's text, on its own, every 500 ms.
    assert b'hx-trigger="every 1s"' in waiting and b'hx-trigger="every 500ms"' in waiting
    assert url.encode() in waiting
    clock = iter((0.0, 1.0))  # the stream's first chunk, then a second later
    writer = partials.ReplyPartial(call.code, clock=lambda: next(clock))
    writer(["Here is "])
    writer(["Here is ", "<b>what</b>", " I know\nso far"])
    try:
        for page in (client.get(url), client.get(live_url, headers={"HX-Request": "true"})):
            assert page.status_code == 200
            shown = page.content.split(b"data-streaming", 1)[1]  # escaped, line breaks kept
            assert b"Here is &lt;b&gt;what&lt;/b&gt; I know<br>so far" in shown
            assert b"data-waiting" not in page.content
        fragment = client.get(url).content
        assert b"<html" not in fragment and b'id="chat-live"' not in fragment
        # The same call of a chat that is not streamed: its text is not read, no fast poll.
        ApiCall.objects.filter(pk=call.pk).update(stream=False)
        plain = client.get(live_url, headers={"HX-Request": "true"}).content
        assert b"data-streaming" not in plain and b"every 500ms" not in plain
        # Once the call is over, the fast poll stops (286) and shows nothing more.
        ApiCall.objects.filter(pk=call.pk).update(stream=True, status=CallStatus.FAILED)
        done = client.get(url)
        assert done.status_code == 286 and b"data-streaming" not in done.content
        # Another organization's member cannot poll it.
        as_member(client, Role.ANALYST)
        assert client.get(url).status_code == 404
    finally:
        writer.clear()


def test_the_chat_poll_sends_nothing_while_nothing_changed(
    client: Client, queued: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    """Each poll re-rendered the chat and redrew its chart (blank for ~0.1 s, the page
    jumping, a selection lost, every second): now an unchanged live part answers 204, which
    htmx does not swap, and the part comes again once a turn or the call's state moves."""
    membership = as_member(client, Role.ANALYST)
    slug = membership.organization.slug
    chat = make_chat(make_connection(membership.organization))
    with django_capture_on_commit_callbacks(execute=True):
        sent = client.post(
            reverse("chat_send", args=[slug, chat.code]),
            {"text": "Where is my parcel?"},
            headers={"HX-Request": "true"},
        )
    # The first message names the chat: its title comes out of band with the live part.
    assert re.search(
        rb'<h1 id="chat-title" hx-swap-oob="true">Where is my parcel\?</h1>', sent.content
    )
    poll = re.search(rb'hx-get="([^"]+\?v=[^"]+)"', sent.content)
    assert poll is not None
    url = poll.group(1).decode().replace("&amp;", "&")
    htmx = {"HX-Request": "true"}
    assert client.get(url, headers=htmx).status_code == 204
    assert client.get(url, headers=htmx).status_code == 204
    # Claimed by a worker, then retried: the page shows the same while the call is awaited
    # (a re-render at the claim redrew the chart once a message, seen in a browser test).
    call = ApiCall.objects.get(chat=chat)
    ApiCall.objects.filter(pk=call.pk).update(status=CallStatus.RUNNING, attempt_count=2)
    assert client.get(url, headers=htmx).status_code == 204
    # A turn recorded (here before its call is marked finished): the part comes again.
    chat.conversation.turns.create(index=0, request_ranges=[[0, 2]], model="gpt-4o")
    moved = client.get(url, headers=htmx)
    assert moved.status_code == 200 and b'id="chat-live"' in moved.content
    again = re.search(rb'hx-get="([^"]+\?v=[^"]+)"', moved.content)
    assert again is not None and again.group(1).decode() != url
    # Over: the part with its outcome, and polling stops.
    ApiCall.objects.filter(pk=call.pk).update(status=CallStatus.FAILED, error="boom")
    done = client.get(url, headers=htmx)
    assert done.status_code == 286 and b"boom" in done.content
    # Another organization's member gets a 404, not a 204.
    as_member(client, Role.ANALYST)
    assert client.get(url, headers=htmx).status_code == 404


def test_a_chat_whose_connection_was_deleted_refreshes_instead_of_offering_its_box(
    client: Client,
) -> None:
    membership = as_member(client, Role.ADMIN)
    slug = membership.organization.slug
    connection = make_connection(membership.organization)
    chat = make_chat(connection)
    connection.delete()
    url = reverse("chat_send", args=[slug, chat.code])
    refused = client.post(url, {"text": "hi"}, headers={"HX-Request": "true"})
    assert refused.status_code == 200 and refused["HX-Refresh"] == "true"
    assert b'id="send"' not in refused.content
    page = client.get(reverse("chat_detail", args=[slug, chat.code]))
    assert b"a deleted connection" in page.content and b'id="send"' not in page.content
    assert not ApiCall.objects.filter(chat=chat).exists()


def test_a_chat_on_this_servers_own_endpoint_says_its_replies_are_placeholders(
    client: Client,
) -> None:
    membership = as_member(client, Role.ADMIN)
    slug = membership.organization.slug
    builtin = builtin_connection_ensure(organization=membership.organization, port=8101)
    chat = make_chat(builtin)
    url = reverse("chat_detail", args=[slug, chat.code])
    # The page as make run serves it (127.0.0.1:8101), or through localhost: the note.
    for host in ("127.0.0.1:8101", "localhost:8101"):
        page = client.get(url, HTTP_HOST=host, SERVER_PORT="8101")
        assert b'id="builtin-note"' in page.content and b"placeholder words" in page.content
    # Served on another port: the connection calls another server, whatever its name.
    assert b'id="builtin-note"' not in client.get(url, HTTP_HOST="127.0.0.1:8000").content
    # A connection named "built-in" to a local model server (Ollama's port): no note.
    builtin.base_url = "http://localhost:11434/v1"
    builtin.save(update_fields=["base_url"])
    page = client.get(url, HTTP_HOST="127.0.0.1:8101", SERVER_PORT="8101")
    assert b'id="builtin-note"' not in page.content
    # Another name, pointing at this server: the note (told by address, not by name).
    other = make_connection(membership.organization)
    other.base_url = "http://127.0.0.1:8101/v1/"
    other.save(update_fields=["base_url"])
    page = client.get(
        reverse("chat_detail", args=[slug, make_chat(other).code]),
        HTTP_HOST="127.0.0.1:8101",
        SERVER_PORT="8101",
    )
    assert b'id="builtin-note"' in page.content


def test_a_new_chat_suggests_each_priced_model_once(client: Client) -> None:
    from pricing.models import ModelPrice

    membership = as_member(client, Role.ADMIN)
    make_connection(membership.organization)
    gpt4o = ModelPrice.objects.filter(organization__isnull=True, model="gpt-4o").first()
    assert gpt4o is not None
    # A price change: the same model twice in the book.
    later = ModelPrice.objects.get(pk=gpt4o.pk)
    later.pk, later.effective_from = None, gpt4o.effective_from.replace(year=2030)
    later.save()
    page = client.get(reverse("chat_new", args=[membership.organization.slug])).content.decode()
    options = re.findall(r'<option value="([^"]+)">', page.split('id="priced-models"', 1)[1])
    assert options.count("gpt-4o") == 1 and "gpt-4o-mini" in options
    assert not any("*" in name for name in options)


def test_it_keeps_viewers_out_of_chats(client: Client) -> None:
    membership = as_member(client, Role.VIEWER)
    slug = membership.organization.slug
    chat = make_chat(make_connection(membership.organization))
    assert client.get(reverse("chats", args=[slug])).status_code == 200
    assert client.get(reverse("chat_detail", args=[slug, chat.code])).status_code == 200
    assert client.get(reverse("chat_new", args=[slug])).status_code == 403
    response = client.post(reverse("chat_send", args=[slug, chat.code]), {"text": "hi"})
    assert response.status_code == 403
    assert not ApiCall.objects.exists()


def test_it_hides_other_organizations_chats_and_calls(client: Client) -> None:
    mine = as_member(client, Role.ADMIN)
    theirs = make_connection(MembershipFactory.create().organization)
    chat = make_chat(theirs)
    call = chats.connection_test_request(connection=theirs)
    for slug in (mine.organization.slug, theirs.organization.slug):
        assert client.get(reverse("chat_detail", args=[slug, chat.code])).status_code == 404
        assert client.get(reverse("call_detail", args=[slug, call.code])).status_code == 404
        assert (
            client.post(reverse("chat_send", args=[slug, chat.code]), {"text": "x"}).status_code
            == 404
        )
    assert client.get(reverse("chats", args=[theirs.organization.slug])).status_code == 404


def test_it_shows_a_connection_tests_outcome_and_stops_polling(
    client: Client, queued: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    membership = as_member(client, Role.ADMIN)
    slug = membership.organization.slug
    connection = make_connection(membership.organization)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("connection_test", args=[slug, connection.code]))
    call = ApiCall.objects.get(connection=connection)
    assert response.status_code == 302 and response["Location"].endswith(f"/calls/{call.code}/")
    url = reverse("call_detail", args=[slug, call.code])
    assert b'hx-trigger="every 1s"' in client.get(url).content
    assert client.get(url, headers={"HX-Request": "true"}).status_code == 200
    ApiCall.objects.filter(pk=call.pk).update(status=CallStatus.SUCCEEDED, reply=" OK")
    done = client.get(url, headers={"HX-Request": "true"})
    assert done.status_code == 286 and b"OK" in done.content
    detail = client.get(reverse("connection_detail", args=[slug, connection.code]))
    assert b"Done" in detail.content


def test_it_never_puts_the_key_in_a_calls_page(client: Client, queued: list[Any]) -> None:
    """(The Content Security Policy of these pages: tests/test_security.py, with the rest.)"""
    membership = as_member(client, Role.ADMIN)
    slug = membership.organization.slug
    connection = make_connection(membership.organization)
    chat = make_chat(connection)
    chats.chat_message_send(chat=chat, text="hello")
    call = chats.connection_test_request(connection=connection)
    urls = [
        reverse("connections", args=[slug]),
        reverse("connection_detail", args=[slug, connection.code]),
        reverse("connection_edit", args=[slug, connection.code]),
        reverse("call_detail", args=[slug, call.code]),
        reverse("chats", args=[slug]),
        reverse("chat_new", args=[slug]),
        reverse("chat_detail", args=[slug, chat.code]),
    ]
    for url in urls:
        for headers in ({}, {"HX-Request": "true"}):
            response = client.get(url, headers=headers)
            assert response.status_code == 200, url
            html = response.content.decode()
            assert SECRET not in html and SECRET[:-4] not in html
            assert connection.api_key_encrypted not in html


def test_it_makes_a_built_in_connection_in_the_demo_on_the_servers_port(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "8123")
    call_command("seed_demo", stdout=io.StringIO())
    organization = Organization.objects.get(slug="demo")
    connection = ProviderConnection.objects.get(organization=organization, name=BUILTIN_NAME)
    assert connection.base_url == "http://127.0.0.1:8123/v1"
    # Its key is an issued endpoint key: it works outside development mode too.
    assert organization.endpoint_keys.get().last4 == connection_api_key(connection)[-4:]
    monkeypatch.setenv("PORT", "9000")
    call_command("seed_demo", stdout=io.StringIO())
    connection.refresh_from_db()
    assert connection.base_url == "http://127.0.0.1:9000/v1"
    assert ProviderConnection.objects.filter(organization=organization).count() == 1
    assert Conversation.objects.filter(organization=organization, source="live").count() == 0


def test_it_keeps_the_admins_navigation_on_every_calls_page(
    client: Client, queued: list[Any]
) -> None:
    """The header's Members link is an admin's on every full page, forms included."""
    membership = as_member(client, Role.ADMIN)
    slug = membership.organization.slug
    connection = make_connection(membership.organization)
    call = chats.connection_test_request(connection=connection)
    members = reverse("members", args=[slug])
    for url in (
        reverse("connections", args=[slug]),
        reverse("connection_new", args=[slug]),
        reverse("connection_edit", args=[slug, connection.code]),
        reverse("call_detail", args=[slug, call.code]),
        reverse("chats", args=[slug]),
        reverse("chat_new", args=[slug]),
        reverse("experiments", args=[slug]),
        reverse("experiment_new", args=[slug]),
    ):
        assert f'href="{members}"' in client.get(url).content.decode(), url


def test_a_poll_that_misses_the_finished_turn_keeps_polling(
    client: Client, queued: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker finishes the call in the moment between the page's reads: the poll that
    read the turns before that commit must not stop polling, or the figures never come."""
    membership = as_member(client, Role.ANALYST)
    chat = make_chat(make_connection(membership.organization))
    chats.chat_message_send(chat=chat, text="Hello there")
    call = ApiCall.objects.get(chat=chat)
    real = conversation_selectors.conversation_turns

    def turns_then_worker_commits(conversation: Conversation) -> Any:
        turns = real(conversation)
        ApiCall.objects.filter(pk=call.pk).update(status=CallStatus.SUCCEEDED)
        return turns

    monkeypatch.setattr(conversation_selectors, "conversation_turns", turns_then_worker_commits)
    url = reverse("chat_detail", args=[membership.organization.slug, chat.code])
    assert client.get(url, headers={"HX-Request": "true"}).status_code == 200
    monkeypatch.setattr(conversation_selectors, "conversation_turns", real)
    assert client.get(url, headers={"HX-Request": "true"}).status_code == 286
