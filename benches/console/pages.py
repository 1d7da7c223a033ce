"""Time to first content of each console page in Debian's headless Chromium (Selenium), for
benches/console/run. Signs in with the master key, then loads each page afresh (from a blank
tab, so the app, its session check and the page's API calls all count) ROUNDS times, and prints
one Markdown row a page: the median and the worst time from the navigation to the page's data
on screen (the element the end-to-end console test waits for), against the 1 s bound; a page
that shows the app's error notice instead is reported as failed, with the notice's text.

Reads TOLLGATE_URL, TOLLGATE_MASTER_KEY and ROUNDS (default 5).
"""

import os
import statistics
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ["TOLLGATE_URL"].rstrip("/")
MASTER = os.environ["TOLLGATE_MASTER_KEY"]
ROUNDS = int(os.environ.get("ROUNDS", "5"))
# Each page and what shows its data (as tests/console/console_test.py waits for it).
PAGES = [
    ("overview", "#today-spend"),
    ("keys", "#keys-list table, #keys-list p"),
    ("usage", "#usage-total"),
    ("logs", "#logs-out table, #logs-out p"),
    ("models", "#models"),
    ("teams", "#entity-list table, #entity-list p"),
]
# A page that failed shows this instead of its data (the app's error notice).
FAILED = "#main .notice.error"


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100",
                "--disable-gpu", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def wait(d, cond, secs=120):
    return WebDriverWait(d, secs, poll_frequency=0.01,
                         ignored_exceptions=(StaleElementReferenceException,)).until(cond)


def main():
    d = browser()
    try:
        d.get(f"{BASE}/ui")
        field = wait(d, EC.element_to_be_clickable((By.ID, "key")))
        field.send_keys(MASTER, Keys.ENTER)
        wait(d, EC.text_to_be_present_in_element((By.ID, "role"), "proxy_admin"))
        for route, ready in PAGES:
            times = []
            wanted = ROUNDS + 1
            failed = None
            while len(times) < wanted and failed is None:
                d.get("about:blank")
                started = time.monotonic()
                d.get(f"{BASE}/ui#/{route}")
                try:
                    shown = wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, f"{ready}, {FAILED}")))
                    if "notice" in (shown.get_attribute("class") or ""):
                        failed = shown.text
                        break
                except TimeoutException:
                    times.append(float("inf"))
                    wanted = min(wanted, 2)
                    continue
                times.append((time.monotonic() - started) * 1000)
                if len(times) == 1 and times[0] > 10_000:
                    wanted = 2  # a page slower than 10 s is timed once more only
            if failed is not None:
                print(f"| {route} | failed: {failed.replace('|', '/')} | **failed** |")
                continue
            times = times[1:]  # the first load warms the browser's cache of the app's files
            worst = max(times)
            verdict = "under 1 s" if worst < 1000 else "**over 1 s**"
            print(f"| {route} | median {statistics.median(times):.0f}, worst {worst:.0f} of {len(times)} | {verdict} |")
    finally:
        d.quit()


if __name__ == "__main__":
    main()
