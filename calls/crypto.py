"""Provider API keys encrypted at rest (design.md 2.9) with Fernet (AES-128-CBC + HMAC).

settings.COSTLAB_FERNET_KEYS lists the deployment's keys: the first encrypts, every one
decrypts, so a new key is put first, the stored secrets are re-encrypted with it
(`manage.py rotate_connection_keys`), then the old one is dropped (README, "Calling models").
Plain keys exist only in memory, for the call that needs them.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretUnreadable(Exception):
    """A stored secret no configured key can decrypt (a key was dropped too early)."""


def _fernet() -> MultiFernet:
    keys = settings.COSTLAB_FERNET_KEYS
    if not keys:
        raise ImproperlyConfigured("COSTLAB_FERNET_KEYS is empty")
    # Built per use, not cached: settings overrides (tests) and rotation take effect at once.
    return MultiFernet([Fernet(key.encode()) for key in keys])


def secret_encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def secret_decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("no key in COSTLAB_FERNET_KEYS decrypts this secret") from None


def secret_rotate(token: str) -> str:
    """The same secret encrypted with the first key (a no-op apart from a new token when it
    already was)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("no key in COSTLAB_FERNET_KEYS decrypts this secret") from None
