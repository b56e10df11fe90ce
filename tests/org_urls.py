"""Every URL of costlab, and how to fill it with one organization's objects: the table the
tenancy test (tests/test_tenancy.py) walks. It fails on a URL that is not in it.

Adding a URL: add a row to ORG_URLS (or, for a URL outside any organization, to
OUTSIDE_ORGS with the reason). If it names a kind of object no row names yet (a provider
connection, an experiment...), add a field to World and create one in world_build().
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile

from calls.models import ApiCall, Chat, EndpointKey, Experiment, ProviderConnection
from calls.services.chats import ChatOptions, chat_create, connection_test_request
from calls.services.connections import (
    ConnectionSettings,
    connection_create,
    endpoint_key_issue,
)
from calls.services.experiments import experiment_create, variant_parse
from conversations.engine.types import Call, Transcript
from conversations.models import Conversation, ImportJob, Membership, Organization, Role
from conversations.services.transcripts import transcripts_store

from .factories import MembershipFactory, UserFactory


@dataclass(frozen=True)
class World:
    """One organization's objects, one of each kind a URL can name."""

    organization: Organization
    conversation: Conversation
    job: ImportJob
    member: Membership  # someone to change or remove (never the requester)
    connection: ProviderConnection
    chat: Chat
    call: ApiCall  # a connection test
    endpoint_key: EndpointKey
    experiment: Experiment  # a draft: starting it would need a worker


def world_build(organization: Organization) -> World:
    hello = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    call = Call(
        request=[0], response=1, model="gpt-4o", started_at=datetime(2026, 11, 2, tzinfo=UTC)
    )
    transcripts_store(
        organization=organization,
        transcripts=[Transcript(messages=hello, title="hello", model="gpt-4o", calls=[call])],
    )
    connection = connection_create(
        organization=organization,
        user=None,
        settings=ConnectionSettings(name="prod", base_url="https://api.example.com/v1"),
        api_key="sk-world-1234",
    )
    conversation = Conversation.objects.filter(organization=organization).latest("id")
    return World(
        organization=organization,
        connection=connection,
        experiment=experiment_create(
            organization=organization,
            user=None,
            conversations=[conversation],
            variants=[variant_parse("model=gpt-4o-mini")],
            connection=connection,
        ),
        chat=chat_create(
            organization=organization,
            user=None,
            options=ChatOptions(connection=connection, model="gpt-4o"),
        ),
        call=connection_test_request(connection=connection),
        endpoint_key=endpoint_key_issue(organization=organization, name="ci")[0],
        conversation=conversation,
        job=ImportJob.objects.create(organization=organization, original_name="chats.jsonl"),
        member=MembershipFactory.create(organization=organization, role=Role.VIEWER),
    )


ALL = frozenset(Role)
EDITORS = frozenset({Role.ANALYST, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})


def slug(w: World) -> dict[str, object]:
    return {"slug": w.organization.slug}


def conversation(w: World) -> dict[str, object]:
    return {"slug": w.organization.slug, "code": w.conversation.code}


def job(w: World) -> dict[str, object]:
    return {"slug": w.organization.slug, "code": w.job.code}


def member(w: World) -> dict[str, object]:
    return {"slug": w.organization.slug, "code": w.member.code}


def connection(w: World) -> dict[str, object]:
    return {"slug": w.organization.slug, "code": w.connection.code}


def chat(w: World) -> dict[str, object]:
    return {"slug": w.organization.slug, "code": w.chat.code}


def api_call(w: World) -> dict[str, object]:
    return {"slug": w.organization.slug, "code": w.call.code}


def endpoint_key(w: World) -> dict[str, object]:
    return {"slug": w.organization.slug, "code": w.endpoint_key.code}


def experiment(w: World) -> dict[str, object]:
    return {"slug": w.organization.slug, "code": w.experiment.code}


def nothing(w: World) -> dict[str, object]:
    return {}


@dataclass(frozen=True)
class OrgUrl:
    """A URL inside an organization: its arguments, and per method the roles that may use
    it in their own organization (other roles get 403, methods not listed 405). `data` is
    a body that would do something, so that a view missing its checks would be caught."""

    fill: Callable[[World], dict[str, object]]
    methods: dict[str, frozenset[Role]]
    data: Callable[[World], dict[str, object]] = field(default=nothing)


def upload(w: World) -> dict[str, object]:
    body = Path(__file__).parent / "fixtures" / "chat_small.json"
    return {"file": SimpleUploadedFile("chat_small.json", body.read_bytes())}


def invite(w: World) -> dict[str, object]:
    return {"identifier": UserFactory.create().username, "role": Role.ADMIN}


def connection_form(w: World) -> dict[str, object]:
    return {"name": "other", "base_url": "https://x.example/v1", "api_key": "sk-new-0000"}


def chat_form(w: World) -> dict[str, object]:
    return {"connection": w.connection.pk, "model": "gpt-4o", "stream": "on"}


def experiment_form(w: World) -> dict[str, object]:
    return {
        "conversations": [str(w.conversation.code)],
        "variants": "model=gpt-4o-mini",
        "connection": w.connection.pk,
        "history_mode": "recorded",
    }


READ = {"GET": ALL}

ORG_URLS: dict[str, OrgUrl] = {
    "org_overview": OrgUrl(slug, READ),
    "conversation_table": OrgUrl(slug, READ),
    "conversation_detail": OrgUrl(conversation, READ),
    "conversation_what_if": OrgUrl(conversation, READ),
    "conversation_delete": OrgUrl(conversation, {"POST": EDITORS}),
    "conversation_tags": OrgUrl(
        conversation, {"POST": EDITORS}, data=lambda w: {"tags": "team=search"}
    ),
    "cache_page": OrgUrl(slug, READ),
    "cache_fixes": OrgUrl(slug, READ),
    "breakdown_page": OrgUrl(slug, READ),
    "usage_export": OrgUrl(slug, READ),
    "imports": OrgUrl(slug, {"GET": ALL, "POST": EDITORS}, data=upload),
    "import_job_detail": OrgUrl(job, READ),
    "import_job_progress": OrgUrl(job, READ),
    "members": OrgUrl(slug, {"GET": ADMINS, "POST": ADMINS}, data=invite),
    "member_role": OrgUrl(member, {"POST": ADMINS}, data=lambda w: {"role": Role.ADMIN}),
    "member_remove": OrgUrl(member, {"POST": ADMINS}),
    "organization_delete": OrgUrl(
        slug, {"POST": ADMINS}, data=lambda w: {"confirm": w.organization.slug}
    ),
    "connections": OrgUrl(slug, READ),
    "connection_new": OrgUrl(slug, {"GET": ADMINS, "POST": ADMINS}, data=connection_form),
    "connection_detail": OrgUrl(connection, READ),
    "connection_edit": OrgUrl(connection, {"GET": ADMINS, "POST": ADMINS}, data=connection_form),
    "connection_delete": OrgUrl(connection, {"POST": ADMINS}),
    "connection_test": OrgUrl(connection, {"POST": ADMINS}),
    "call_detail": OrgUrl(api_call, READ),
    "chats": OrgUrl(slug, READ),
    "chat_new": OrgUrl(slug, {"GET": EDITORS, "POST": EDITORS}, data=chat_form),
    "chat_detail": OrgUrl(chat, READ),
    "chat_streaming": OrgUrl(chat, READ),
    "chat_send": OrgUrl(chat, {"POST": EDITORS}, data=lambda w: {"text": "hello"}),
    "endpoint_keys": OrgUrl(
        slug, {"GET": ADMINS, "POST": ADMINS}, data=lambda w: {"name": "theirs"}
    ),
    "endpoint_key_revoke": OrgUrl(endpoint_key, {"POST": ADMINS}),
    "experiments": OrgUrl(slug, READ),
    "experiment_new": OrgUrl(slug, {"GET": EDITORS, "POST": EDITORS}, data=experiment_form),
    "experiment_detail": OrgUrl(experiment, READ),
    "experiment_start": OrgUrl(experiment, {"POST": EDITORS}, data=lambda w: {"confirm": "on"}),
    "experiment_cancel": OrgUrl(experiment, {"POST": EDITORS}),
    "experiment_csv": OrgUrl(experiment, READ),
}

# URLs outside any organization, by name (a namespace ends in ':'), and why.
OUTSIDE_ORGS: dict[str, str] = {
    "home": "lists the user's own organizations only",
    "login": "anonymous",
    "logout": "the user's own session",
    "admin:": "Django admin: superusers only (tests/test_accounts.py)",
    "endpoint_chat_completions": "costlab's own OpenAI-compatible API: a bearer key is its "
    "own simulated organization, no costlab data is read (tests/calls/test_endpoint.py)",
    "endpoint_models": "the same API's model list: the price book's names",
}
