"""Safe by default: no start without a SECRET_KEY outside development mode, a random
development key, `check --deploy` clean in docker/.env.example's production configuration,
and a Content Security Policy with no inline script on every page."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.http import HttpResponseBase
from django.test import Client
from django.urls import URLPattern, URLResolver, reverse

from calls.services.chats import (
    ChatOptions,
    chat_create,
    chat_message_send,
    connection_test_request,
)
from calls.services.connections import ConnectionSettings, connection_create
from calls.services.experiments import experiment_create, variant_parse
from calls.urls import urlpatterns as calls_urlpatterns
from conversations.engine.types import Call, Transcript
from conversations.models import ImportJob, Role
from conversations.services.transcripts import transcripts_store
from conversations.urls import urlpatterns as conversation_urlpatterns
from costlab.settings import dev_secret_key, fernet_key

from .factories import MembershipFactory, UserFactory
from .org_urls import ORG_URLS

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / "docker" / ".env.example"


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def run_python(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Only what the configuration names: none of the test process's COSTLAB_DEV leaks in.
    base = {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


SHOW_SETTINGS = [
    "-c",
    "import os, django; os.environ['DJANGO_SETTINGS_MODULE'] = 'costlab.settings'; "
    "django.setup(); from django.conf import settings as s; "
    "print(s.COSTLAB_DEV, s.SECRET_KEY, s.SECURE_PROXY_SSL_HEADER, s.SESSION_COOKIE_SECURE)",
]
CHECK_DEPLOY = ["manage.py", "check", "--deploy", "--fail-level", "WARNING"]


def test_it_refuses_to_start_without_a_secret_key_outside_development_mode(
    tmp_path: Path,
) -> None:
    result = run_python(SHOW_SETTINGS, {"COSTLAB_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set" in result.stderr
    assert "COSTLAB_DEV=true" in result.stderr  # the message says how to run locally
    # DEBUG alone is not development mode.
    result = run_python(SHOW_SETTINGS, {"COSTLAB_VAR_DIR": str(tmp_path), "DEBUG": "true"})
    assert "SECRET_KEY is not set" in result.stderr


def test_it_generates_one_random_key_per_installation_in_development_mode(
    tmp_path: Path,
) -> None:
    first = run_python(SHOW_SETTINGS, {"COSTLAB_DEV": "true", "COSTLAB_VAR_DIR": str(tmp_path)})
    assert first.returncode == 0, first.stderr
    dev, key, proxy_header, secure_cookies = first.stdout.split()
    assert (dev, proxy_header, secure_cookies) == ("True", "None", "False")
    stored = tmp_path / "secret_key"
    assert key == stored.read_text().strip() and len(key) >= 50
    assert stored.stat().st_mode & 0o777 == 0o600
    # Kept across restarts, different on another installation, and in no source file.
    again = run_python(SHOW_SETTINGS, {"COSTLAB_DEV": "true", "COSTLAB_VAR_DIR": str(tmp_path)})
    assert again.stdout.split()[1] == key
    assert dev_secret_key(tmp_path / "other" / "secret_key") != key
    sources = [p.read_text() for p in (ROOT / "costlab").glob("*.py")]
    assert not any(key in text for text in sources)


def test_it_passes_check_deploy_in_the_production_configuration_of_env_example(
    tmp_path: Path,
) -> None:
    env = env_file(ENV_EXAMPLE)
    assert env["COSTLAB_DEV"] == "false" and env["DEBUG"] == "false"
    # The example leaves the key empty so that a copy cannot start on a published one.
    assert env["SECRET_KEY"] == ""
    assert env["COSTLAB_FERNET_KEYS"] == ""  # nor encrypt provider keys with a published one
    env |= {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "COSTLAB_FERNET_KEYS": fernet_key(),
        "COSTLAB_VAR_DIR": str(tmp_path),
    }
    result = run_python(CHECK_DEPLOY, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    shown = run_python(SHOW_SETTINGS, env).stdout.split()
    assert shown[2:] == ["('HTTP_X_FORWARDED_PROTO',", "'https')", "True"]
    # Without the HTTPS settings the same check fails, naming each of them.
    result = run_python(CHECK_DEPLOY, env | {"COSTLAB_HTTPS": "false"})
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


# The Content Security Policy, page by page.

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


@pytest.fixture
def pages(client: Client) -> dict[str, str]:
    """Every page of the app, filled with real objects; keyed by URL name."""
    membership = MembershipFactory.create(role=Role.ADMIN)  # admins see every page
    MembershipFactory.create(user=membership.user)  # two organizations: home lists them
    org = membership.organization
    hello = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    transcripts_store(
        organization=org,
        transcripts=[
            Transcript(
                messages=hello,
                title="hello",
                model="gpt-4o",
                calls=[Call(request=[0], response=1, model="gpt-4o", started_at=T0)],
            )
        ],
    )
    conversation = org.conversations.get()
    job = ImportJob.objects.create(organization=org, original_name="chats.jsonl")
    connection = connection_create(
        organization=org,
        user=None,
        settings=ConnectionSettings(name="prod", base_url="https://api.example.com/v1"),
        api_key="sk-page-1234",
    )
    chat = chat_create(
        organization=org, user=None, options=ChatOptions(connection=connection, model="gpt-4o")
    )
    chat_message_send(chat=chat, text="hello")  # the chat page polls for the reply
    call = connection_test_request(connection=connection)
    experiment = experiment_create(
        organization=org,
        user=None,
        conversations=[conversation],
        variants=[variant_parse("model=gpt-4o-mini")],
        connection=connection,
    )
    client.force_login(membership.user)
    slug = org.slug
    return {
        "home": reverse("home"),
        "org_overview": reverse("org_overview", args=[slug]),
        "conversation_table": reverse("conversation_table", args=[slug]),
        "conversation_detail": reverse("conversation_detail", args=[slug, conversation.code]),
        "conversation_what_if": reverse("conversation_what_if", args=[slug, conversation.code]),
        "cache_page": reverse("cache_page", args=[slug]),
        "cache_fixes": reverse("cache_fixes", args=[slug]),
        "breakdown_page": reverse("breakdown_page", args=[slug]),
        "imports": reverse("imports", args=[slug]),
        "import_job_detail": reverse("import_job_detail", args=[slug, job.code]),
        "import_job_progress": reverse("import_job_progress", args=[slug, job.code]),
        "members": reverse("members", args=[slug]),
        "connections": reverse("connections", args=[slug]),
        "connection_new": reverse("connection_new", args=[slug]),
        "connection_detail": reverse("connection_detail", args=[slug, connection.code]),
        "connection_edit": reverse("connection_edit", args=[slug, connection.code]),
        "call_detail": reverse("call_detail", args=[slug, call.code]),
        "chats": reverse("chats", args=[slug]),
        "chat_new": reverse("chat_new", args=[slug]),
        "chat_detail": reverse("chat_detail", args=[slug, chat.code]),
        "chat_streaming": reverse("chat_streaming", args=[slug, chat.code]),
        "endpoint_keys": reverse("endpoint_keys", args=[slug]),
        "experiments": reverse("experiments", args=[slug]),
        "experiment_new": reverse("experiment_new", args=[slug]),
        "experiment_detail": reverse("experiment_detail", args=[slug, experiment.code]),
    }


# URLs that only take a POST and answer with a redirect: no page of their own to check.
ACTIONS = {name for name, row in ORG_URLS.items() if "GET" not in row.methods}
# Downloads: no HTML to check, but the policy header all the same (the usage export; the
# CSV of an experiment's turns, whose URL needs an experiment).
DOWNLOADS = {"usage_export", "experiment_csv"}


def url_names(patterns: Sequence[URLPattern | URLResolver]) -> set[str]:
    names: set[str] = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            names |= url_names(pattern.url_patterns)
        elif pattern.name:
            names.add(pattern.name)
    return names


def policy(header: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in header.split(";") if d.strip()}


def assert_strict_policy(response: HttpResponseBase) -> None:
    header = response.headers.get("Content-Security-Policy")
    assert header, f"{response.status_code} response without a Content Security Policy"
    directives = policy(header)
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["style-src"][0] == "'self'"
    # Styles beyond costlab's own are named by hash, never opened wholesale.
    assert all(s.startswith("'sha256-") for s in directives["style-src"][1:])
    assert "unsafe" not in header


def assert_no_inline_code(html: str) -> None:
    for attributes in re.findall(r"<script\b([^>]*)>", html):
        assert "src=" in attributes or 'type="application/json"' in attributes, attributes
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html), "inline event handler"
    assert not re.search(r"<[^>]+\sstyle\s*=", html), "inline style attribute"


@pytest.mark.django_db
def test_it_sends_the_policy_and_no_inline_script_on_every_page(
    client: Client, pages: dict[str, str]
) -> None:
    # A new page must be added to the fixture: this fails until it is.
    assert (
        url_names([*conversation_urlpatterns, *calls_urlpatterns])
        == set(pages) | ACTIONS | DOWNLOADS
    )
    slug = pages["org_overview"].split("/")[2]
    download = client.get(reverse("usage_export", args=[slug]))
    assert download.status_code == 200
    assert_strict_policy(download)
    for name, url in pages.items():
        for headers in ({}, {"HX-Request": "true"}):
            response = client.get(url, headers=headers, follow=False)
            assert response.status_code == 200, (name, response.status_code)
            assert_strict_policy(response)
            assert_no_inline_code(response.content.decode())


@pytest.mark.django_db
def test_it_sends_the_policy_on_log_in_admin_and_error_pages(client: Client) -> None:
    anonymous = [reverse("login"), reverse("admin:login"), "/no-such-page/", reverse("home")]
    for url in anonymous:
        response = client.get(url)
        assert_strict_policy(response)
        if response.status_code == 200:
            assert_no_inline_code(response.content.decode())
    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))
    for url in (reverse("admin:index"), reverse("admin:pricing_modelprice_changelist")):
        response = client.get(url)
        assert response.status_code == 200
        assert_strict_policy(response)
        assert_no_inline_code(response.content.decode())
    assert_strict_policy(client.post(reverse("logout")))


def test_the_containers_serve_the_endpoint_from_one_process() -> None:
    # The built-in endpoint's prompt caches live in the serving process (calls/simulated.py):
    # with several gunicorn processes a repeated prefix would find a cold cache whenever
    # another process took the request, and the reported cached tokens would not be the
    # engine's. Threads share the process's memory.
    commands = [
        " ".join(json.loads(line.removeprefix("CMD ")))
        for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines()
        if line.startswith("CMD ")
    ]
    commands += [
        line.strip()
        for line in (ROOT / "docker" / "compose.yaml").read_text().splitlines()
        if "gunicorn" in line and line.strip().startswith("command:")
    ]
    assert len(commands) == 2
    for command in commands:
        assert "--workers 1 " in command and re.search(r"--threads ([2-9]|\d\d)", command)
