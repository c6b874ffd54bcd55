"""The console in a real browser: Playwright drives Debian's Chromium (``make chromium``) against
``fleet api`` with a real worker and RabbitMQ vhost.

Log in, see the four queues, replay a dead letter from its page and watch it go, pause and resume
a queue, and a read-only token sees no action buttons. With ``FLEET_CONSOLE_SCREENSHOTS=<dir>``
(``make console-screenshots``) a screenshot of each page is saved there (docs/img in the README).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.celery_app import FleetCelery
from fleet.testing.broker import queue_depth
from fleet.testing.processes import FleetProcess
from tests.conftest import OPERATE, READ
from tests.support.api import ApiServer
from tests.support.peers import HTTPPeer
from tests.support.results import succeeded

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian's chromium is missing: `make chromium` installs it"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: tests may run as root (CI does), where Chromium refuses its sandbox
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def shoot(page: object, name: str) -> None:
    """Save a screenshot of the page when FLEET_CONSOLE_SCREENSHOTS names a folder."""
    folder = os.environ.get("FLEET_CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"console-{name}.png"), full_page=True)


def log_in(browser: object, api: ApiServer, token: str) -> object:
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # every action asks; the operator says yes
    page.goto(api.url("/console/"))
    assert "/console/login" in page.url, "not logged in: the login page"
    shoot(page, "login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(api.url("/console/"))
    return page


def test_operate_in_the_browser(
    browser: object,
    ops_api: ApiServer,
    default_worker: list[FleetProcess],
    private_app: FleetCelery,
    http_peer: HTTPPeer,
) -> None:
    from playwright.sync_api import expect

    url = private_app.conf.broker_url
    peer = http_peer.script(f"/console-{uuid.uuid4().hex}", [500] * 6 + [200])  # dies, then succeeds on replay
    flaky = private_app.send_task("tasks.call_external_api", (peer,))
    deadline = time.monotonic() + 60
    while queue_depth(url, "default.dlq")[0] < 1:
        assert time.monotonic() < deadline, "dead-lettered"
        time.sleep(0.2)
    later = private_app.send_task("tasks.add", (2, 2), countdown=900)  # for the Scheduled page
    private_app.send_task("tasks.add", (1, 1)).get(timeout=30)  # for the Tasks page

    page = log_in(browser, ops_api, OPERATE)
    rows = page.locator("#queues tbody tr")
    expect(rows).to_have_count(4)
    assert rows.evaluate_all("rows => rows.map(row => row.dataset.queue)") == [
        "high_priority",
        "email",
        "reports",
        "default",
    ]
    shoot(page, "queues")

    page.click("header nav >> text=Dead letters")
    page.click(".tabs >> text=default")
    row = page.locator(f'#dead-letters tr[data-task-id="{flaky.id}"]')
    expect(row).to_contain_text("TransientHTTPError")
    shoot(page, "dead-letters")
    row.locator("button.replay").click()
    expect(page.locator(".banner.notice")).to_contain_text("replay: 1 dead letter(s) of default")
    expect(row).to_have_count(0)
    assert succeeded(private_app, flaky.id)["status_code"] == 200, "replayed from the page, it completes"

    page.click("header nav >> text=Queues")
    default_row = page.locator('#queues tr[data-queue="default"]')
    default_row.locator("button.pause").click()
    expect(default_row.locator(".state")).to_have_text("paused")
    deadline = time.monotonic() + 15
    while queue_depth(url, "default")[1] != 0:
        assert time.monotonic() < deadline, "the worker stopped consuming default"
        time.sleep(0.2)
    # the page refreshes its table in place: the new message shows up without a reload
    page.evaluate("window.fleetNotReloaded = true")
    waiting = private_app.send_task("tasks.add", (3, 3))
    expect(default_row.locator("td").nth(1)).to_have_text("1", timeout=20_000)
    assert page.evaluate("window.fleetNotReloaded === true"), "updated in place, not reloaded"
    default_row.locator("button.resume").click()
    expect(default_row.locator(".state")).to_have_text("consuming")
    expect(default_row.locator("td").nth(3)).to_have_text("1", timeout=20_000)  # its worker consumes it again
    assert waiting.get(timeout=30) == 6, "what waited while paused runs once resumed"

    page.click("header nav >> text=Scheduled")
    expect(page.locator(f'#scheduled tr[data-task-id="{later.id}"]')).to_have_count(1)
    shoot(page, "scheduled")
    page.click("header nav >> text=Workers")
    expect(page.locator('section[data-pool="default"] tbody tr')).to_have_count(1)
    shoot(page, "workers")
    page.click("header nav >> text=Tasks")
    expect(page.locator("#tasks")).to_contain_text("tasks.add")
    shoot(page, "tasks")
    page.context.close()


def test_a_read_only_token_sees_no_action_buttons(
    browser: object, ops_api: ApiServer, default_worker: list[FleetProcess], private_app: FleetCelery
) -> None:
    from playwright.sync_api import expect

    private_app.send_task("tasks.validate_data", ({"source_id": 1},))  # dead-lettered for good
    deadline = time.monotonic() + 60
    while queue_depth(private_app.conf.broker_url, "default.dlq")[0] < 1:
        assert time.monotonic() < deadline, "dead-lettered"
        time.sleep(0.2)
    page = log_in(browser, ops_api, READ)
    expect(page.locator("#queues tbody tr")).to_have_count(4)
    assert page.locator("#queues button").count() == 0
    page.goto(ops_api.url("/console/dead-letters/default"))
    expect(page.locator("#dead-letters tbody tr")).to_have_count(1)
    assert page.locator("main button").count() == 0
    assert page.locator("main form[method=post]").count() == 0
    page.context.close()
