"""Shared by the console's browser tests: Debian's chromium driven by Playwright (no browser
download), each page saved as a screenshot and checked not blank, and axe-core's accessibility rules
(labels, heading order, contrast) run on it.

pytest-twisted runs an asyncio loop on the test's thread, and Playwright's sync API refuses to run
where a loop runs: ``in_browser`` runs a scenario on a thread of its own (every Playwright object
stays on it) and hands back its result or raises its failure.
"""
from __future__ import annotations

import base64
import re
import threading
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, sync_playwright

from identity_helpers import PASSWORD

CHROMIUM = "/usr/bin/chromium"
# each console test module: ``pytestmark = needs_chromium``
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed at "
                                    f"{CHROMIUM} (apt-get install -y chromium)")
# axe-core's rules for the basics every page must meet: a label on every input, headings in order
# (no level skipped), text contrast of 4.5:1 at least, and names for buttons, links and the document
A11Y_RULES = ["label", "select-name", "button-name", "link-name", "heading-order", "page-has-heading-one",
              "empty-heading", "color-contrast", "html-has-lang", "document-title", "duplicate-id-aria"]
MIN_COLOURS = 8     # a blank (or one-colour) screenshot has 1 or 2


def in_browser(scenario, *args):
    """``scenario(browser, *args)`` on a thread of its own with a headless chromium; its result."""
    outcome: dict = {}

    def run() -> None:
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                try:
                    outcome["value"] = scenario(browser, *args)
                finally:
                    browser.close()
        except BaseException as exc:   # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="browser")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def colours_in(browser: Browser, png: bytes) -> int:
    """How many distinct colours a screenshot has (counted by the browser on a blank page)."""
    page = browser.new_page()
    try:
        return page.evaluate("""async (b64) => {
            const img = new Image(); img.src = "data:image/png;base64," + b64; await img.decode();
            const canvas = document.createElement("canvas"); canvas.width = img.width; canvas.height = img.height;
            const g = canvas.getContext("2d"); g.drawImage(img, 0, 0);
            const data = g.getImageData(0, 0, canvas.width, canvas.height).data; const seen = new Set();
            for (let i = 0; i < data.length; i += 4) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
            return seen.size; }""", base64.b64encode(png).decode())
    finally:
        page.close()


class Operator:
    """One operator's browser (a context of its own: its own cookies), signing in by the form."""

    def __init__(self, browser: Browser, base_url: str, shots: Path, name: str, javascript: bool = True):
        self.browser, self.shots, self.name = browser, shots, name
        # javascript=False: the pages as a browser without scripts gets them (every action a plain form)
        self.context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900},
                                           java_script_enabled=javascript)
        self.page: Page = self.context.new_page()
        self.seen: list[str] = []
        self.csp_reports: list[str] = []     # what the browser refused under the Content Security Policy
        self.page.on("console", lambda message: self.csp_reports.append(message.text)
                     if "Content Security Policy" in message.text else None)

    def sign_in(self, user: str, password: str = PASSWORD, totp: str = "") -> Page:
        self.page.goto("/console/sign-in")
        self.page.get_by_label(re.compile("用户名")).fill(user)
        self.page.get_by_label(re.compile("密码")).fill(password)
        self.page.get_by_label(re.compile("动态口令")).fill(totp)
        self.page.get_by_role("button", name="登录").click()
        self.page.wait_for_load_state()
        return self.page

    def goto(self, path: str):
        return self.page.goto(path)

    def check(self, label: str) -> Path:
        """The page as it is now: a screenshot (not blank) under ``shots``, the accessibility rules, no
        inline script or style and nothing the Content Security Policy made the browser refuse."""
        # before the screenshot, which leaves a style of Playwright's own in the page
        inline = self.page.locator("script:not([src]), [style]").evaluate_all("(found) => found.map(e => e.outerHTML)")
        assert not inline, f"{label}: inline script or style {inline}"
        assert not self.csp_reports, f"{label}: the browser refused {self.csp_reports}"
        path = self.shots / f"{self.name}-{len(self.seen):02d}-{label}.png"
        png = self.page.screenshot(path=str(path), full_page=True)
        assert colours_in(self.browser, png) >= MIN_COLOURS, f"{path.name} looks blank"
        assert self.page.locator("h1").count() == 1, f"{label}: one h1 per page"
        results = Axe().run(self.page, options={"runOnly": {"type": "rule", "values": A11Y_RULES},
                                                "resultTypes": ["violations"]})
        violations = [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in results.response["violations"]]
        assert not violations, f"{label}: accessibility violations {violations}"
        self.seen.append(label)
        return path

    def csrf(self) -> str:
        return self.page.locator("input[name=csrf_token]").first.get_attribute("value")

    def close(self) -> None:
        self.context.close()
