"""The scale and insights benches write their rows by raw SQL, which no model change
updates: a new NOT NULL column without a database default broke both (migration 0016's
responses_api). Their fills run here, small, and what they wrote must read back as the
pages read it (rollups equal to the raw rows)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from django.db import connection

from conversations.models import Organization, UsageRecord
from conversations.services.rollups import organization_drift

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the benches' SQL is PostgreSQL's"
    ),
    pytest.mark.xdist_group("bench_fills"),
]


def bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_scale_bench_fills_two_organizations_whose_rollups_match() -> None:
    scale = bench("scale")
    scale.fill(3000)
    organizations = list(Organization.objects.filter(slug__in=[scale.BIG, scale.SMALL]))
    assert len(organizations) == 2
    billed = UsageRecord.objects.filter(is_billing=True).count()
    assert 2500 <= billed <= 3500
    for organization in organizations:
        assert organization_drift(organization=organization) == []


def test_the_insights_bench_fills_an_organization_whose_rollups_match() -> None:
    insights = bench("insights")
    organization = insights.fill(2000)
    assert UsageRecord.objects.filter(organization=organization).count() > 0
    assert organization_drift(organization=organization) == []
