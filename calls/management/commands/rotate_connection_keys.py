from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from calls.services.connections import connection_keys_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every provider API key with the first key of COSTLAB_FERNET_KEYS. Run it "
        "after putting a new key first; then the old keys can be dropped (README)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        count = connection_keys_rotate()
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {count} connection key(s)."))
