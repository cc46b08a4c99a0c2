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

from alerts.actions import resolve
from alerts.model import Disposition
from ingest.api.teams import add_patients
from tests.feed_support import PATIENT_A, an_episode, running_api, two_teams
from tests.records import message, reading
from tests.support import Stack, eventually

ARTEFACTS = Path(os.environ.get("TELEMON_TEST_ARTEFACTS", "test-artefacts")) / "worklist"


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console
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


def policy_violations(console: list[dict[str, Any]]) -> list[str]:
    """What Chromium's console says the page's Content Security Policy refused."""
    return [e["message"] for e in console if "Content Security Policy" in e["message"]]


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
            assert "COVID-19 · J" in row  # the programme by its name, not its code
            assert await js(browser, "document.querySelector('#programme').options[1].text") == (
                "COVID-19"
            )
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
            # Each label beside its line (a style property the page's policy allows).
            tops = await js(
                browser,
                f"[...{chart}.querySelectorAll('.threshold-label')].map((n) => n.style.top)",
            )
            assert all(top.endswith("px") for top in tops)
            assert len(set(tops)) > 1
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
            console = await in_page(browser.get_log, "browser")
    assert policy_violations(console) == []
    episode = await (await stack.db()).fetchrow("SELECT status, disposition FROM episodes")
    assert episode is not None
    assert (episode["status"], episode["disposition"]) == ("resolved", "advice_given")
    for shot in ARTEFACTS.glob("*.png"):
        assert shot.stat().st_size > 10_000


# HTML where the page shows server text: a handler that would run, an element that would
# appear, were it ever taken as markup.
INJECTED = '<img src=x onerror="window.pwned=1"><i class="injected">injected</i>'
MARKUP_PATIENT = "p-markup"


async def test_text_from_the_server_is_never_markup(stack: Stack, tmp_path: Path) -> None:
    """HTML in what the server sends (a rule's title and finding, a programme, a clinician's
    note) shows as text and runs nothing: the page builds every node with textContent, and
    its Content Security Policy would refuse an inline handler anyway. Swagger UI works from
    the API's own files under its policy; neither page breaks its policy."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    await two_teams(stack)
    async with stack.connection() as conn:
        await conn.execute("INSERT INTO programmes (name) VALUES ($1)", INJECTED)
        await conn.execute(
            "INSERT INTO patients (patient_id, programme, enrolled_at) VALUES ($1, $2, now())",
            MARKUP_PATIENT,
            INJECTED,
        )
        await add_patients(conn, "team-a", [MARKUP_PATIENT])
    # Patient A: an episode resolved with a note, then one whose finding's rule is unknown
    # to the catalogue (its title and finding are the rule's id); the other patient's
    # programme is HTML.
    resolved = await an_episode(stack, PATIENT_A)
    async with stack.connection() as conn:
        await resolve(conn, resolved, "dr-a", Disposition.ADVICE_GIVEN, INJECTED)
    await an_episode(stack, PATIENT_A, rule=INJECTED)
    await an_episode(stack, MARKUP_PATIENT)
    async with running_api(stack, tmp_path / "dev.pem") as api:
        with chromium() as browser:
            await in_page(browser.get, f"{api.url}/#token={api.token('dr-a')}")
            await until(browser, f"{ROWS}.length === 2", "both patients' rows")
            finding = (
                f"[...{ROWS}].find((r) => r.textContent.includes({json.dumps(PATIENT_A)}))"
                ".querySelector('.findings li')"
            )
            assert await js(browser, f"{finding}.textContent") == INJECTED
            assert await js(browser, f"{finding}.getAttribute('title')") == INJECTED
            programme = (
                f"[...{ROWS}].find((r) => r.textContent.includes({json.dumps(MARKUP_PATIENT)}))"
                ".querySelector('td:nth-child(2) .muted')"
            )
            assert (await js(browser, f"{programme}.textContent")).startswith(INJECTED)
            options = await js(
                browser,
                "[...document.querySelectorAll('#programme option')].map((o) => o.textContent)",
            )
            assert INJECTED in options
            await in_page(browser.save_screenshot, str(ARTEFACTS / "5-markup-as-text.png"))

            await js(
                browser,
                "([...document.querySelectorAll('#clinical a.patient')]"
                f".find((a) => a.textContent === {json.dumps(PATIENT_A)}).click(), true)",
            )
            await until(
                browser,
                "document.querySelectorAll('#history .episode').length === 2",
                "the patient's two episodes",
            )
            history = await js(browser, "document.querySelector('#history').textContent")
            assert f"— {INJECTED} (" in history  # the note
            assert f"{INJECTED} — {INJECTED}" in history  # the finding and the rule's title
            assert await js(browser, "document.querySelector('img, .injected')") is None
            assert await js(browser, "window.pwned") is None
            worklist_console = await in_page(browser.get_log, "browser")

            await in_page(browser.get, f"{api.url}/docs")
            title = "document.querySelector('.swagger-ui .info .title')"
            await until(browser, f"{title} !== null", "Swagger UI's title")
            assert "telemon clinicians' API" in await js(browser, f"{title}.textContent")
            await in_page(browser.save_screenshot, str(ARTEFACTS / "6-api-docs.png"))
            docs_console = await in_page(browser.get_log, "browser")
    assert policy_violations(worklist_console) == []
    assert policy_violations(docs_console) == []
