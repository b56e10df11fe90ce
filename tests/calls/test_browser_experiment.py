"""An experiment in a real headless Chromium: started from the overview's filtered
conversations, predicted, started, its progress polled until a real worker has replayed
every turn through costlab's own endpoint, then its results and per-turn chart."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from pytest_django.live_server_helper import LiveServer

from calls import selectors, simulated
from calls.models import Experiment, ExperimentStatus
from calls.services.connections import ConnectionSettings, connection_create
from conversations.engine.vocabulary import get_encoding
from conversations.models import Role
from tests.calls.test_experiments_worker import conversations_stored
from tests.conftest import Worker
from tests.factories import MembershipFactory
from tests.test_browser import (  # noqa: F401 - fixtures, registered by import
    Tab,
    allow_async_unsafe,
    browser,
    log_in,
    price_book,
    tab,
    wait_for_charts,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def test_an_experiment_from_the_overview_runs_and_shows_its_results(
    tab: Tab,  # noqa: F811
    live_server: LiveServer,
    worker: Worker,
    allow_async_unsafe: None,  # noqa: F811
) -> None:
    get_encoding("o200k_base")  # the live server runs here: its first call needs no load
    simulated.simulate_reset()
    selectors.endpoint_books_forget()
    membership = MembershipFactory.create(role=Role.ANALYST)
    organization = membership.organization
    conversations = conversations_stored(organization, count=2, turns=3)
    connection = connection_create(
        organization=organization,
        user=None,
        settings=ConnectionSettings(
            name="built-in", base_url=f"{live_server.url}/v1", default_model="gpt-4o"
        ),
        api_key="sk-browser-experiment",
    )
    log_in(tab, membership.user.username)
    page = tab.page
    page.goto(tab.url(f"/o/{organization.slug}/?model=gpt-4o"))
    with page.expect_navigation():
        page.click("#experiment-these")
    assert "model=gpt-4o" in page.url
    # The overview's filtered conversations are offered, all ticked.
    boxes = page.locator('#experiment-new input[name="conversations"]')
    expect(boxes).to_have_count(2)
    assert all(boxes.nth(n).is_checked() for n in range(2))
    page.fill("#id_variants", "model=gpt-4o,label=full\nmodel=gpt-4o-mini,strategy=window:2")
    page.select_option("#id_connection", str(connection.pk))
    with page.expect_navigation():
        page.click("#experiment-new button[type=submit]")
    experiment = Experiment.objects.get(organization=organization)
    assert experiment.status == ExperimentStatus.DRAFT
    assert {c.pk for c in experiment.conversations.all()} == {c.pk for c in conversations}
    expect(page.locator("#prediction tbody tr")).to_have_count(2)
    if page.locator('input[name="confirm"]').count():
        page.check('input[name="confirm"]')
    with page.expect_navigation():
        page.click("#experiment-start button[type=submit]")
    # The page polls the run's progress until the worker is done, then stops polling.
    expect(page.locator('[data-kpi="turns"]')).to_have_text("12 / 12", timeout=90_000)
    expect(page.locator('#experiment-live[data-status="succeeded"]')).to_have_count(1)
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.SUCCEEDED
    rows = page.locator("#results tbody tr[data-result]")
    expect(rows).to_have_count(2)
    report = selectors.experiment_report(experiment)
    for number, variant in enumerate(report["variants"]):
        row = rows.nth(number)
        assert (
            row.locator("[data-measured-cost]").get_attribute("data-measured-cost")
            == (variant["measured"]["cost"])
        )
        assert row.locator("[data-calls]").inner_text() == "6"
    assert wait_for_charts(page, "#experiment-live ") == 1  # predicted vs measured, per turn
    assert page.locator("#experiment-csv").get_attribute("href", timeout=1000)
    tab.assert_no_js_errors()
