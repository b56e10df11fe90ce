from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from calls.services.connections import builtin_connection_ensure
from conversations.demo import demo_transcripts
from conversations.models import Membership, Organization, Role
from conversations.services.transcripts import transcripts_store


class Command(BaseCommand):
    help = "Development only: a demo organization, a demo user and demo conversations."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        organization, created = Organization.objects.get_or_create(
            slug="demo", defaults={"name": "Demo organization"}
        )
        user, _ = get_user_model().objects.get_or_create(username="demo")
        # A fresh password each start; printed because this is the local dev mode only.
        # set_password() skips the validators, so ask them: the demo login obeys them too.
        password = secrets.token_urlsafe(12)
        password_validation.validate_password(password, user)
        user.set_password(password)
        # A superuser: the price book lives in Django admin, which only superusers enter.
        user.is_staff = user.is_superuser = True
        user.save()
        Membership.objects.update_or_create(
            user=user, organization=organization, defaults={"role": Role.ADMIN}
        )
        if created or not organization.conversations.exists():
            totals = transcripts_store(
                organization=organization, transcripts=demo_transcripts(timezone.now())
            )
            self.stdout.write(
                f"Demo data: {totals.conversations} conversations, {totals.turns} turns."
            )
        # Live chat works at once: a connection to costlab's own endpoint on this server.
        port = int(os.getenv("PORT", "8000"))
        connection = builtin_connection_ensure(organization=organization, port=port)
        self.stdout.write(f"Connection {connection.name!r}: {connection.base_url}")
        self.stdout.write(self.style.SUCCESS(f"Log in as demo / {password}"))
