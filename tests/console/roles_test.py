"""The console's roles in a real browser (Debian's chromium, driven by Selenium): a team admin and
an internal user sign in, see only their pages and the keys they reach, with only the buttons
they may use, and a forbidden change made from the page is refused by the API, the page showing
why.

Run by tests/tests/roles.rs against a gateway it set up; reads the environment of browser.py
and:
  TOLLGATE_TEAM_ADMIN_KEY   a key of alice, admin of team-a
  TOLLGATE_INTERNAL_KEY     a key of ivy, an internal user with a budget of 1 USD
"""

import os

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from browser import BASE, seen, run, wait, text_of, check_page, sign_in, go

TEAM_ADMIN = os.environ["TOLLGATE_TEAM_ADMIN_KEY"]
INTERNAL = os.environ["TOLLGATE_INTERNAL_KEY"]


def nav_routes(d):
    return sorted(d.execute_script("return [...document.querySelectorAll('nav a')].map(a => a.dataset.route)"))


def key_rows(d):
    """Each shown key's alias and the buttons of its row."""
    return d.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#keys tbody tr')].map(r => ["
        "r.querySelector('th.alias').textContent,"
        "[...r.querySelectorAll('button')].map(b => b.className.split(' ')[0]).sort()]))")


def keys_page(d):
    go(d, "keys", "#keys-list table, #keys-list p")
    wait(d, "the keys listed", lambda d: d.find_elements(By.CSS_SELECTOR, "#keys tbody tr"))
    return key_rows(d)


def refused_create(d, what, **fields):
    """Creates a key from the page's form; the API's refusal is shown. The page may draw its
    form again while its list loads (a slow machine): then the form is filled in afresh."""
    for attempt in range(3):
        try:
            alias = d.find_element(By.ID, "new-alias")
            alias.clear()
            alias.send_keys(f"refused-{what}")
            for name, value in fields.items():
                field = d.find_element(By.ID, f"new-{name}")
                field.clear()
                field.send_keys(value)
            d.find_element(By.CSS_SELECTOR, "#create-key button[type=submit]").click()
            break
        except StaleElementReferenceException:
            if attempt == 2:
                raise
    refusal = text_of(d, "#keys-status .notice.error", f"the refusal of {what}")
    d.get_log("browser")  # the refused call is logged by the browser; that was expected
    return refusal


def fallback_route(d, route):
    """A page the role may not open, asked for from the Spend logs page: the console shows its
    first page (Keys) instead."""
    go(d, "logs", "#logs-filter")
    d.get(f"{BASE}/ui#/{route}")
    shown = "return document.querySelector('#main .view')?.dataset.page ?? null"
    wait(d, f"#/{route} answered with the Keys page",
         lambda d: d.title == "Keys · Tollgate" and d.execute_script(shown) == "keys")
    return d.execute_script(shown)


def team_admin(d):
    sign_in(d, TEAM_ADMIN, "team_admin")
    seen["team_admin_nav"] = nav_routes(d)
    rows = keys_page(d)
    seen["team_admin_keys"] = rows
    check_page(d, "keys-team-admin")
    seen["team_admin_customers_page"] = fallback_route(d, "customers")
    keys_page(d)
    seen["team_admin_refusal"] = refused_create(d, "another-team", team="team-b")
    go(d, "teams", "#entity-list table, #entity-list p")
    seen["team_admin_teams"] = d.execute_script(
        "return [...document.querySelectorAll('#entities tbody tr')].map(r => r.dataset.id)")
    check_page(d, "teams-team-admin")
    d.find_element(By.ID, "sign-out").click()
    wait(d, "the sign-in form after sign-out", EC.presence_of_element_located((By.ID, "sign-in")))


def internal_user(d):
    sign_in(d, INTERNAL, "internal_user")
    seen["internal_nav"] = nav_routes(d)
    seen["internal_keys"] = keys_page(d)
    check_page(d, "keys-internal-user")
    seen["internal_refusal"] = refused_create(d, "over-budget", budget="5")
    seen["internal_teams_page"] = fallback_route(d, "teams")


def steps(d):
    team_admin(d)
    d.delete_all_cookies()
    internal_user(d)


def main():
    run(steps, "roles-failure.png")


if __name__ == "__main__":
    main()
