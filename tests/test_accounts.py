"""Accounts: log-in throttling, the standard password validators, an admin for superusers
only, and a demo login that obeys the validators."""

from __future__ import annotations

import io
import re
import uuid
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth import password_validation
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client, RequestFactory
from django.urls import reverse
from pytest_django import Settings

from costlab import throttle
from costlab.security import client_address

from .factories import UserFactory

if TYPE_CHECKING:
    # What the test client returns, as django-stubs names it (a stub-only class).
    from django.test.client import _MonkeyPatchedWSGIResponse

pytestmark = pytest.mark.django_db
PASSWORD = "pw-123456"  # the factories' password
WINDOW = 900
REFUSED = "Too many failed log-in attempts"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> dict[str, float]:
    """The throttle's clock, moved by hand; counters live in the real cache (Redis in CI)."""
    settings.COSTLAB_LOGIN_WINDOW_SECONDS = WINDOW
    settings.COSTLAB_LOGIN_FAILURES_PER_USER = 5
    settings.COSTLAB_LOGIN_FAILURES_PER_ADDRESS = 20
    moment = {"now": 1_900_000_000.0}
    monkeypatch.setattr(throttle, "now", lambda: moment["now"])
    return moment


def fresh_address() -> str:
    # Every run gets addresses (and usernames) no earlier run has counted failures for.
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


def log_in(
    client: Client, username: str, password: str, address: str, url: str = ""
) -> _MonkeyPatchedWSGIResponse:
    return client.post(
        url or reverse("login"),
        {"username": username, "password": password},
        REMOTE_ADDR=address,
    )


def test_it_refuses_the_tenth_bad_password_and_accepts_a_good_one_after_the_window(
    client: Client, clock: dict[str, float]
) -> None:
    user = UserFactory.create(username=f"alice-{uuid.uuid4().hex[:8]}")
    address = fresh_address()
    answers = [log_in(client, user.username, f"guess-{i}", address) for i in range(10)]
    for answer in answers:
        assert answer.status_code == 200  # the form again, never a session
    texts = [a.content.decode() for a in answers]
    assert all(REFUSED not in t and "correct username and password" in t for t in texts[:5])
    assert REFUSED in texts[9]
    # Locked for one to two windows: the five failures leave the count a window after the
    # window they fell in.
    retry = re.search(r"Try again in (\d+) minutes\.", texts[9])
    assert retry, texts[9]
    wait = int(retry[1])
    assert WINDOW / 60 <= wait <= 2 * WINDOW / 60
    # While locked, even the right password is not checked, from any address.
    assert REFUSED in log_in(client, user.username, PASSWORD, address).content.decode()
    assert REFUSED in log_in(client, user.username, PASSWORD, fresh_address()).content.decode()
    assert "_auth_user_id" not in client.session

    clock["now"] += 2 * WINDOW
    accepted = log_in(client, user.username, PASSWORD, address)
    assert accepted.status_code == 302 and accepted["Location"] == reverse("home")
    assert client.session["_auth_user_id"] == str(user.pk)


def test_it_counts_failures_per_address_across_usernames(
    client: Client, clock: dict[str, float]
) -> None:
    address = fresh_address()
    for i in range(20):  # four usernames, each under its own limit
        log_in(client, f"nobody-{i % 4}-{uuid.uuid4().hex[:6]}", "wrong", address)
    user = UserFactory.create(username=f"bob-{uuid.uuid4().hex[:8]}")
    assert REFUSED in log_in(client, user.username, PASSWORD, address).content.decode()
    # The same account from elsewhere is fine: the lock is on the address.
    assert log_in(client, user.username, PASSWORD, fresh_address()).status_code == 302


def test_it_keeps_the_address_count_after_a_good_log_in_and_clears_the_user_count(
    client: Client, clock: dict[str, float]
) -> None:
    user = UserFactory.create(username=f"carol-{uuid.uuid4().hex[:8]}")
    address = fresh_address()
    for _ in range(4):
        log_in(client, user.username, "wrong", address)
    assert log_in(client, user.username, PASSWORD, address).status_code == 302
    client.logout()
    # The user's four failures were forgiven by the good password: four more are allowed.
    for _ in range(4):
        assert REFUSED not in log_in(client, user.username, "wrong", address).content.decode()
    assert log_in(client, user.username, PASSWORD, address).status_code == 302


def test_it_throttles_the_admin_log_in_too(client: Client, clock: dict[str, float]) -> None:
    user = UserFactory.create(
        username=f"root-{uuid.uuid4().hex[:8]}", is_staff=True, is_superuser=True
    )
    address = fresh_address()
    admin_login = reverse("admin:login")
    for _ in range(5):
        log_in(client, user.username, "wrong", address, admin_login)
    refused = log_in(client, user.username, PASSWORD, address, admin_login)
    assert REFUSED in refused.content.decode() and "_auth_user_id" not in client.session


def test_it_takes_the_client_address_from_the_proxies_it_is_told_about(settings: Settings) -> None:
    request = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9"
    )
    settings.COSTLAB_PROXY_COUNT = 0
    assert client_address(request) == "10.0.0.2"
    settings.COSTLAB_PROXY_COUNT = 1  # the proxy appended the real client; 6.6.6.6 is forged
    assert client_address(request) == "203.0.113.9"


@pytest.mark.parametrize(
    "password, code",
    [
        ("password", "password_too_common"),
        ("short1!", "password_too_short"),
        ("4815162342", "password_entirely_numeric"),
        ("dora-explorer", "password_too_similar"),
    ],
)
def test_it_refuses_weak_passwords(password: str, code: str) -> None:
    user = UserFactory.build(username="dora-explorer", email="dora@example.com")
    with pytest.raises(ValidationError) as refused:
        password_validation.validate_password(password, user)
    assert code in [e.code for e in refused.value.error_list]


def refusals(password: str, user: User) -> list[str | None]:
    """The codes of the validators that refuse the password; none when all accept it."""
    try:
        password_validation.validate_password(password, user)
    except ValidationError as refused:
        return [e.code for e in refused.error_list]
    return []


def test_it_accepts_a_strong_password() -> None:
    user = UserFactory.build(username="dora-explorer")
    assert refusals("violet-tram-ledger-91", user) == []


def test_it_lets_only_superusers_into_the_admin(client: Client) -> None:
    staff = UserFactory.create(is_staff=True)
    staff.user_permissions.set(Permission.objects.all())  # may view and change everything
    client.force_login(staff)
    for url in (reverse("admin:index"), reverse("admin:conversations_conversation_changelist")):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(
            reverse("admin:login")
        )
    client.logout()
    answer = log_in(client, staff.username, PASSWORD, fresh_address(), reverse("admin:login"))
    assert "site operators (superusers) only" in answer.content.decode()

    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))
    assert client.get(reverse("admin:conversations_conversation_changelist")).status_code == 200


def test_it_gives_the_demo_user_a_password_the_validators_accept(
    django_user_model: type[User],
) -> None:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    shown = re.search(r"Log in as demo / (\S+)", out.getvalue())
    assert shown, out.getvalue()
    password = shown[1]
    demo = django_user_model.objects.get(username="demo")
    assert demo.check_password(password) and demo.is_superuser
    assert refusals(password, demo) == []
