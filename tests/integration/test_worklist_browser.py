"""The worklist page end to end in headless Chromium (Debian's chromium and chromedriver,
which `make test` installs). One deteriorating patient's upload (SpO2 90 %, heart rate
125/min, respiratory rate 26/min) fires five rules: it is one row, one banner, one sound; one
acknowledgement clears the banner; the page speaks French, then English; the patient view
charts each vital on a time axis with its labelled thresholds; the episode is resolved
there with what was done. Screenshots are kept in test-artefacts/worklist/."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from tests.feed_support import PATIENT_A, an_alert, running_api, two_teams
from tests.records import message, reading
from tests.support import Stack, eventually

ARTEFACTS = Path(os.environ.get("TELEMON_TEST_ARTEFACTS", "test-artefacts")) / "worklist"


@contextmanager
def chromium() -> Iterator[WebDriver]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary, "chromium is missing: `make test` installs it (Debian package chromium)"
    assert driver, "chromedriver is missing: `make test` installs it (chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1000")
    # A French clinician's browser: the page follows its language.
    options.add_argument("--lang=fr-FR")
    options.add_experimental_option("prefs", {"intl.accept_languages": "fr-FR,fr"})
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


async def js(browser: WebDriver, script: str) -> Any:
    return await asyncio.to_thread(browser.execute_script, f"return {script}")


async def in_page(call: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(call, *args)


async def click(browser: WebDriver, selector: str) -> None:
    """Click in one step in the page: the live list may re-render between a lookup and a
    click made from here."""
    await until(browser, f"document.querySelector({json.dumps(selector)}) !== null", selector)
    await js(browser, f"(document.querySelector({json.dumps(selector)}).click(), true)")


def deteriorating(patient: str) -> tuple[bytes, bytes]:
    at = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    body = message(
        reading("spo2", 90, "%", at),
        reading("heart_rate", 125, "/min", at),
        reading("respiratory_rate", 26, "/min", at),
        patient=patient,
        device=f"oxi-{patient}",
    )
    return patient.encode(), json.dumps(body).encode()


ROWS = "document.querySelectorAll('#clinical tbody tr')"
BANNERS = "document.querySelectorAll('#banners .banner')"


async def test_one_row_one_banner_one_sound_then_resolved(stack: Stack, tmp_path: Path) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    await two_teams(stack)
    async with stack.ingest(), running_api(stack, tmp_path / "dev.pem") as api:
        with chromium() as browser:
            await in_page(browser.get, f"{api.url}/#token={api.token('dr-a')}")
            await until(browser, "document.querySelector('#status').className === 'live'", "live")
            assert await js(browser, "document.documentElement.lang") == "fr"
            assert await js(browser, "document.querySelector('#clinical .empty').textContent") == (
                "Aucun patient à revoir."
            )

            await stack.produce([deteriorating(PATIENT_A)])
            await until(browser, f"{ROWS}.length === 1", "one row for the patient")
            await until(browser, f"{ROWS}[0].querySelectorAll('.findings li').length === 5", "five")
            await until(browser, f"{BANNERS}.length === 1", "one banner")
            assert await js(browser, "document.body.dataset.rings") == "1"
            row = await js(browser, f"{ROWS}[0].textContent")
            assert "Rouge" in row
            assert "FC 125/min (≥ 111/min)" in row
            assert "FR 26/min (≥ 25/min)" in row
            banner = await js(browser, f"{BANNERS}[0].textContent")
            assert "Nouvelle alerte rouge" in banner
            assert PATIENT_A in banner
            await in_page(browser.save_screenshot, str(ARTEFACTS / "1-new-red-fr.png"))

            await click(browser, "#banners .banner button")
            await until(browser, f"{BANNERS}.length === 0", "the banner silenced")
            await until(browser, f"{ROWS}[0].classList.contains('acknowledged')", "taken")
            assert await js(browser, "document.body.dataset.rings") == "1"

            # English, chosen on the page.
            await js(
                browser,
                "(() => { const s = document.querySelector('#language'); s.value = 'en'; "
                "s.dispatchEvent(new Event('change')); return true; })()",
            )
            await until(browser, "document.documentElement.lang === 'en'", "English")
            await until(browser, f"{ROWS}[0].textContent.includes('Heart rate 125/min')", "words")
            assert "Clinical review" in await js(browser, "document.body.textContent")
            await in_page(browser.save_screenshot, str(ARTEFACTS / "2-taken-en.png"))

            # The patient view: a chart per vital on a time axis, thresholds labelled.
            await click(browser, "a.patient")
            chart = "document.querySelector('.chart[data-kind=heart_rate]')"
            await until(browser, f"{chart} !== null", "the heart-rate chart")
            assert await js(browser, "state.charts.every((u) => u.scales.x.time)")
            labels = await js(
                browser,
                f"[...{chart}.querySelectorAll('.threshold-label')].map((n) => n.textContent)",
            )
            assert "Orange ≥ 111/min · Heart rate" in labels
            assert "Red ≥ 131/min · Heart rate" in labels
            await in_page(browser.save_screenshot, str(ARTEFACTS / "3-patient-en.png"))

            # Resolved from there, with what was done.
            await click(browser, "#history .episode button:not(.primary)")
            await click(browser, "#dispositions input[value=advice_given]")
            await click(browser, "#resolve-dialog button[value=ok]")
            await until(
                browser,
                "document.querySelector('#history .episode').textContent.includes('Advice given')",
                "the episode resolved",
            )
            await in_page(browser.save_screenshot, str(ARTEFACTS / "4-resolved-en.png"))
    episode = await (await stack.db()).fetchrow("SELECT status, disposition FROM episodes")
    assert episode is not None
    assert (episode["status"], episode["disposition"]) == ("resolved", "advice_given")
    for shot in ARTEFACTS.glob("*.png"):
        assert shot.stat().st_size > 10_000


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
