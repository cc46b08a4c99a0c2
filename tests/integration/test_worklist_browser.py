"""The worklist page end to end in headless Chromium (Debian's chromium and chromedriver,
which `make test` installs): a new red alert arrives live with its banner, is acknowledged
and leaves the open list; the patient view charts the vital with its thresholds."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.feed_support import PATIENT_A, an_alert, heart_rate, running_api, two_teams
from tests.support import Stack, eventually


@contextmanager
def chromium() -> Iterator[WebDriver]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary, "chromium is missing: `make test` installs it (Debian package chromium)"
    assert driver, "chromedriver is missing: `make test` installs it (chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,900")
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


async def until(browser: WebDriver, script: str, what: str, timeout_s: float = 20) -> None:
    """Poll a JavaScript condition in the page (off the event loop: the API runs on it)."""

    async def holds() -> bool:
        return bool(await asyncio.to_thread(browser.execute_script, f"return {script}"))

    await eventually(holds, timeout_s, what)


async def in_page(call: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(call, *args)


async def test_new_red_alert_arrives_live_and_is_acknowledged(stack: Stack, tmp_path: Path) -> None:
    await two_teams(stack)
    async with stack.ingest(), running_api(stack, tmp_path / "dev.pem") as api:
        with chromium() as browser:
            await in_page(browser.get, f"{api.url}/#token={api.token('dr-a')}")
            await until(browser, "document.querySelector('#status').textContent === 'live'", "live")
            await until(browser, "!document.querySelector('#empty').hidden", "an empty list")

            await stack.produce([heart_rate(PATIENT_A, 140)])
            red_open = "document.querySelector('#open tbody tr .sev.red')"
            await until(browser, f"{red_open} !== null", "the red alert in the open list")
            banner = "document.querySelector('#banner')"
            await until(browser, f"{banner}.className === 'on'", "the red banner")
            text = await in_page(browser.execute_script, f"return {banner}.textContent")
            assert PATIENT_A in text
            await in_page(browser.save_screenshot, str(tmp_path / "new-red-alert.png"))

            ack = await in_page(
                browser.find_element,
                By.CSS_SELECTOR,
                "#open tbody tr:has(.sev.red) button.ack",
            )
            await in_page(ack.click)
            await until(browser, f"{red_open} === null", "the red alert to leave the open list")
            await until(
                browser,
                "document.querySelector('#acknowledged tbody tr .sev.red') !== null",
                "the red alert among the acknowledged",
            )
            assert await in_page(browser.execute_script, f"return {banner}.className") == ""
            status = await (await stack.db()).fetchval(
                "SELECT status FROM alerts WHERE rule_id = 'heart_rate'"
            )
            assert status == "acknowledged"

            link = await in_page(browser.find_element, By.CSS_SELECTOR, "a.patient")
            await in_page(link.click)
            chart = "document.querySelector('svg.chart[data-kind=heart_rate]')"
            await until(browser, f"{chart} !== null", "the heart-rate chart")
            lines = await in_page(
                browser.execute_script, f"return {chart}.querySelectorAll('line').length"
            )
            assert lines >= 3  # the thresholds (40 and 131) and the alert's mark
            await in_page(browser.save_screenshot, str(tmp_path / "patient.png"))
    for shot in ("new-red-alert.png", "patient.png"):
        assert (tmp_path / shot).stat().st_size > 10_000


async def test_text_from_the_server_is_never_markup(stack: Stack, tmp_path: Path) -> None:
    """A rule's name with HTML in it shows as text; no script of it runs (the page escapes
    it, and its Content Security Policy would refuse an inline handler anyway). Swagger UI
    works from the API's own files under its policy."""
    await two_teams(stack)
    rule = '<img src=x onerror="window.pwned=1"><b>bold</b>'
    await an_alert(stack, PATIENT_A, rule=rule)
    async with running_api(stack, tmp_path / "dev.pem") as api:
        with chromium() as browser:
            await in_page(browser.get, f"{api.url}/#token={api.token('dr-a')}")
            cell = "document.querySelector('#open tbody tr td.rule')"
            await until(browser, f"{cell} !== null", "the alert's row")
            assert await in_page(browser.execute_script, f"return {cell}.textContent") == rule
            assert await in_page(browser.execute_script, f"return {cell}.children.length") == 0
            assert await in_page(browser.execute_script, "return window.pwned") is None

            await in_page(browser.get, f"{api.url}/docs")
            title = "document.querySelector('.swagger-ui .info .title')"
            await until(browser, f"{title} !== null", "Swagger UI's title")
            text = await in_page(browser.execute_script, f"return {title}.textContent")
            assert "telemon clinicians' API" in text
            await in_page(browser.save_screenshot, str(tmp_path / "docs.png"))
