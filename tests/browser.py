"""A page in headless Chromium (Debian's), as the HTML tests load one: a fresh profile, no network
beyond the page, and everything the page said (console errors, requests, dialogs) collected."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs Debian's chromium and sets this, so that the browser tests cannot quietly skip there.
REQUIRED = os.environ.get("AUDITOR_REQUIRE_BROWSER") == "1"
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not REQUIRED,
                                    reason="Debian's chromium is not installed (.ci/run installs it)")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@dataclass
class Browsed:
    errors: list[tuple[str, str]]     # console errors and uncaught page errors
    requests: list[str]
    dialogs: list[str]
    read: Any                         # what ``read(page)`` returned
    screenshot: Path


def browse(page_file: Path, tmp_path: Path, read, width: int = 1000, height: int = 1400) -> Browsed:
    """Load ``page_file`` in a fresh Chromium profile; ``read(page)`` takes what the test checks."""
    assert CHROMIUM, "AUDITOR_REQUIRE_BROWSER=1 but no chromium on PATH"
    playwright = pytest.importorskip("playwright.sync_api")
    console, requests, dialogs = [], [], []
    shot = tmp_path / f"{page_file.stem}.png"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": width, "height": height})
        page = browser.new_page()
        page.on("console", lambda m: console.append((m.type, m.text)))
        page.on("pageerror", lambda e: console.append(("pageerror", str(e))))
        page.on("request", lambda r: requests.append(r.url))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        seen = read(page)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    return Browsed([c for c in console if c[0] in ("error", "pageerror")], requests, dialogs, seen, shot)
