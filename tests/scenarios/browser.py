"""Debian's Chromium, headless, driven by Playwright: Playwright's own browser download is not possible here,
so `.ci/run` installs the `chromium` package and the tests launch that binary."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--ignore-certificate-errors"]
PAGE_TIMEOUT_MS = 60_000  # the UI's bundles take ~10 s to load and run on a busy two-core machine


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def page(browser: Browser, url: str, answers: list[tuple[int, str]] | None = None) -> Iterator[Page]:
    """A fresh page (no cookies, so no remembered UI version) opened at `url`, certificate errors ignored as
    the edge's certificate is self-signed. Every response the page gets is added to `answers` as (status, url)."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        opened = context.new_page()
        if answers is not None:
            opened.on("response", lambda response: answers.append((response.status, response.url)))
        opened.goto(url, timeout=PAGE_TIMEOUT_MS)
        yield opened
    finally:
        context.close()


def shows(opened: Page, text: str) -> None:
    """Wait until `text` is visible on the page; Playwright's timeout error names the text otherwise."""
    opened.get_by_text(text, exact=False).first.wait_for(state="visible")


def visible_lines(opened: Page) -> set[str]:
    return {line.strip() for line in opened.inner_text("body").splitlines() if line.strip()}


def screenshot(opened: Page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    opened.screenshot(path=str(path), full_page=True)
    return path
