"""`make screenshots`: docs/console-overview.png and docs/console-rundown.png,
taken by the browser the tests use (Debian's chromium through Playwright)
from a served process with the demo channels of tests/console_demo.py, on the
manual clock, auth off on loopback (the one local operator), as after
`make run`. Not drawn: what the page shows for that data.

    python -m tests.screenshots docs
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from tests.console_demo import Demo
from tests.test_console_browser import CHROMIUM, _chromium
from tests.test_served_process import Served, free_port

VIEWPORT = {"width": 1400, "height": 860}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        http_port = free_port()
        from tests.console_demo import START

        server = Served(Path(tmp) / "data", free_port(), "--clock", "manual", "--start-utc-ms", str(START),
                        "--http-listen", f"127.0.0.1:{http_port}")  # fmt: skip
        demo = Demo(server.address)
        try:
            demo.seed()
            base = f"http://127.0.0.1:{http_port}"
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=_chromium() or CHROMIUM)
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(base + "/")
                expect(page.locator("tr[data-channel='news']")).to_contain_text("Weather")
                page.screenshot(path=str(out / "console-overview.png"))
                page.goto(base + "/#/channel/news")
                expect(page.get_by_test_id("connection")).to_have_text("live")
                expect(page.locator("tr[data-block='n1']")).to_have_attribute("data-status", "on-air")
                page.locator("tr[data-block='n3'] button.act").first.click()  # the replace form, prefilled
                page.fill("input[name=reason]", "PROMO_SWAP")
                page.get_by_test_id("dry-run").click()
                expect(page.get_by_test_id("diff")).to_be_visible()
                page.screenshot(path=str(out / "console-rundown.png"), full_page=True)
                browser.close()
        finally:
            demo.close()
            server.stop()
    print(f"wrote {out / 'console-overview.png'} and {out / 'console-rundown.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
