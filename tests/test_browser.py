"""The real app in a real headless Chromium (Playwright, sync API) against pytest-django's
live server: charts drawn, HTMX swaps with shareable URLs, the upload progress bar with a
real Celery worker, and tenancy as a browser sees it.

Chromium comes from the system (COSTLAB_BROWSER, /usr/bin/chromium by default). Without it
these tests are skipped locally, and fail on CI (CI=true), which must run them."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError
from pytest_django.live_server_helper import LiveServer

from conversations.models import (
    Conversation,
    ImportJob,
    ImportStatus,
    Membership,
    Message,
    UsageRecord,
)
from pricing.models import ModelPrice

from .conftest import Worker
from .factories import MembershipFactory, ModelPriceFactory, OrganizationFactory
from .test_untrusted_content import MODEL, TITLE

PASSWORD = "pw-123456"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 15_000
JOB_TIMEOUT_MS = 60_000

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

expect.set_options(timeout=TIMEOUT_MS)


def chromium_path() -> str:
    path = os.environ.get("COSTLAB_BROWSER", "/usr/bin/chromium")
    if not Path(path).exists():
        reason = f"no Chromium executable at {path} (set COSTLAB_BROWSER to one)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the browser tests")
        pytest.skip(reason)
    return path


@pytest.fixture
def allow_async_unsafe(monkeypatch: pytest.MonkeyPatch) -> None:
    # Playwright's sync API keeps an event loop in the test thread; Django would refuse the
    # test's own ORM calls (factories, call_command, assertions) from there without this.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(autouse=True)
def price_book() -> None:
    """The default price book is built by pricing's data migrations (0002 to 0005), and
    every transactional test flushes the database when it ends: when an earlier test took
    it away, unapply them and apply them again, as a fresh install runs them. (A serialized
    rollback restores it too, but clashes with the content types that the flush of any other
    transactional test, test_celery_worker's, has already recreated.)"""
    if not ModelPrice.objects.filter(organization=None).exists():
        MigrationExecutor(connection).migrate([("pricing", "0001_initial")])
        # A new executor: the first one's loader still counts the unapplied ones as applied.
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert ModelPrice.objects.filter(organization=None, cache_policy__isnull=False).exists()


@pytest.fixture
def browser(allow_async_unsafe: None) -> Iterator[Browser]:
    """A Chromium per test, started after the test database is set up and stopped before
    it is flushed. While Playwright runs, Django's connection handler (an asgiref Local)
    sees another context and opens connections of its own: the database set-up and flush
    must happen outside, and those extra connections are closed here."""
    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
            connections.close_all()


@dataclass
class Tab:
    """A page plus what it asked for and every JavaScript error it raised."""

    page: Page
    base: str
    requests: list[str] = field(default_factory=list)
    responses: list[tuple[str, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path

    def assert_no_js_errors(self) -> None:
        assert self.errors == [], f"JavaScript errors: {self.errors}"
        # Every page names its icon (base.html), so the browser never guesses /favicon.ico.
        failed = [(u, s) for u, s in self.responses if s >= 400]
        assert failed == [], f"failed requests: {failed}"


@pytest.fixture
def tab(browser: Browser, live_server: LiveServer) -> Iterator[Tab]:
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    result = Tab(page=page, base=live_server.url)
    page.on("request", lambda request: result.requests.append(request.url))
    page.on("response", lambda r: result.responses.append((r.url, r.status)))
    page.on("pageerror", lambda error: result.errors.append(str(error)))

    def console(message: ConsoleMessage) -> None:
        # Failed loads are checked from the responses themselves (see assert_no_js_errors).
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            result.errors.append(message.text)

    page.on("console", console)
    yield result
    context.close()


def wait_until(page: Page, expression: str, arg: object = None) -> None:
    """Poll a JavaScript predicate from Python until it holds.

    Playwright's own wait_for_function compiles a string predicate with eval inside the page
    whenever the first check fails, and costlab's Content-Security-Policy (script-src 'self')
    rightly forbids eval. page.evaluate goes through the DevTools protocol, which the policy
    does not govern, so polling from here checks the same thing without weakening the policy.
    """
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        try:
            if page.evaluate(expression, arg):
                return
        except PlaywrightError as error:
            # A swap or navigation may replace the document between two polls.
            if "context was destroyed" not in str(error):
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {expression} ({arg!r})")
        page.wait_for_timeout(50)


def log_in(tab: Tab, username: str) -> None:
    page = tab.page
    page.goto(tab.url("/accounts/login/"))
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    assert "/accounts/login/" not in page.url, page.inner_text("main")


def long_conversation(path: Path) -> Path:
    """A support chat whose system prompt alone is over 1,024 tokens: the first call is a
    cold miss, the next ones hit the simulated prompt cache."""
    rules = " ".join(
        f"Rule {i}: answer politely, cite policy section {i}, and never invent refund amounts."
        for i in range(1, 121)
    )
    messages = [{"role": "system", "content": f"You are Acme Cloud's support assistant. {rules}"}]
    for question, answer in [
        ("My invoice doubled this month, why?", "Your plan moved to the team tier on the 3rd."),
        ("Can I go back to the starter tier?", "Yes: Billing, Plans, Starter; next cycle."),
        ("Will I lose my data?", "No. Projects over the quota become read-only."),
        ("Please email me the invoice.", "Done: it went to the billing address on file."),
    ]:
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    path.write_text(
        json.dumps(
            {"model": "gpt-4o-mini", "title": "Acme support: invoice doubled", "messages": messages}
        )
    )
    return path


def medium_conversation(path: Path) -> Path:
    """Below the caching minimum but dearer than chat_small: a third distinct cost."""
    text = " ".join(f"Paragraph {i} of the draft contract, clause by clause." for i in range(40))
    messages = [
        {"role": "system", "content": "You review contracts."},
        {"role": "user", "content": f"Summarise: {text}"},
        {"role": "assistant", "content": "It is a standard services agreement. " * 20},
        {"role": "user", "content": "Any risky clauses?"},
        {"role": "assistant", "content": "Clause 7 caps liability very low. " * 10},
    ]
    path.write_text(
        json.dumps({"model": "gpt-4o", "title": "Contract review", "messages": messages})
    )
    return path


def import_file(path: Path, slug: str) -> None:
    call_command("import_transcripts", str(path), "--org", slug, stdout=io.StringIO())


@pytest.fixture
def org_with_data(fixtures: Path, tmp_path: Path, allow_async_unsafe: None) -> Membership:
    membership = MembershipFactory.create()
    slug = membership.organization.slug
    for path in (
        fixtures / "chat_small.json",
        long_conversation(tmp_path / "long.json"),
        medium_conversation(tmp_path / "medium.json"),
    ):
        import_file(path, slug)
    assert Conversation.objects.filter(organization=membership.organization).count() == 3
    return membership


def money(text: str) -> Decimal:
    match = re.search(r"\$([0-9,]+\.[0-9]+)", text)
    assert match, f"no $ amount in {text!r}"
    return Decimal(match.group(1).replace(",", ""))


def wait_for_charts(page: Page, scope: str = "") -> int:
    """Wait until every [data-figure] under scope holds a drawn Plotly plot; return how many."""
    wait_until(
        page,
        """scope => {
            const els = [...document.querySelectorAll(scope + '[data-figure]')];
            return els.length > 0 && els.every(
                e => e.dataset.drawn === '1' && e.classList.contains('js-plotly-plot')
                     && e.querySelector('.main-svg'));
        }""",
        f"{scope} " if scope else "",
    )
    return page.locator(f"{scope} [data-figure]").count()


def table_costs(page: Page) -> list[Decimal]:
    cells = page.locator("#conversation-table tbody td[data-cost]").all_inner_texts()
    return [money(c) for c in cells]


def table_titles(page: Page) -> list[str]:
    return page.locator("#conversation-table tbody tr td:first-child").all_inner_texts()


def query(page: Page) -> dict[str, str]:
    params: dict[str, str] = page.evaluate(
        "Object.fromEntries(new URLSearchParams(location.search))"
    )
    return params


def test_overview_shows_kpis_and_draws_charts_from_local_assets(
    tab: Tab, org_with_data: Membership
) -> None:
    page, slug = tab.page, org_with_data.organization.slug
    log_in(tab, org_with_data.user.username)
    # One organization: home sends the user straight to its overview.
    assert page.url == tab.url(f"/o/{slug}/")
    cost = page.locator("[data-kpi=cost]")
    expect(cost).to_be_visible()
    assert money(cost.inner_text()) > 0
    tokens = int(page.locator("[data-kpi=tokens]").inner_text().replace(",", ""))
    assert tokens > 2_000  # the long chat alone re-sends a >1,024-token prompt each call
    drawn = wait_for_charts(page, "#dashboard")
    assert drawn == page.locator("[data-figure]").count() >= 2
    for figure_id in ("model-figure", "day-figure"):
        chart = page.locator(f"[data-figure={figure_id}]")
        expect(chart.locator(".main-svg").first).to_be_visible()
    # The bars drawn are the models in the data.
    drawn_models = page.evaluate(
        "document.querySelector('[data-figure=model-figure]').data[0].x.slice().sort()"
    )
    assert drawn_models == ["gpt-4o", "gpt-4o-mini"]
    assert len(table_titles(page)) == 3
    assert page.evaluate("typeof window.htmx") == "object"
    assert page.evaluate("typeof window.Plotly") == "object"
    # htmx, plotly and everything else came from the app itself: no CDN, no third party.
    scripts = page.eval_on_selector_all("script[src]", "els => els.map(e => e.src)")
    assert any("htmx" in s for s in scripts) and any("plotly" in s for s in scripts), scripts
    assert tab.requests
    strangers = [u for u in tab.requests if not u.startswith(tab.base)]
    assert strangers == []
    tab.assert_no_js_errors()


def test_model_filter_swaps_the_dashboard_and_keeps_a_shareable_url(
    tab: Tab, org_with_data: Membership
) -> None:
    page, slug = tab.page, org_with_data.organization.slug
    log_in(tab, org_with_data.user.username)
    wait_for_charts(page, "#dashboard")
    page.evaluate("window.__marker = 1; document.getElementById('dashboard').dataset.old = '1'")
    with page.expect_response(lambda r: f"/o/{slug}/?" in r.url) as swap:
        page.select_option("form.filters select[name=model]", "gpt-4o-mini")
    assert swap.value.request.headers.get("hx-request") == "true"
    page.wait_for_selector("#dashboard:not([data-old])", state="attached")
    wait_until(page, "new URLSearchParams(location.search).get('model') === 'gpt-4o-mini'")
    # Swapped in place: no full reload, and only one dashboard.
    assert page.evaluate("window.__marker") == 1
    assert page.locator("#dashboard").count() == 1
    assert wait_for_charts(page, "#dashboard") == page.locator("[data-figure]").count() >= 2
    # The re-drawn chart is the filtered figure, not the old one.
    assert page.evaluate("document.querySelector('[data-figure=model-figure]').data[0].x") == [
        "gpt-4o-mini"
    ]
    assert table_titles(page) == ["Acme support: invoice doubled"]
    filtered_cost = page.locator("[data-kpi=cost]").inner_text()
    assert money(filtered_cost) == table_costs(page)[0]
    conversations_kpi = page.locator(".kpi:has(span:text-is('Conversations')) strong")
    expect(conversations_kpi).to_have_text("1")
    shared = page.url
    assert query(page)["model"] == "gpt-4o-mini"

    # The URL is shareable: loading it fresh shows the same filtered state.
    page.goto(shared)
    assert page.evaluate("window.__marker") is None  # a real load this time
    expect(page.locator("form.filters select[name=model]")).to_have_value("gpt-4o-mini")
    expect(page.locator("[data-kpi=cost]")).to_have_text(filtered_cost)
    assert table_titles(page) == ["Acme support: invoice doubled"]
    wait_for_charts(page, "#dashboard")
    assert page.evaluate("document.querySelector('[data-figure=model-figure]').data[0].x") == [
        "gpt-4o-mini"
    ]
    tab.assert_no_js_errors()


def test_sort_headers_reorder_rows_and_the_url_keeps_sort_and_filters(
    tab: Tab, org_with_data: Membership
) -> None:
    page, slug = tab.page, org_with_data.organization.slug
    log_in(tab, org_with_data.user.username)
    page.evaluate("window.__marker = 1")
    costs = table_costs(page)
    assert len(costs) == 3 and len(set(costs)) == 3
    assert costs == sorted(costs, reverse=True)  # the default: dearest first
    before = table_titles(page)

    def click_sort(key: str, expected: str) -> None:
        page.evaluate("document.getElementById('conversation-table').dataset.old = '1'")
        with page.expect_response(lambda r: "/conversations/?" in r.url) as swap:
            page.click(f"#conversation-table a[data-sort={key}]")
        assert swap.value.status == 200
        page.wait_for_selector("#conversation-table:not([data-old])", state="attached")
        wait_until(page, "s => new URLSearchParams(location.search).get('sort') === s", expected)
        # The pushed URL is the overview's, so reloading it gives the full page.
        assert page.url.startswith(tab.url(f"/o/{slug}/?"))

    click_sort("cost", "cost")
    assert table_costs(page) == sorted(costs)
    assert table_titles(page) == before[::-1]
    expect(page.locator("#conversation-table a[data-sort=cost]")).to_contain_text("▲")
    click_sort("cost", "-cost")
    assert table_costs(page) == costs
    click_sort("title", "title")  # a name's first click reads A to Z
    assert table_titles(page) == sorted(before)
    expect(page.locator("#conversation-table a[data-sort=title]")).to_contain_text("▲")
    click_sort("title", "-title")
    assert table_titles(page) == sorted(before, reverse=True)
    assert page.evaluate("window.__marker") == 1

    # Sorting, then filtering: the filter swap keeps the chosen sort in the URL and rows.
    click_sort("cost", "-cost")
    click_sort("cost", "cost")
    with page.expect_response(lambda r: f"/o/{slug}/?" in r.url):
        page.select_option("form.filters select[name=model]", "gpt-4o")
    wait_until(page, "new URLSearchParams(location.search).get('model') === 'gpt-4o'")
    wait_until(page, "document.querySelectorAll('#conversation-table tbody tr').length === 2")
    assert query(page)["sort"] == "cost"
    gpt4o = table_costs(page)
    assert gpt4o == sorted(gpt4o) and len(gpt4o) == 2
    # ... and a fresh load of that URL shows the same rows in the same order.
    titles = table_titles(page)
    page.goto(page.url)
    assert table_titles(page) == titles
    assert page.evaluate("window.__marker") is None
    tab.assert_no_js_errors()


def test_conversation_page_draws_turns_and_explains_cache_misses(
    tab: Tab, org_with_data: Membership
) -> None:
    page = tab.page
    log_in(tab, org_with_data.user.username)
    with page.expect_navigation():
        page.click("#conversation-table a:text('Acme support: invoice doubled')")
    expect(page.locator("h1")).to_have_text("Acme support: invoice doubled")
    figure = page.evaluate("JSON.parse(document.getElementById('turn-figure').textContent)")
    assert [t["type"] for t in figure["data"]] == ["bar", "bar", "bar", "scatter"]
    assert figure["layout"]["barmode"] == "stack"
    assert [t["name"] for t in figure["data"]][-1] == "Cumulative cost"
    cumulative = figure["data"][3]["y"]
    assert len(cumulative) == 4 and cumulative == sorted(cumulative) and cumulative[-1] > 0
    assert wait_for_charts(page) == 1
    chart = page.locator("[data-figure=turn-figure]")
    assert page.evaluate("document.querySelector('[data-figure=turn-figure]').data.length") == 4
    assert chart.locator(".barlayer .trace").count() == 3
    expect(chart.locator(".scatterlayer .trace .js-line").first).to_be_attached()
    assert chart.locator(".barlayer .point").count() >= 4

    rows = page.locator("#turns tbody tr")
    expect(rows).to_have_count(4)
    cached = [int(rows.nth(i).locator("td").nth(3).inner_text().replace(",", "")) for i in range(4)]
    reasons = [rows.nth(i).locator("td").nth(7).inner_text() for i in range(4)]
    assert cached[0] == 0 and "cold" in reasons[0].lower()
    assert all(c > 1024 for c in cached[1:]), cached
    assert all(r.strip() == "" for r in reasons[1:]), reasons
    cached_kpi = page.locator(".kpi:has(span:text-is('Cached')) strong").inner_text()
    assert cached_kpi.endswith("%") and float(cached_kpi[:-1]) > 50

    # The what-if's retention scenario stays in the address: a reload shows it again.
    page.wait_for_selector("#what-if select[name=retention]")
    with page.expect_response(lambda r: "retention=1h" in r.url):
        page.select_option("#what-if select[name=retention]", "1h")
    wait_until(page, "new URLSearchParams(location.search).get('retention') === '1h'")
    page.reload()
    page.wait_for_selector("#what-if #strategies")
    expect(page.locator("#what-if select[name=retention]")).to_have_value("1h")
    page.go_back()  # replaced, not pushed: one Back leads to the overview
    expect(page.locator("#conversation-table")).to_be_visible()
    page.go_forward()

    # The small chat: every call is below the caching minimum, and it says so.
    page.go_back()
    with page.expect_navigation():
        page.click("#conversation-table a:text('Capital cities')")
    rows = page.locator("#turns tbody tr")
    expect(rows).to_have_count(3)
    for i in range(3):
        expect(rows.nth(i).locator("td").nth(3)).to_have_text("0")
        expect(rows.nth(i).locator("td").nth(7)).to_contain_text("Below the caching minimum")
    expect(rows.nth(2)).to_contain_text("no reply")
    wait_for_charts(page)
    tab.assert_no_js_errors()


def progress_responses(tab: Tab) -> list[int]:
    return [status for url, status in tab.responses if url.endswith("/progress/")]


def upload(tab: Tab, slug: str, path: Path) -> None:
    page = tab.page
    page.goto(tab.url(f"/o/{slug}/imports/"))
    page.set_input_files("#upload-form input[name=file]", str(path))
    with page.expect_navigation():
        page.click("#upload-form button[type=submit]")
    assert re.search(rf"/o/{slug}/imports/[0-9a-f-]{{36}}/$", page.url), page.url


def wait_until_finished(tab: Tab, worker: Worker) -> str:
    try:
        tab.page.wait_for_selector(
            "#job-progress:not([data-status=pending]):not([data-status=running])",
            timeout=JOB_TIMEOUT_MS,
        )
    except Exception:
        pytest.fail(f"the job never finished; worker log:\n{worker.log_path.read_text()}")
    return tab.page.get_attribute("#job-progress", "data-status") or ""


def assert_polling_stopped(tab: Tab) -> None:
    page = tab.page
    assert page.get_attribute("#job-progress", "hx-trigger") is None
    assert page.get_attribute("#job-progress", "hx-get") is None
    # The last poll answered 286 (htmx: stop polling), and nothing polls afterwards.
    assert progress_responses(tab)[-1] == 286, progress_responses(tab)
    seen = len(progress_responses(tab))
    page.wait_for_timeout(2_500)
    assert len(progress_responses(tab)) == seen


@pytest.mark.celery_worker
def test_upload_shows_live_progress_until_done(
    tab: Tab, worker: Worker, tmp_path: Path, allow_async_unsafe: None
) -> None:
    membership = MembershipFactory.create()
    slug = membership.organization.slug
    log_in(tab, membership.user.username)
    page = tab.page
    # Hold the worker until the page has shown the queued job polling: without this a
    # fast worker may finish before the first render and the progress bar never polls.
    worker.send_signal(signal.SIGSTOP)
    try:
        upload(tab, slug, long_conversation(tmp_path / "support.json"))
        progress = page.locator("#job-progress")
        expect(progress).to_have_attribute("data-status", "pending")
        expect(progress).to_have_attribute("hx-trigger", "every 1s")
        expect(page.locator("[data-job-status]")).to_have_text("Waiting for a worker")
        with page.expect_response(lambda r: r.url.endswith("/progress/")) as first_poll:
            pass
        assert first_poll.value.status == 200
    finally:
        worker.send_signal(signal.SIGCONT)
    assert wait_until_finished(tab, worker) == ImportStatus.SUCCEEDED
    expect(page.locator("[data-job-status]")).to_have_text("Done")
    expect(page.locator("#job-progress progress")).to_have_attribute("value", "100")
    job = ImportJob.objects.get(organization=membership.organization)
    assert (job.conversations, job.turns, job.messages) == (1, 4, 9)
    counts = page.locator("#job-progress .counts").inner_text()
    assert re.search(r"\b1 conversation\b.*\b4 turns\b.*\b9 messages\b", counts), counts
    assert money(counts) > 0
    assert_polling_stopped(tab)
    assert Conversation.objects.filter(organization=membership.organization).count() == 1
    tab.assert_no_js_errors()


@pytest.mark.celery_worker
def test_an_invalid_upload_fails_naming_line_and_field(
    tab: Tab, worker: Worker, tmp_path: Path, fixtures: Path
) -> None:
    membership = MembershipFactory.create()
    slug = membership.organization.slug
    import_file(fixtures / "chat_small.json", slug)
    before = (Conversation.objects.count(), Message.objects.count(), UsageRecord.objects.count())
    bad = tmp_path / "support_bad.jsonl"
    bad.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}]})
        + "\n"
        + json.dumps(
            {"messages": [{"role": "user", "content": "ok"}, {"role": "robot", "content": "x"}]}
        )
        + "\n"
    )
    log_in(tab, membership.user.username)
    upload(tab, slug, bad)
    assert wait_until_finished(tab, worker) == ImportStatus.FAILED
    page = tab.page
    expect(page.locator("[data-job-status]")).to_have_text("Failed")
    error = page.locator("[data-job-error]")
    expect(error).to_be_visible()
    expect(error).to_contain_text("line 2")
    expect(error).to_contain_text("messages[1].role")
    expect(page.locator("#job-progress")).to_contain_text("Nothing from this file was stored.")
    assert page.get_attribute("#job-progress", "hx-trigger") is None
    seen = len(progress_responses(tab))
    page.wait_for_timeout(1_200)  # more than the 1 s polling interval
    assert len(progress_responses(tab)) == seen
    after = (Conversation.objects.count(), Message.objects.count(), UsageRecord.objects.count())
    assert after == before
    tab.assert_no_js_errors()


def test_another_orgs_conversation_is_a_404_in_the_browser(
    tab: Tab, fixtures: Path, allow_async_unsafe: None
) -> None:
    mine = MembershipFactory.create()
    theirs = OrganizationFactory.create()
    import_file(fixtures / "chat_small.json", theirs.slug)
    secret = Conversation.objects.get(organization=theirs)
    log_in(tab, mine.user.username)
    page = tab.page
    for path in (
        f"/o/{theirs.slug}/c/{secret.code}/",
        f"/o/{mine.organization.slug}/c/{secret.code}/",
        f"/o/{theirs.slug}/",
    ):
        response = page.goto(tab.url(path))
        assert response is not None and response.status == 404, path
        expect(page.locator("body")).to_contain_text("Not Found")
        assert "Capital cities" not in page.content()
    # The user's own pages still work, and never list the other organization.
    response = page.goto(tab.url(f"/o/{mine.organization.slug}/"))
    assert response is not None and response.status == 200
    expect(page.locator("header .orgs")).not_to_contain_text(theirs.name)


# Untrusted content: a model name and a title made of markup open no dialog and show as text,
# in the tables and in the Plotly charts, with no Content Security Policy violation.

WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__cspViolations.push(e.effectiveDirective + " " + e.sourceFile + ":" + e.lineNumber));
"""


def test_markup_in_a_model_name_and_a_title_stays_text(
    tab: Tab, tmp_path: Path, allow_async_unsafe: None
) -> None:
    membership = MembershipFactory.create()
    ModelPriceFactory.create(model=MODEL)
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps({"model": MODEL, "title": TITLE, "messages": messages}))
    import_file(path, membership.organization.slug)

    page = tab.page
    dialogs: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.add_init_script(WATCH_CSP)
    log_in(tab, membership.user.username)

    wait_for_charts(page, "#dashboard")
    row = page.locator("#conversation-table tbody tr").first
    assert row.locator("td").first.inner_text() == TITLE
    assert row.locator("td").nth(6).inner_text() == MODEL
    chart = page.locator("[data-figure=model-figure]")
    assert MODEL in chart.locator(".xtick text").all_text_contents()
    assert chart.locator("svg a").count() == 0  # Plotly made no link of it
    assert page.locator("img[src=x]").count() == 0
    assert page.evaluate("window.__cspViolations") == []

    row.locator("a").click()
    wait_for_charts(page)
    assert page.locator("main h1").inner_text() == TITLE
    assert MODEL in page.locator("p.meta").inner_text()
    assert page.locator("img[src=x]").count() == 0
    assert page.evaluate("window.__cspViolations") == []

    assert dialogs == []
    tab.assert_no_js_errors()


def test_back_to_a_filtered_overview_shows_the_whole_page(
    tab: Tab, org_with_data: Membership
) -> None:
    page, slug = tab.page, org_with_data.organization.slug
    log_in(tab, org_with_data.user.username)
    with page.expect_response(lambda r: f"/o/{slug}/?" in r.url):
        page.select_option("form.filters select[name=model]", "gpt-4o-mini")
    wait_until(page, "new URLSearchParams(location.search).get('model') === 'gpt-4o-mini'")
    filtered = page.url
    with page.expect_navigation():
        page.click("#conversation-table a:text('Acme support: invoice doubled')")
    expect(page.locator("h1")).to_have_text("Acme support: invoice doubled")

    page.go_back()
    # The pushed URL answered a swap with a fragment: Back must not show that fragment alone.
    assert page.url == filtered
    expect(page.locator("header.topbar")).to_be_visible()
    expect(page.locator("form.filters select[name=model]")).to_have_value("gpt-4o-mini")
    expect(page.locator("h1")).to_have_text(org_with_data.organization.name)
    assert page.locator("#dashboard").count() == 1
    assert table_titles(page) == ["Acme support: invoice doubled"]
    wait_for_charts(page, "#dashboard")
    tab.assert_no_js_errors()


def test_back_between_filters_htmx_no_longer_caches_loads_the_whole_page(
    tab: Tab, org_with_data: Membership
) -> None:
    page, slug = tab.page, org_with_data.organization.slug
    log_in(tab, org_with_data.user.username)
    for model in ("gpt-4o-mini", "gpt-4o"):
        with page.expect_response(lambda r: f"/o/{slug}/?" in r.url):
            page.select_option("form.filters select[name=model]", model)
        wait_until(page, "m => new URLSearchParams(location.search).get('model') === m", model)
    # htmx keeps no snapshot of pushed pages (historyCacheSize 0, base.html): a snapshot
    # showed the filters' fields as first drawn beside other figures. It asks the server.
    with page.expect_request(lambda r: "hx-history-restore-request" in r.headers) as restore:
        page.go_back()
    assert "model=gpt-4o-mini" in restore.value.url
    wait_until(page, "new URLSearchParams(location.search).get('model') === 'gpt-4o-mini'")
    expect(page.locator("form.filters select[name=model]")).to_have_value("gpt-4o-mini")
    expect(page.locator("header.topbar")).to_have_count(1)
    expect(page.locator("#dashboard")).to_have_count(1)
    expect(page.locator("#conversation-table tbody tr")).to_have_count(1)
    assert table_titles(page) == ["Acme support: invoice doubled"]
    tab.assert_no_js_errors()
