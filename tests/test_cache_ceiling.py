"""UsageRecord.cache_ceiling: what breakdowns.CACHEABLE reads instead of joining Turn. The
write path (services/usage.py) and migration 0020's backfill from the turns agree."""

from __future__ import annotations

import importlib
import random
from datetime import timedelta

import pytest
from django.db import connection

from conversations.models import UsageRecord
from conversations.services.transcripts import transcripts_store

from .factories import OrganizationFactory
from .test_cache_page import STATIC, T0, conversation
from .test_rollups import _transcripts

pytestmark = pytest.mark.django_db

migration = importlib.import_module("conversations.migrations.0020_usage_cache_ceiling")


def test_the_backfill_gives_every_record_the_ceiling_its_writer_gave() -> None:
    organization = OrganizationFactory.create()
    # Expired and below-minimum calls, hits and misses; then cold misses under another key.
    transcripts_store(organization=organization, transcripts=_transcripts(random.Random(3), 30))
    keys = ["a", "b", None]
    transcripts_store(
        organization=organization,
        transcripts=[
            conversation(STATIC, T0 + timedelta(days=30, seconds=5 * n), key=key, n=n)
            for n, key in enumerate(keys)
        ],
    )
    written = dict(UsageRecord.objects.values_list("pk", "cache_ceiling"))
    reasons = set(UsageRecord.objects.values_list("turn__miss_reason", flat=True))
    assert {"expired", "cold", "", "below_minimum"} <= reasons
    assert None in written.values() and any(v for v in written.values())
    assert UsageRecord.objects.filter(
        turn__miss_reason="cold", cache_ceiling__isnull=True
    ).exists()  # cached under another key: avoidable

    UsageRecord.objects.update(cache_ceiling=987654)
    with connection.cursor() as cursor:  # as schema_editor.execute runs it: with params
        cursor.execute(migration.BACKFILL, [])

    assert dict(UsageRecord.objects.values_list("pk", "cache_ceiling")) == written
