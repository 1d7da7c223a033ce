"""What the console's browser tests share: the environment, Debian's chromium driven by
Selenium, waits, and the check every page passes (no console error, axe-core clean, a
screenshot). `seen` collects what the run saw, for tests/tests/console.rs to check.
"""

import json
import os
import sys

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ["TOLLGATE_URL"].rstrip("/")
MASTER = os.environ["TOLLGATE_MASTER_KEY"]
VIEWER = os.environ["TOLLGATE_VIEWER_KEY"]
AXE = open(os.environ["TOLLGATE_AXE"], encoding="utf-8").read()
SHOTS = os.environ["TOLLGATE_SHOTS"]
RESULT = os.environ["TOLLGATE_RESULT"]
HOSTILE = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>']

seen = {"pages": {}, "axe": {}}


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100",
                "--disable-gpu", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver is Debian's: Selenium must not fetch one.
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def wait(d, what, cond, secs=20):
    try:
        # The pages redraw what they show: an element found a moment ago may be gone.
        return WebDriverWait(d, secs, ignored_exceptions=(StaleElementReferenceException,)).until(cond)
    except TimeoutException:
        raise AssertionError(f"not seen within {secs} s: {what}") from None


def text_of(d, css, what, secs=20):
    def shown(d):
        found = d.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found and found[0].is_displayed() else None
    return wait(d, what, shown, secs)


def text_by_id(d, id_):
    """An element's text read in the page at once (it may be redrawn at any moment)."""
    return d.execute_script("return document.getElementById(arguments[0])?.textContent ?? null", id_)


def console_errors(d):
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]


def check_page(d, name):
    """The page loaded with no console errors and no serious or critical axe violations."""
    errors = console_errors(d)
    assert not errors, f"{name}: browser console errors: {errors}"
    d.execute_script(AXE)
    violations = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map("
        "v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))), e => done([{id: String(e), impact: 'critical'}]));"
    )
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    seen["axe"][name] = {"violations": len(violations), "serious_or_critical": len(bad)}
    assert not bad, f"{name}: axe-core serious/critical violations: {bad}"
    d.save_screenshot(os.path.join(SHOTS, f"{name}.png"))
    seen["pages"][name] = "ok"


def no_alert(d):
    try:
        d.switch_to.alert
    except NoAlertPresentException:
        return
    raise AssertionError("a JavaScript alert opened: hostile text was run")


def sign_in(d, key, role):
    d.get(f"{BASE}/ui")
    field = wait(d, "the sign-in form", EC.element_to_be_clickable((By.ID, "key")))
    # From the keyboard: type the key and press Enter.
    field.send_keys(key, Keys.ENTER)
    wait(d, f"signed in as {role}", EC.text_to_be_present_in_element((By.ID, "role"), role))
    assert d.execute_script("return window.localStorage.length + window.sessionStorage.length") == 0, \
        "the browser's storage holds something after sign-in"
    assert key not in d.current_url and key not in d.page_source, "the key is in the page or its URL"


def go(d, route, ready_css):
    d.get(f"{BASE}/ui#/{route}")
    wait(d, f"{route} page", EC.presence_of_element_located((By.CSS_SELECTOR, ready_css)))




def run(steps, failure_shot):
    """Runs `steps(d)` in a new browser; on failure keeps a screenshot and the page's address;
    always writes what was seen to RESULT, and prints it after a pass."""
    os.makedirs(SHOTS, exist_ok=True)
    d = browser()
    try:
        steps(d)
    except BaseException:
        d.save_screenshot(os.path.join(SHOTS, failure_shot))
        print(f"page at failure: {d.current_url}", file=sys.stderr)
        raise
    finally:
        with open(RESULT, "w", encoding="utf-8") as f:
            json.dump(seen, f, indent=1)
        d.quit()
    print(json.dumps(seen, indent=1))
