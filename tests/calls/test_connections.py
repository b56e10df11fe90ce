"""Provider connections: org admins manage them on the app's pages; keys are encrypted at
rest, shown by their last four characters only, never logged nor sent to a task; the
deployment's Fernet keys rotate."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from pytest_django import Settings

from calls.crypto import SecretUnreadable
from calls.models import ProviderConnection, RateBudget
from calls.services.connections import (
    ConnectionSettings,
    connection_api_key,
    connection_create,
    connection_keys_rotate,
)
from conversations.models import Membership, Role
from costlab import jobs
from costlab.settings import dev_secret_key, fernet_key
from tests.factories import MembershipFactory, OrganizationFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent.parent
SECRET = "sk-proj-THIS-IS-THE-SECRET-abcd1234wxyz"


def form_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "OpenAI prod",
        "base_url": "https://api.openai.com/v1/",
        "api_key": SECRET,
        "default_model": "gpt-4o-mini",
        "openai_organization": "org-123",
        "openai_project": "",
        "rpm_limit": "500",
        "tpm_limit": "200000",
        "monthly_spend_cap": "250.00",
        "extra_headers": "",
    }
    return data | overrides


@pytest.fixture
def admin(client: Client) -> Membership:
    membership = MembershipFactory.create(role=Role.ADMIN)
    client.force_login(membership.user)
    return membership


def make_connection(membership: Membership, key: str = SECRET) -> ProviderConnection:
    settings = ConnectionSettings(name="prod", base_url="https://api.openai.com/v1")
    return connection_create(
        organization=membership.organization, user=None, settings=settings, api_key=key
    )


def test_it_creates_a_connection_with_its_key_encrypted(client: Client, admin: Membership) -> None:
    slug = admin.organization.slug
    response = client.post(reverse("connection_new", args=[slug]), form_data())
    assert response.status_code == 302
    connection = ProviderConnection.objects.get(organization=admin.organization)
    assert connection.base_url == "https://api.openai.com/v1"
    assert (connection.rpm_limit, connection.tpm_limit) == (500, 200_000)
    assert connection.monthly_spend_cap == Decimal("250.00")
    assert SECRET not in connection.api_key_encrypted
    assert connection.api_key_last4 == "wxyz"
    assert connection_api_key(connection) == SECRET
    # The budget starts full: a minute's requests and tokens.
    budget = RateBudget.objects.get(connection=connection)
    assert (budget.requests, budget.tokens) == (500.0, 200_000.0)


def test_it_never_renders_the_key_back(client: Client, admin: Membership) -> None:
    slug = admin.organization.slug
    connection = make_connection(admin)
    pages = [
        reverse("connections", args=[slug]),
        reverse("connection_detail", args=[slug, connection.code]),
        reverse("connection_edit", args=[slug, connection.code]),
    ]
    for url in pages:
        html = client.get(url).content.decode()
        assert SECRET not in html and SECRET[:-4] not in html, url
        assert connection.api_key_encrypted not in html
        assert "…wxyz" in html or "wxyz" in html
    # A form sent back with an error keeps the key field empty.
    bad = client.post(reverse("connection_new", args=[slug]), form_data(base_url="ftp://x"))
    assert bad.status_code == 400
    assert SECRET not in bad.content.decode()
    # ... and says so, where the key field is: the key typed is not lost without a word.
    assert "Not shown back: type the key again." in bad.content.decode()


def test_it_keeps_the_key_when_the_edit_leaves_it_empty_and_replaces_it_otherwise(
    client: Client, admin: Membership
) -> None:
    slug = admin.organization.slug
    connection = make_connection(admin)
    url = reverse("connection_edit", args=[slug, connection.code])
    assert client.post(url, form_data(api_key="", name="renamed")).status_code == 302
    connection.refresh_from_db()
    assert connection.name == "renamed" and connection_api_key(connection) == SECRET
    assert client.post(url, form_data(api_key="sk-new-key-9876")).status_code == 302
    connection.refresh_from_db()
    assert connection_api_key(connection) == "sk-new-key-9876"
    assert connection.api_key_last4 == "9876"


def test_it_lets_only_admins_manage_connections(client: Client) -> None:
    analyst = MembershipFactory.create(role=Role.ANALYST)
    client.force_login(analyst.user)
    slug = analyst.organization.slug
    connection = make_connection(analyst)
    code = connection.code
    assert client.get(reverse("connections", args=[slug])).status_code == 200
    assert client.get(reverse("connection_new", args=[slug])).status_code == 403
    assert client.post(reverse("connection_new", args=[slug]), form_data()).status_code == 403
    assert (
        client.post(reverse("connection_edit", args=[slug, code]), form_data()).status_code == 403
    )
    assert client.post(reverse("connection_delete", args=[slug, code])).status_code == 403
    assert client.post(reverse("connection_test", args=[slug, code])).status_code == 403
    assert ProviderConnection.objects.filter(pk=connection.pk).exists()
    assert b"New connection" not in client.get(reverse("connections", args=[slug])).content


def test_it_hides_other_organizations_connections(client: Client, admin: Membership) -> None:
    theirs = make_connection(MembershipFactory.create(role=Role.ADMIN))
    mine = admin.organization.slug
    other = theirs.organization.slug
    for slug in (mine, other):  # their code behind my slug, and their slug
        for name in ("connection_detail", "connection_edit"):
            assert client.get(reverse(name, args=[slug, theirs.code])).status_code == 404
        for name in ("connection_delete", "connection_test"):
            assert client.post(reverse(name, args=[slug, theirs.code])).status_code == 404
    assert client.get(reverse("connections", args=[other])).status_code == 404
    assert ProviderConnection.objects.filter(pk=theirs.pk).exists()


def test_it_deletes_a_connection(client: Client, admin: Membership) -> None:
    connection = make_connection(admin)
    url = reverse("connection_delete", args=[admin.organization.slug, connection.code])
    assert client.post(url).status_code == 302
    assert not ProviderConnection.objects.filter(pk=connection.pk).exists()


def test_it_sends_only_the_calls_id_to_the_worker(
    client: Client,
    admin: Membership,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sent: list[tuple[str, tuple[object, ...]]] = []
    monkeypatch.setattr(jobs, "enqueue", lambda name, *args: sent.append((name, args)))
    connection = make_connection(admin)
    url = reverse("connection_test", args=[admin.organization.slug, connection.code])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url)
    assert response.status_code == 302
    call = connection.calls.get()
    assert sent == [(jobs.CALL_RUN, (call.pk,))]


def test_it_never_logs_the_key(
    admin: Membership, caplog: pytest.LogCaptureFixture, settings: Settings
) -> None:
    """A call that fails (nothing listens there) goes through every layer that logs:
    the SDK, its HTTP client, the call service. None of them prints the key."""
    from calls.services import chats

    settings.COSTLAB_CALL_MAX_ATTEMPTS = 2
    settings.COSTLAB_CALL_BACKOFF_SECONDS = 0.01
    caplog.set_level(logging.DEBUG)
    connection = make_connection(admin)
    connection.base_url = "http://127.0.0.1:9/v1"  # the discard port: refused
    connection.save()
    call = chats.connection_test_request(connection=connection)
    chats.api_call_run(call.pk)
    call.refresh_from_db()
    assert call.status == "failed" and call.attempt_count == 2
    assert caplog.records, "the layers logged nothing: the check would prove nothing"
    assert SECRET not in caplog.text
    assert SECRET not in call.error and not any(SECRET in a.error for a in call.attempts.all())
    # Where the connection went and the system's reason, not the SDK's bare "Connection error."
    assert "connection failed to http://127.0.0.1:9: " in call.error
    assert "refused" in call.error.lower()


def test_it_rotates_the_encryption_keys(admin: Membership, settings: Settings) -> None:
    old, new = fernet_key(), fernet_key()
    settings.COSTLAB_FERNET_KEYS = [old]
    connection = make_connection(admin)
    token_before = connection.api_key_encrypted
    # Step 1: the new key goes first; both decrypt, the new one encrypts.
    settings.COSTLAB_FERNET_KEYS = [new, old]
    assert connection_api_key(connection) == SECRET
    # Step 2: re-encrypt every stored key with the new one.
    call_command("rotate_connection_keys", stdout=io.StringIO())
    connection.refresh_from_db()
    assert connection.api_key_encrypted != token_before
    assert Fernet(new.encode()).decrypt(connection.api_key_encrypted.encode()).decode() == SECRET
    # Step 3: the old key is dropped, and everything still decrypts.
    settings.COSTLAB_FERNET_KEYS = [new]
    assert connection_api_key(connection) == SECRET
    # Dropped before step 2, the old key would have left the secret unreadable.
    settings.COSTLAB_FERNET_KEYS = [old]
    with pytest.raises(SecretUnreadable):
        connection_api_key(connection)
    # A re-run with the keys in place re-encrypts again, harmlessly.
    settings.COSTLAB_FERNET_KEYS = [new]
    assert connection_keys_rotate() == 1
    assert connection_api_key(connection) == SECRET


def run_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    show = (
        "import os, django; os.environ['DJANGO_SETTINGS_MODULE'] = 'costlab.settings'; "
        "django.setup(); from django.conf import settings as s; print(s.COSTLAB_FERNET_KEYS[0])"
    )
    base = {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", show],
        cwd=ROOT,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_needs_fernet_keys_outside_development_mode_and_makes_one_in_it(
    tmp_path: Path,
) -> None:
    refused = run_settings({"SECRET_KEY": "x" * 50, "COSTLAB_VAR_DIR": str(tmp_path)})
    assert refused.returncode != 0
    assert "COSTLAB_FERNET_KEYS is not set" in refused.stderr
    given = fernet_key()
    env = {"SECRET_KEY": "x" * 50, "COSTLAB_VAR_DIR": str(tmp_path)}
    assert run_settings(env | {"COSTLAB_FERNET_KEYS": f" {given} ,"}).stdout.strip() == given
    # Development mode: one key generated under var/, the same at every start.
    dev = {"COSTLAB_DEV": "true", "COSTLAB_VAR_DIR": str(tmp_path)}
    first = run_settings(dev).stdout.strip()
    assert first and run_settings(dev).stdout.strip() == first
    assert (tmp_path / "fernet_key").read_text().strip() == first
    Fernet(first.encode())  # a valid Fernet key
    assert dev_secret_key(tmp_path / "other", fernet_key) != first


def test_it_refuses_a_second_connection_of_the_same_name(client: Client, admin: Membership) -> None:
    make_connection(admin)
    response = client.post(
        reverse("connection_new", args=[admin.organization.slug]), form_data(name="prod")
    )
    assert response.status_code == 400
    assert ProviderConnection.objects.filter(organization=admin.organization).count() == 1


def test_it_lets_two_organizations_use_the_same_name() -> None:
    for _ in range(2):
        make_connection(MembershipFactory.create(organization=OrganizationFactory.create()))
    assert ProviderConnection.objects.filter(name="prod").count() == 2
