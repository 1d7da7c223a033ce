"""Tollgate's web console in a real browser (Debian's chromium, driven by Selenium).

Run by tests/tests/console.rs against a gateway it started (with its ledger consumer and the
mock provider); reads the environment:
  TOLLGATE_URL          the gateway's base URL
  TOLLGATE_MASTER_KEY   the master key
  TOLLGATE_VIEWER_KEY   a key of a proxy_admin_viewer user
  TOLLGATE_AXE          path of axe-core's axe.min.js (gateway/ui/node_modules)
  TOLLGATE_SHOTS        where to save screenshots
  TOLLGATE_RESULT       where to write what the run saw (JSON), for the Rust test to check

Every step fails with a message naming what was not seen. Exits non-zero on the first failure.
"""

import os
import time
import uuid

import openai
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from browser import BASE, MASTER, VIEWER, SHOTS, HOSTILE, seen, run, wait, text_of, text_by_id, \
    check_page, no_alert, sign_in, go
import pages_test


def key_row(d, alias):
    return d.execute_script(
        "return [...document.querySelectorAll('#keys tbody tr')]"
        ".find(r => r.querySelector('th.alias').textContent === arguments[0]) ?? null", alias)


def in_row(d, alias, css):
    """The element `css` in the row of the key `alias`, once the row is shown."""
    def found(d):
        row = key_row(d, alias)
        return row.find_element(By.CSS_SELECTOR, css) if row is not None else None
    return wait(d, f"{css} of the key {alias!r}", found)


def click_in_row(d, alias, css):
    wait(d, f"a click on {css} of the key {alias!r}", lambda d: in_row(d, alias, css).click() or True)


def search(d, text):
    box = d.find_element(By.ID, "key-search")
    box.clear()
    box.send_keys(text, Keys.ENTER)


def create_key(d, alias, **fields):
    d.find_element(By.ID, "new-alias").send_keys(alias)
    for name, value in fields.items():
        d.find_element(By.ID, f"new-{name}").send_keys(value)
    shown = "return document.getElementById('new-secret')?.textContent ?? null"
    before = d.execute_script(shown)
    d.find_element(By.CSS_SELECTOR, "#create-key button[type=submit]").click()
    wait(d, f"the new key {alias!r} shown once", lambda d: d.execute_script(shown) not in (None, before))
    secret = d.execute_script(shown)
    assert secret.startswith("sk-"), secret
    return secret


def sdk_chat(secret):
    client = openai.OpenAI(base_url=f"{BASE}/v1", api_key=secret, max_retries=0)
    return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi from the console test"}])


def edit_budget(d, alias):
    """The key's budget edited in the console, then seen in the list."""
    click_in_row(d, alias, "button.edit")
    budget = wait(d, "the edit form", EC.element_to_be_clickable((By.ID, "edit-budget")))
    assert budget.get_attribute("value") == "5.00", f"the edit form shows budget {budget.get_attribute('value')!r}"
    check_page(d, "key-edit")
    budget.clear()
    budget.send_keys("0.000001")
    meta = d.find_element(By.ID, "edit-metadata")
    meta.clear()
    meta.send_keys('{"owner": "<b>console</b>"}')
    d.find_element(By.CSS_SELECTOR, "#edit-key button[type=submit]").click()
    wait(d, "the edited budget in the list", lambda d: in_row(d, alias, "td.budget").text == "$0.000001")
    seen["edited_budget"] = "$0.000001"


def filter_keys(d, **fields):
    """Sets the filter fields (`blocked`, `expiring`, `over`, `sort`; others cleared) and
    searches; the aliases listed then."""
    for name in ("expiring", "over"):
        box = d.find_element(By.ID, f"key-{name}")
        box.clear()
        box.send_keys(fields.get(name, ""))
    for name in ("blocked", "sort"):
        d.execute_script("document.getElementById(arguments[0]).value = arguments[1]", f"key-{name}", fields.get(name, ""))
    d.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
    time.sleep(0.5)  # the list is redrawn after the answer; the waits below poll for it
    return d.execute_script("return [...document.querySelectorAll('#keys tbody th.alias')].map(c => c.textContent)")


def listed_after(d, what, expected, **fields):
    def narrowed(d):
        shown = filter_keys(d, **fields)
        return (shown,) if shown == expected else None  # a tuple: an empty list is a match too
    try:
        return WebDriverWait(d, 20, poll_frequency=1).until(narrowed)[0]
    except TimeoutException:
        raise AssertionError(f"{what}: listed {filter_keys(d, **fields)}, not {expected}") from None


def filters_narrow(d, run, alias):
    """Among this run's keys, only `alias` has a budget, an expiry and spend."""
    search(d, run)
    everyone = wait(d, "this run's keys", lambda d: len(filter_keys(d)) == 3 and filter_keys(d))
    listed_after(d, "over 100 % of budget", [alias], over="100")
    listed_after(d, "expiring within 31 days", [alias], expiring="31")
    listed_after(d, "expiring within 31 days and over 100 %", [alias], expiring="31", over="100")
    # Ties (no spend) are in the reverse of their order of creation.
    others = [a for a in everyone if a != alias]
    listed_after(d, "by spend, highest first", [alias] + others[::-1], sort="spend_desc")
    listed_after(d, "by spend, lowest first", others + [alias], sort="spend_asc")
    listed_after(d, "blocked", [], blocked="true")
    listed_after(d, "not blocked", everyone, blocked="false")
    filter_keys(d)
    seen["filters_narrowed"] = True


def rotate_with_grace(d, run):
    """A key rotated with a grace period: the new secret shown once; the old key still answers."""
    alias = f"console-rotate-{run}"
    old = create_key(d, alias)
    sdk_chat(old)
    search(d, alias)
    click_in_row(d, alias, "button.rotate")
    grace = wait(d, "the rotate form", EC.element_to_be_clickable((By.ID, "rotate-grace")))
    grace.clear()
    grace.send_keys("1h")
    shown = "return document.getElementById('new-secret')?.textContent ?? null"
    d.find_element(By.ID, "confirm-rotate").click()
    wait(d, "the rotated key's secret", lambda d: d.execute_script(shown) not in (None, old))
    new = d.execute_script(shown)
    assert new.startswith("sk-") and new != old, new
    d.save_screenshot(os.path.join(SHOTS, "key-rotated.png"))
    assert sdk_chat(new).usage.total_tokens > 0, "the new key does not answer"
    assert sdk_chat(old).usage.total_tokens > 0, "the old key stopped answering within its grace period"
    states = "return [...document.querySelectorAll('#keys tbody tr')].map(r => r.querySelector('td.state').textContent).sort()"
    wait(d, "the old key shown replaced beside the new one", lambda d: d.execute_script(states) == ["active", "replaced"])
    # Away and back: the secret is gone, and nothing the page loads shows it again.
    go(d, "overview", "#today-spend")
    go(d, "keys", "#keys-list table, #keys-list p")
    assert d.execute_script(shown) is None and new not in d.page_source, "the new secret is shown again"
    seen["rotated_old_key_answers"] = True


def admin_round_trip(d):
    run = uuid.uuid4().hex[:8]
    sign_in(d, MASTER, "proxy_admin")
    wait(d, "the overview's spend", EC.presence_of_element_located((By.ID, "today-spend")))
    check_page(d, "overview")

    go(d, "keys", "#keys-list table, #keys-list p")
    check_page(d, "keys")
    # Hostile aliases are shown as the text they are.
    for i, h in enumerate(HOSTILE):
        alias = f"{h} {run}-{i}"
        create_key(d, alias)
        search(d, f"{run}-{i}")
        wait(d, f"the key {alias!r} listed", lambda d, a=alias: key_row(d, a) is not None)
        no_alert(d)
    search(d, run)
    for i, h in enumerate(HOSTILE):
        wait(d, "both hostile aliases listed", lambda d, a=f"{h} {run}-{i}": key_row(d, a) is not None)
    d.save_screenshot(os.path.join(SHOTS, "keys-hostile.png"))
    assert not d.find_elements(By.CSS_SELECTOR, "main img, main script"), "hostile markup became elements"
    seen["hostile_shown_as_text"] = True

    # The round trip: create, use with the openai SDK, see the spend, block, refused.
    alias = f"console-rt-{run}"
    secret = create_key(d, alias, team="", models="gpt-4o-mini", budget="5", window="30d", rpm="100",
                        tpm="100000", expiry="30d")
    d.save_screenshot(os.path.join(SHOTS, "key-created.png"))
    seen["created_alias"] = alias
    for _ in range(3):
        answer = sdk_chat(secret)
        assert answer.usage and answer.usage.total_tokens > 0, answer
    spend = None
    deadline = time.time() + 120
    while time.time() < deadline:
        go(d, "keys", "#keys-list table, #keys-list p")
        search(d, alias)
        wait(d, f"the key {alias!r} listed", lambda d: key_row(d, alias) is not None)
        click_in_row(d, alias, "button.details")
        spend = text_of(d, "#detail-spend-all", "the key's spend")
        if spend not in ("$0.00", ""):
            break
        time.sleep(2)  # the ledger consumer folds in batches; poll again
    assert spend not in (None, "$0.00", ""), f"the key's spend never appeared (last: {spend})"
    seen["spend_shown"] = spend
    d.save_screenshot(os.path.join(SHOTS, "key-spend.png"))
    edit_budget(d, alias)
    filters_narrow(d, run, alias)
    rotate_with_grace(d, run)
    go(d, "keys", "#keys-list table, #keys-list p")
    search(d, alias)
    click_in_row(d, alias, "button.block")
    wait(d, "the key shown blocked", lambda d: in_row(d, alias, "td.state").text == "blocked")
    try:
        sdk_chat(secret)
        raise AssertionError("the blocked key still works with the SDK")
    except openai.AuthenticationError as e:
        assert e.status_code == 401, e
        seen["blocked_sdk_status"] = e.status_code

    # Delete, with a confirmation first.
    search(d, f"{run}-0")
    hostile = f"{HOSTILE[0]} {run}-0"
    wait(d, "the key to delete", lambda d: key_row(d, hostile) is not None)
    click_in_row(d, hostile, "button.delete")
    wait(d, "the confirmation", EC.element_to_be_clickable((By.ID, "confirm-delete"))).click()
    wait(d, "the deleted key gone", lambda d: key_row(d, hostile) is None)
    seen["deleted_after_confirmation"] = True

    go(d, "usage", "#usage-total")
    deadline = time.time() + 60
    while text_by_id(d, "usage-total") in ("$0.00", None) and time.time() < deadline:
        time.sleep(2)  # the read model is written by the consumer; poll again
        d.find_element(By.CSS_SELECTOR, "#usage-range button").click()
        wait(d, "usage total", EC.presence_of_element_located((By.ID, "usage-total")))
    seen["usage_total"] = text_by_id(d, "usage-total")
    assert seen["usage_total"] not in ("$0.00", None), "the usage page shows no spend"
    wait(d, "the uPlot chart", EC.presence_of_element_located((By.CSS_SELECTOR, "#usage-chart canvas")))
    check_page(d, "usage")

    # Spend logs: the key's three requests, each with its cost.
    go(d, "logs", "#logs-out table, #logs-out p")
    count = "return [...document.querySelectorAll('#logs td.alias')].filter(c => c.textContent === arguments[0]).length"
    deadline = time.time() + 60
    while d.execute_script(count, alias) < 3 and time.time() < deadline:
        time.sleep(2)  # the event ledger is written by the consumer; poll again
        d.find_element(By.CSS_SELECTOR, "#logs-filter button[type=submit]").click()
    seen["log_rows_of_key"] = d.execute_script(count, alias)
    assert seen["log_rows_of_key"] == 3, f"spend logs show {seen['log_rows_of_key']} requests of the key, not 3"
    check_page(d, "logs")
    pages_test.new_pages(d, run, alias)

    d.find_element(By.ID, "sign-out").click()
    wait(d, "the sign-in form after sign-out", EC.presence_of_element_located((By.ID, "sign-in")))
    d.get_log("browser")
    check_page(d, "sign-in")
    # The old session is gone: the admin API refuses its cookie.
    status = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/key/list', {credentials: 'same-origin'}).then(r => done(r.status));")
    assert status in (401,), f"after sign-out the admin API answered {status}"
    d.get_log("browser")  # that refusal was expected


def viewer_is_refused(d):
    sign_in(d, VIEWER, "proxy_admin_viewer")
    go(d, "keys", "#keys-list table, #keys-list p")
    check_page(d, "keys-viewer")
    d.find_element(By.ID, "new-alias").send_keys("viewer-may-not")
    d.find_element(By.CSS_SELECTOR, "#create-key button[type=submit]").click()
    refusal = text_of(d, "#keys-status .notice.error", "the refusal of a viewer's create")
    assert "may not" in refusal, refusal
    seen["viewer_create_refusal"] = refusal
    alias = seen["created_alias"]
    search(d, alias)
    wait(d, "the key shown blocked to the viewer", lambda d: in_row(d, alias, "td.state").text == "blocked")
    click_in_row(d, alias, "button.block")  # Unblock, which a viewer may not do
    refusal = text_of(d, "#keys-status .notice.error", "the refusal of a viewer's unblock")
    assert "may not" in refusal, refusal
    d.save_screenshot(os.path.join(SHOTS, "viewer-refused.png"))
    go(d, "keys", "#keys-list table, #keys-list p")
    search(d, alias)
    wait(d, "the key still blocked after the viewer's unblock",
         lambda d: in_row(d, alias, "td.state").text == "blocked")
    seen["viewer_block_refusal"] = refusal
    # The API itself refuses, the page's CSRF token notwithstanding.
    status = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/ui/api/session').then(r => r.json()).then(s => fetch('/key/generate', {method: 'POST',"
        " credentials: 'same-origin', headers: {'content-type': 'application/json', 'x-csrf-token': s.csrf_token},"
        " body: '{}'})).then(r => done(r.status));")
    assert status == 403, f"a viewer's /key/generate answered {status}"
    seen["viewer_api_status"] = status


def steps(d):
    admin_round_trip(d)
    d.delete_all_cookies()
    viewer_is_refused(d)


def main():
    run(steps, "failure.png")


if __name__ == "__main__":
    main()
