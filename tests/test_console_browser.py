"""The operator console in a real browser (issue 17, item 6): Debian's
chromium driven by Playwright (executable_path; tests/install-chromium.sh
installs it when missing, as `make test` does), against a served process on
the manual clock with auth on (an operator, a reader, an engine).

One served process and one browser for the whole module, in the order a
shift at the desk would see things; the last test stops the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import audit_service_pb2_grpc as audit_grpc
from playlog.v1 import execution_window_service_pb2 as ew
from tests.builders import HOUR, MINUTE, T0
from tests.console_demo import HALF_HOUR, NOW, START, Demo, programmes
from tests.test_auth import Principal, bearer, write_auth_file
from tests.test_served_process import Served, free_port

CHROMIUM = os.environ.get("PLAYLOG_CHROMIUM", "/usr/bin/chromium")
INSTALL = Path(__file__).parent / "install-chromium.sh"
OPERATOR, READER, ENGINE = "desk-token", "viewer-token", "engine-token"
# Waits for what the page shows; everything happens within a second or two.
TIMEOUT_MS = 10_000


def _chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        result = subprocess.run(
            ["sh", str(INSTALL)], capture_output=True, text=True, timeout=900, check=False
        )
        assert result.returncode == 0, f"installing chromium failed: {result.stderr}"
    return CHROMIUM


class Desk:
    def __init__(self, tmp: Path) -> None:
        auth = write_auth_file(
            tmp / "auth.toml",
            [Principal("desk", ["operator"], OPERATOR), Principal("viewer", ["reader"], READER),
             Principal("playout-1", ["engine"], ENGINE)],
        )  # fmt: skip
        self.http_port, self.grpc_port, self.data = free_port(), free_port(), tmp / "data"
        self.args = ("--clock", "manual", "--start-utc-ms", str(START), "--auth-file", str(auth),
                     "--http-listen", f"127.0.0.1:{self.http_port}", "--log-level", "debug")  # fmt: skip
        self.server = Served(self.data, self.grpc_port, *self.args)
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.demo = Demo(self.server.address, bearer(OPERATOR), bearer(ENGINE))
        self.demo.seed()
        self.audit = audit_grpc.AuditServiceStub(self.demo.channel)

    def restart(self) -> None:
        """The same data directory and addresses (the session key and the
        manual clock are in the data directory)."""
        self.server = Served(self.data, self.grpc_port, *self.args)


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    d = Desk(tmp_path_factory.mktemp("console"))
    yield d
    d.demo.close()
    if d.server.proc.poll() is None:
        d.server.proc.kill()
        d.server.proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium())
        yield b
        b.close()


def _signed_in(browser: Browser, desk: Desk, token: str) -> Page:
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(desk.base + "/")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("who")).to_be_visible()
    page.goto(desk.base + "/#/channel/news")
    expect(page.get_by_test_id("connection")).to_have_text("live")
    page.errors = errors  # type: ignore[attr-defined]
    return page


@pytest.fixture(scope="module")
def operator(browser: Browser, desk: Desk) -> Page:
    return _signed_in(browser, desk, OPERATOR)


def _row(page: Page, block_id: str) -> object:
    return page.locator(f"tr[data-block='{block_id}']")


def test_the_page_shows_a_published_window_with_its_statuses(operator: Page, desk: Desk) -> None:
    page = operator
    # NOW = T0 + 40 min, lock 1 h: n0 aired, n1 on air, n2/n3 locked, n4 on flexible.
    for block, status in [("n0", "past"), ("n1", "on-air"), ("n2", "locked"), ("n3", "locked"),
                          ("n4", "flexible")]:  # fmt: skip
        expect(_row(page, block)).to_have_attribute("data-status", status)  # type: ignore[arg-type]
    expect(_row(page, "n1")).to_have_class("row on-air ")  # type: ignore[arg-type]
    expect(_row(page, "n2")).to_have_class("row locked next")  # type: ignore[arg-type]
    # The server's clocks (the manual clock), not the browser's.
    expect(page.get_by_test_id("clock-now")).to_have_text("00:40:00")
    expect(page.get_by_test_id("clock-left")).to_have_text("20:00")
    expect(page.get_by_test_id("clock-next")).to_have_text("20:00")
    # The as-run beside the plan: n0 aired two seconds late.
    expect(_row(page, "n0").locator("td").nth(8)).to_have_text("00:00:02")  # type: ignore[attr-defined]
    # ... and reconciliation's discrepancies beside it.
    expect(_row(page, "n0").locator("td").nth(10)).to_contain_text("START_OFF")  # type: ignore[attr-defined]
    expect(page.get_by_test_id("timeline")).to_be_visible()
    # The overview: on air, next, generations, engines, runway.
    overview = page.context.new_page()
    overview.goto(desk.base + "/")
    news = overview.locator("tr[data-channel='news']")
    expect(news).to_contain_text("Weather", timeout=TIMEOUT_MS)
    expect(news).to_contain_text("playout-1: 1")
    expect(overview.locator("tr[data-channel='sports']")).to_contain_text("nothing on air")
    overview.close()
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_publish_and_a_cut_made_over_grpc_appear_without_a_reload(operator: Page, desk: Desk) -> None:
    page = operator
    page.evaluate("window.__same_page = true")
    start = T0 + 3 * HOUR  # flexible
    desk.demo.publish("news", start, programmes("news", "g", start, 2))
    expect(_row(page, "g0")).to_have_attribute("data-status", "flexible")  # type: ignore[arg-type]
    # The engine that applied generation 1 now lags one generation, and says since when.
    expect(page.locator("header [data-engine='playout-1']")).to_contain_text("1 (\u22121 for 0:00)")
    # A cut of the entry on air (n1) five minutes from now, over gRPC.
    cut_at, end = NOW + 5 * MINUTE, T0 + HOUR
    [cut] = programmes("news", "cut-grpc", cut_at, 1)
    cut.end_utc_ms = end
    for s in cut.segments:
        s.duration_ms = (end - cut_at) // 2
    desk.demo.publish("news", cut_at, [cut], operator_override=True, reason_code="BREAKING_NEWS")
    expect(_row(page, "cut-grpc0")).to_have_attribute("data-status", "locked")  # type: ignore[arg-type]
    expect(_row(page, "n1").locator("button.override")).to_be_visible()  # type: ignore[attr-defined]
    assert page.evaluate("window.__same_page") is True  # no reload happened


def test_the_manual_clock_moving_moves_the_on_air_row(operator: Page, desk: Desk) -> None:
    page = operator
    desk.demo.advance(6 * MINUTE)
    expect(_row(page, "cut-grpc0")).to_have_attribute("data-status", "on-air")  # type: ignore[arg-type]
    expect(_row(page, "n1")).to_have_attribute("data-status", "past")  # type: ignore[arg-type]
    expect(page.get_by_test_id("clock-now")).to_have_text("00:46:00")
    expect(page.get_by_test_id("clock-left")).to_have_text("14:00")


def test_a_reader_cannot_write(browser: Browser, desk: Desk) -> None:
    page = _signed_in(browser, desk, READER)
    expect(page.get_by_test_id("read-only")).to_be_visible()
    expect(page.get_by_test_id("actions")).to_have_count(0)
    expect(page.locator("button.act")).to_have_count(0)
    expect(page.get_by_test_id("who")).to_contain_text("read-only")
    # Not only hidden: the API refuses the reader's write with its own cookie.
    answer = page.evaluate(
        """async () => { const r = await fetch('/api/v1/channels/news/publish', {method: 'POST',
             headers: {'Content-Type': 'application/json'}, body: JSON.stringify({validate_only: true})});
             return [r.status, (await r.json()).code]; }"""
    )
    assert answer == [403, "PERMISSION_DENIED"]
    # A channel that does not exist says so.
    page.goto(desk.base + "/#/channel/nope")
    expect(page.get_by_test_id("read-failure")).to_contain_text("NOT_FOUND")
    page.context.close()


def test_an_operators_cut_from_the_page_writes_its_override_record_before_its_entries(
    operator: Page, desk: Desk
) -> None:
    page = operator
    before = {r.id for r in desk.audit.ListOverrideRecords(
        audit.ListOverrideRecordsRequest(channel_id="news"), metadata=bearer(OPERATOR)).records}  # fmt: skip
    _row(page, "cut-grpc0").locator("button.act").click()  # type: ignore[attr-defined]
    page.fill("input[name=reason]", "SPORTS_OVERRUN")
    page.get_by_test_id("dry-run").click()
    diff = page.get_by_test_id("diff")
    expect(diff).to_contain_text("cut-grpc0")  # what it would replace: the entry on air
    expect(diff).to_contain_text("cut-grpc0-cut")  # and what it would write
    # The dry run changed nothing.
    expect(_row(page, "cut-grpc0-cut")).to_have_count(0)
    expect(page.get_by_test_id("commit")).to_be_disabled()
    page.check("input[name=confirm]")
    page.get_by_test_id("commit").click()
    expect(page.get_by_test_id("done")).to_contain_text("override record")
    expect(_row(page, "cut-grpc0-cut")).to_have_attribute("data-status", "locked")  # type: ignore[arg-type]
    records = desk.audit.ListOverrideRecords(
        audit.ListOverrideRecordsRequest(channel_id="news"), metadata=bearer(OPERATOR)
    ).records
    [record] = [r for r in records if r.id not in before]
    assert record.reason_code == "SPORTS_OVERRUN" and record.actor == "desk"
    assert [s.block_id for s in record.superseded.entries] == ["cut-grpc0"]
    window = desk.demo.window.ReadWindowSnapshot(
        ew.ReadWindowSnapshotRequest(channel_id="news", start_utc_ms=NOW, end_utc_ms=T0 + HOUR),
        metadata=bearer(OPERATOR),
    )
    made = [e for e in window.entries if e.generation_id == record.resulting_generation_id]
    assert {e.block_id for e in made} == {"cut-grpc0", "cut-grpc0-cut"}
    # Every entry the cut made names its record, and the record was there first:
    # it was created no later than the entries were committed (the store's
    # record-first write path), and the audit finds no entry without one.
    assert all(e.is_operator_override and e.override_record_id == record.id for e in made)
    violations = desk.audit.VerifyIntegrity(
        audit.VerifyIntegrityRequest(channel_id="news"), metadata=bearer(OPERATOR)
    )
    assert list(violations.violations) == []
    # The override mark opens the audit record.
    _row(page, "cut-grpc0-cut").locator("button.override").click()  # type: ignore[attr-defined]
    dialog = page.get_by_test_id("record-dialog")
    expect(dialog).to_contain_text("SPORTS_OVERRUN")
    expect(dialog).to_contain_text("desk")
    dialog.get_by_role("button", name="Close").click()


def test_a_refusal_is_shown_with_its_code_and_reason(operator: Page, desk: Desk) -> None:
    page = operator
    generation = page.get_by_test_id("generation").inner_text()
    past = {"range_start_utc_ms": str(T0), "range_end_utc_ms": str(T0 + HALF_HOUR),
            "entries": [], "operator_override": True}  # fmt: skip
    page.fill("textarea[name=request]", json.dumps(past))
    page.fill("input[name=reason]", "FIX_THE_PAST")
    page.get_by_test_id("dry-run").click()
    refusal = page.get_by_test_id("refusal")
    expect(refusal).to_contain_text("ERROR_CODE_PAST_WINDOW_IMMUTABLE")
    expect(page.get_by_test_id("diff")).to_have_count(0)
    assert page.get_by_test_id("generation").inner_text() == generation
    # Malformed JSON pasted: the page says so, nothing is sent.
    page.fill("textarea[name=request]", "{not json")
    page.get_by_test_id("dry-run").click()
    expect(refusal).to_contain_text("INVALID_ARGUMENT")


def test_stopping_the_server_shows_the_connection_state(operator: Page, desk: Desk) -> None:
    page = operator
    overview = page.context.new_page()
    overview.goto(desk.base + "/")
    expect(overview.get_by_test_id("connection")).to_have_text("live")
    expect(page.get_by_test_id("connection")).to_have_text("live")
    assert desk.server.stop(signal.SIGTERM) == 0
    expect(overview.get_by_test_id("connection")).to_have_text("not answering")
    expect(overview.get_by_test_id("stale-banner")).to_contain_text("stale since")
    expect(page.get_by_test_id("connection")).not_to_have_text("live")
    banner = page.get_by_test_id("stale-banner")
    expect(banner).to_contain_text("stale since")
    expect(banner).to_contain_text("00:46:00")  # the server's last time it heard
    assert page.errors == []  # type: ignore[attr-defined]


def test_after_a_restart_the_page_resumes_by_generation_without_a_reload(operator: Page, desk: Desk) -> None:
    page = operator
    page.evaluate("window.__before_restart = true")
    desk.restart()
    # The browser reconnects by itself, with Last-Event-ID; the session cookie
    # is still good (its key is in the data directory).
    expect(page.get_by_test_id("connection")).to_have_text("live", timeout=15_000)
    expect(page.get_by_test_id("stale-banner")).to_have_count(0)
    generation = int(page.get_by_test_id("generation").inner_text())
    opened = [e for e in desk.server.log_events() if e.get("event") == "console_stream_opened"]
    assert opened[-1]["after_generation_id"] == generation > 0  # resumed, not a fresh snapshot
    start = T0 + 4 * HOUR
    desk.demo.publish("news", start, programmes("news", "after-restart-", start, 1))
    expect(_row(page, "after-restart-0")).to_have_attribute("data-status", "flexible")  # type: ignore[arg-type]
    assert page.evaluate("window.__before_restart") is True
    assert page.errors == []  # type: ignore[attr-defined]
