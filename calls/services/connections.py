"""Provider connections: create, edit, delete, re-encrypt keys; costlab's own endpoint keys.

A connection's API key is encrypted before it touches the database and decrypted only by
`connection_api_key`, for the call that needs it; no function here logs or returns it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from decimal import Decimal

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from conversations.models import Organization

from ..crypto import secret_decrypt, secret_encrypt, secret_rotate
from ..models import EndpointKey, ProviderConnection, RateBudget, key_digest
from ..selectors import endpoint_callers_forget

BUILTIN_NAME = "built-in"
ENDPOINT_KEY_PREFIX = "clk-"


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything about a connection but its key."""

    name: str
    base_url: str
    default_model: str = ""
    openai_organization: str = ""
    openai_project: str = ""
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    monthly_spend_cap: Decimal | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def apply(self, connection: ProviderConnection) -> None:
        connection.name = self.name
        connection.base_url = self.base_url.rstrip("/")
        connection.default_model = self.default_model
        connection.openai_organization = self.openai_organization
        connection.openai_project = self.openai_project
        connection.rpm_limit = self.rpm_limit
        connection.tpm_limit = self.tpm_limit
        connection.monthly_spend_cap = self.monthly_spend_cap
        connection.extra_headers = dict(self.extra_headers)


def _set_key(connection: ProviderConnection, api_key: str) -> None:
    connection.api_key_encrypted = secret_encrypt(api_key)
    connection.api_key_last4 = api_key[-4:]


def _budget_reset(connection: ProviderConnection) -> None:
    """Full buckets: a new or re-limited connection may spend its first minute at once."""
    RateBudget.objects.update_or_create(
        connection=connection,
        defaults={
            "requests": float(connection.rpm_limit or 0),
            "tokens": float(connection.tpm_limit or 0),
            "refreshed": timezone.now(),
        },
    )


@transaction.atomic
def connection_create(
    *,
    organization: Organization,
    user: AbstractBaseUser | None,
    settings: ConnectionSettings,
    api_key: str,
) -> ProviderConnection:
    connection = ProviderConnection(
        organization=organization, created_by_id=user.pk if user is not None else None
    )
    settings.apply(connection)
    _set_key(connection, api_key)
    connection.full_clean(exclude=["created_by"])
    connection.save()
    _budget_reset(connection)
    return connection


@transaction.atomic
def connection_update(
    *, connection: ProviderConnection, settings: ConnectionSettings, api_key: str = ""
) -> ProviderConnection:
    """New settings; a new key only when one is given (an empty field keeps the old)."""
    limits = (connection.rpm_limit, connection.tpm_limit)
    settings.apply(connection)
    if api_key:
        _set_key(connection, api_key)
    connection.updated = timezone.now()
    connection.full_clean(exclude=["created_by"])
    connection.save()
    if (connection.rpm_limit, connection.tpm_limit) != limits:
        _budget_reset(connection)
    return connection


def connection_delete(*, connection: ProviderConnection) -> None:
    """Its chats and calls stay (their connection becomes empty): they are spend history."""
    connection.delete()


def connection_api_key(connection: ProviderConnection) -> str:
    """The plain key, for the call service only: keep it in a local, never log it."""
    return secret_decrypt(connection.api_key_encrypted)


def connection_keys_rotate() -> int:
    """Re-encrypt every stored key with the first of COSTLAB_FERNET_KEYS (rotation step 2:
    README, "Calling models"). Returns how many were re-encrypted."""
    count = 0
    with transaction.atomic():
        for connection in ProviderConnection.objects.select_for_update().only(
            "pk", "api_key_encrypted"
        ):
            connection.api_key_encrypted = secret_rotate(connection.api_key_encrypted)
            connection.save(update_fields=["api_key_encrypted"])
            count += 1
    return count


def endpoint_key_issue(
    *, organization: Organization, name: str = "", user: AbstractBaseUser | None = None
) -> tuple[EndpointKey, str]:
    """A new key for costlab's own endpoint; the plain key is returned once, never stored."""
    plain = ENDPOINT_KEY_PREFIX + secrets.token_urlsafe(32)
    key = EndpointKey.objects.create(
        organization=organization,
        name=name,
        key_hash=key_digest(plain),
        last4=plain[-4:],
        created_by_id=user.pk if user is not None else None,
    )
    endpoint_callers_forget()  # a development-mode caller of this key had no organization
    return key, plain


def endpoint_key_revoke(*, key: EndpointKey) -> None:
    EndpointKey.objects.filter(pk=key.pk, revoked__isnull=True).update(revoked=timezone.now())
    endpoint_callers_forget()  # other processes let it go within KEY_CACHE_SECONDS


def builtin_connection_ensure(*, organization: Organization, port: int) -> ProviderConnection:
    """The connection named `built-in`, to costlab's own endpoint on this server's port, so
    a new user can call a model at once. Its key is an issued endpoint key; on a later run
    only the address follows the port."""
    base_url = f"http://127.0.0.1:{port}/v1"
    connection = ProviderConnection.objects.filter(
        organization=organization, name=BUILTIN_NAME
    ).first()
    if connection is not None:
        if connection.base_url != base_url:
            connection.base_url = base_url
            connection.updated = timezone.now()
            connection.save(update_fields=["base_url", "updated"])
        return connection
    _, plain = endpoint_key_issue(organization=organization, name=BUILTIN_NAME)
    settings = ConnectionSettings(name=BUILTIN_NAME, base_url=base_url, default_model="gpt-4o-mini")
    return connection_create(organization=organization, user=None, settings=settings, api_key=plain)
