"""The console's pages beyond keys (run by console_test.py, signed in as the master key):
Usage by model and by customer with their CSV downloads; the Overview's ledger health; Teams,
Users, Customers and Organizations, their lists and pages (members, roles, the burn-down
canvas); Models; a request's detail on Spend logs, and the attempt chain of one retried and
moved to a fallback. Hostile team aliases and customer ids are shown as text, and a customer id
that starts a formula is defused in the CSV.
"""

import csv
import json
import os
import time
import urllib.error
import urllib.request

import openai
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from browser import BASE, MASTER, SHOTS, HOSTILE, seen, wait, text_by_id, check_page, no_alert, go

DOWNLOADS = os.path.join(SHOTS, "downloads")


def admin(path, body):
    req = urllib.request.Request(f"{BASE}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"authorization": f"Bearer {MASTER}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        raise AssertionError(f"POST {path}: {e.code} {e.read()!r}") from None


def tenants(run):
    """A user in two teams with hostile aliases, of one organization; two customers of the
    first team (one id hostile markup, one a formula); a key of that team with spend for both."""
    org, user = f"org-{run}", f"member-{run}"
    admin("/organization/new", {"organization_id": org, "organization_alias": f"Org {run}"})
    admin("/user/new", {"user_id": user, "user_role": "internal_user", "organization_id": org, "auto_create_key": False})
    teams = [f"team-{run}-{i}" for i in range(len(HOSTILE))]
    for team, hostile in zip(teams, HOSTILE):
        admin("/team/new", {"team_id": team, "team_alias": f"{hostile} {run}", "organization_id": org,
                            "members_with_roles": [{"user_id": user, "role": "admin"}],
                            "max_budget": 5, "budget_duration": "30d"})
    customers = [f'"><img-src=x-onerror=alert(1)>-{run}', f"=SUM(1+1)-{run}"]
    for c in customers:
        admin("/customer/new", {"user_id": c, "team_id": teams[0], "max_budget": 1})
    key = admin("/key/generate", {"team_id": teams[0], "key_alias": f"pages-{run}"})["key"]
    client = openai.OpenAI(base_url=f"{BASE}/v1", api_key=key, max_retries=0)
    for c in customers:
        answer = client.chat.completions.create(model="gpt-4o-mini", user=c,
                                                messages=[{"role": "user", "content": "hi from the pages test"}])
        assert answer.usage.total_tokens > 0, answer
    return {"org": org, "user": user, "teams": teams, "customers": customers}


def newest_csv(after):
    def done(_):
        names = [n for n in os.listdir(DOWNLOADS) if n.endswith(".csv")] if os.path.isdir(DOWNLOADS) else []
        paths = [os.path.join(DOWNLOADS, n) for n in names]
        fresh = [p for p in paths if os.path.getmtime(p) >= after]
        return max(fresh, key=os.path.getmtime) if fresh else None
    return done


def download_csv(d):
    """Clicks the usage page's CSV button; the downloaded file's rows."""
    started = time.time() - 1
    d.find_element(By.ID, "usage-csv").click()
    path = wait(d, "the CSV download", newest_csv(started))
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def usage_rows(d):
    return d.execute_script(
        "return [...document.querySelectorAll('#usage-groups tbody tr')].map(r => "
        "[r.querySelector('th.group').textContent, r.querySelector('td.spend').textContent])")


def usage_by(d, group, want):
    """The usage page grouped by `group` once `want(rows)` holds (the consumer folds in batches)."""
    go(d, "usage", "#usage-total")
    deadline = time.time() + 90
    while True:
        d.execute_script("document.getElementById('usage-group').value = arguments[0]", group)
        d.find_element(By.CSS_SELECTOR, "#usage-range button[type=submit]").click()
        time.sleep(1)  # the answer replaces the table; the loop polls for what it must show
        rows = usage_rows(d) if d.execute_script("return document.querySelector('#usage-groups')?.dataset.group") == group else []
        if want(rows):
            return rows
        assert time.time() < deadline, f"usage by {group}: {rows}"


def usage_and_csv(d, t):
    # The table sums the range (the server's `sum=range`): one row per model, largest first.
    rows = usage_by(d, "model", lambda rows: any(r[0] == "gpt-4o-mini" and r[1] != "$0.00" for r in rows))
    shown = next(r for r in rows if r[0] == "gpt-4o-mini")
    check_page(d, "usage-by-model")
    lines = download_csv(d)
    assert lines[0][:2] == ["model", "spend_usd"], lines[0]
    line = next((l for l in lines if l[0] == "gpt-4o-mini"), None)
    assert line and f"${line[1]}" == shown[1].replace(",", ""), f"the CSV's {line} against the page's {shown}"
    # The groups' sum is the total the page states for them, to the nano-dollar.
    groups_total = d.find_element(By.ID, "usage-groups-total").text
    nanos = sum(int(l[2]) for l in lines[1:])
    frac = f"{nanos % 10**9:09d}".rstrip("0").ljust(2, "0")
    assert groups_total == f"${nanos // 10**9:,}.{frac}", f"{groups_total} against the CSV's {nanos} nano-USD"
    seen["usage_model_spend"] = shown[1]

    hostile, formula = t["customers"]
    rows = usage_by(d, "customer", lambda rows: {hostile, formula} <= {r[0] for r in rows})
    assert not d.find_elements(By.CSS_SELECTOR, "main img, main script"), "a customer id became an element"
    no_alert(d)
    check_page(d, "usage-by-customer")
    cells = {l[0] for l in download_csv(d)[1:]}
    assert hostile in cells and f"'{formula}" in cells and formula not in cells, f"customer cells in the CSV: {cells}"
    seen["csv_formula_defused"] = True


def ledger_health(d):
    go(d, "overview", "#ledger-health")
    state = wait(d, "the ledger's health", lambda d: text_by_id(d, "ledger-state"))
    assert state == "fresh", f"the ledger health shows {state!r} with a consumer beating every second"
    assert text_by_id(d, "ledger-heartbeat").endswith("s ago"), text_by_id(d, "ledger-heartbeat")
    # The consumer reports its lag in its heartbeats (librdkafka's statistics, every few seconds).
    lags = wait(d, "a consumer's lag", lambda d: d.execute_script(
        "return [...document.querySelectorAll('#ledger-consumers td.lag')].map(c => c.textContent)"
        ".filter(t => t.endsWith('records'))") or (d.refresh() and None), secs=60)
    assert text_by_id(d, "ledger-dead-letters") == "none", text_by_id(d, "ledger-dead-letters")
    seen["reconcile_shown"] = text_by_id(d, "ledger-reconcile")
    assert seen["reconcile_shown"].startswith("agreed"), seen["reconcile_shown"]
    seen["consumer_lag"] = lags[0]
    seen["ledger_state"] = state


def names_listed(d):
    return d.execute_script("return [...document.querySelectorAll('#entities tbody th.name')].map(c => c.textContent)")


def open_listed(d, route, run, name, shot):
    """The list of `route` searched for `run`; then the page of the one named `name`."""
    go(d, route, "#entity-list table, #entity-list p")
    box = d.find_element(By.ID, "entity-search")
    box.clear()
    box.send_keys(run)
    d.find_element(By.CSS_SELECTOR, "#entity-filter button[type=submit]").click()
    wait(d, f"{name!r} among the {route}", lambda d: name in names_listed(d))
    check_page(d, shot)
    link = d.execute_script(
        "return [...document.querySelectorAll('#entities tbody th.name a')].find(a => a.textContent === arguments[0])", name)
    link.click()
    wait(d, f"the page of {name!r}", EC.presence_of_element_located((By.ID, "entity-facts")))


def teams(d, t, run):
    aliases = [f"{h} {run}" for h in HOSTILE]
    open_listed(d, "teams", run, aliases[1], "teams")
    heading = text_by_id(d, "entity-name")
    assert heading == f"Team: {aliases[1]}", heading
    assert not d.find_elements(By.CSS_SELECTOR, "main img, main script"), "a team alias became an element"
    no_alert(d)
    open_listed(d, "teams", run, aliases[0], "teams")
    roles = d.execute_script("return [...document.querySelectorAll('#members tbody tr')].map(r => [r.querySelector('th').textContent, r.querySelector('td.role').textContent])")
    assert roles == [[t["user"], "admin"]], f"the team's members: {roles}"
    wait(d, "the burn-down canvas", EC.presence_of_element_located((By.CSS_SELECTOR, "#burn-down canvas")))
    deadline = time.time() + 90
    while text_by_id(d, "burn-down-summary").startswith("$0.00 of"):
        assert time.time() < deadline, f"the burn-down never showed the team's spend: {text_by_id(d, 'burn-down-summary')}"
        time.sleep(2)  # the consumer folds in batches; load the page again
        d.refresh()
        wait(d, "the burn-down", EC.presence_of_element_located((By.CSS_SELECTOR, "#burn-down canvas")))
    seen["team_members"] = roles
    seen["burn_down"] = text_by_id(d, "burn-down-summary")
    check_page(d, "team")


def others(d, t, run):
    open_listed(d, "customers", run, t["customers"][0], "customers")
    assert text_by_id(d, "entity-name") == f"Customer: {t['customers'][0]}", text_by_id(d, "entity-name")
    assert not d.find_elements(By.CSS_SELECTOR, "main img, main script"), "a customer id became an element"
    no_alert(d)
    check_page(d, "customer")
    open_listed(d, "users", run, t["user"], "users")
    teams = d.execute_script("return [...document.querySelectorAll('#entity-teams a')].map(a => a.textContent).sort()")
    assert teams == sorted(t["teams"]), f"the user's teams: {teams}"
    check_page(d, "user")
    open_listed(d, "organizations", run, f"Org {run}", "organizations")
    members = d.execute_script("return [...document.querySelectorAll('#members tbody th')].map(c => c.textContent)")
    assert members == [t["user"]], f"the organization's members: {members}"
    check_page(d, "organization")
    seen["entity_pages"] = True


def models(d):
    go(d, "models", "#models")
    states = d.execute_script(
        "return [...document.querySelectorAll('#models tbody tr')].map(r => [r.querySelector('th.model').textContent, r.querySelector('td.state').textContent])")
    assert ["gpt-4o-mini", "healthy"] in states, f"the models page: {states}"
    check_page(d, "models")
    seen["models"] = states


def request_detail(d, alias):
    go(d, "logs", "#logs-out table, #logs-out p")
    row = wait(d, "a request of the key", lambda d: d.execute_script(
        "return [...document.querySelectorAll('#logs tbody tr')].find(r => r.querySelector('td.alias')?.textContent === arguments[0]) ?? null", alias))
    spend = row.find_element(By.CSS_SELECTOR, "td.spend").text
    row.find_element(By.CSS_SELECTOR, "button.detail").click()
    detail = wait(d, "the request's detail", EC.presence_of_element_located((By.CSS_SELECTOR, "#logs tr.detail-row")))
    assert "Request id" in detail.text and "Provider" in detail.text, detail.text
    total = detail.find_elements(By.CSS_SELECTOR, ".cost-total")
    assert total and total[0].text == spend, f"the cost breakdown's total against the row's {spend}: {detail.text}"
    seen["request_detail_total"] = spend
    check_page(d, "request-detail")


def open_detail(d, find, alias):
    """Opens the detail of the logs' row of `alias`; False when no row is shown, or the list
    was redrawn under the click (a poll's answer replacing it): the caller looks again."""
    try:
        row = d.execute_script(find, alias)
        if row is None:
            return False
        row.find_element(By.CSS_SELECTOR, "button.detail").click()
        return True
    except StaleElementReferenceException:
        return False


def attempt_chain(d, run):
    """A request to a model whose deployment always fails: its detail on Spend logs shows the
    chain, the first try and two retries refused with 500, then the fallback served."""
    key = admin("/key/generate", {"key_alias": f"chain-{run}"})["key"]
    client = openai.OpenAI(base_url=f"{BASE}/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.create(model="console-broken",
                                            messages=[{"role": "user", "content": "secret prompt of the chain"}])
    assert answer.usage.total_tokens > 0, answer
    go(d, "logs", "#logs-out table, #logs-out p")
    find = ("return [...document.querySelectorAll('#logs tbody tr')]"
            ".find(r => r.querySelector('td.alias')?.textContent === arguments[0]) ?? null")
    deadline = time.time() + 60
    while not open_detail(d, find, f"chain-{run}"):
        assert time.time() < deadline, "the chain's request never reached the spend logs"
        time.sleep(2)  # the event ledger is written by the consumer; poll again
        d.find_element(By.CSS_SELECTOR, "#logs-filter button[type=submit]").click()
        wait(d, "the spend logs", EC.presence_of_element_located((By.CSS_SELECTOR, "#logs-out table, #logs-out p")))
    table = wait(d, "the attempt chain", EC.presence_of_element_located((By.CSS_SELECTOR, "#logs tr.detail-row table.attempts")))
    rows = d.execute_script(
        "return [...arguments[0].querySelectorAll(':scope > tbody > tr')].map(r => [...r.children].map(c => c.textContent))", table)
    assert [r[1] for r in rows] == ["console-broken"] * 3 + ["gpt-4o-mini"], rows
    assert [r[4] for r in rows] == ["first", "retry", "retry", "fallback to another model group"], rows
    assert [r[5] for r in rows] == ["error 500"] * 3 + ["ok 200"], rows
    assert all(r[6].endswith(" ms") for r in rows), rows
    assert "Attempts (4)" in table.text, table.text
    detail = d.find_element(By.CSS_SELECTOR, "#logs tr.detail-row")
    assert "secret prompt" not in detail.text and "/status/500" not in detail.text, detail.text
    seen["attempt_chain"] = rows
    check_page(d, "request-attempts")


def teams_by_spend(d, run):
    """The Overview's teams by spend this month: this run's first team, which spent, is shown
    with its own budget (looked up by id, however many teams there are)."""
    alias = f"{HOSTILE[0]} {run}"
    rows = ("return [...document.querySelectorAll('main table:not(#ledger-consumers) tbody tr')]"
            ".map(r => [...r.children].map(c => c.textContent))")

    def shown(d):
        hit = [r for r in d.execute_script(rows) if r[0] == alias]
        return hit[0] if hit else (d.refresh() and None)
    cells = wait(d, "this run's first team among the teams by spend", shown, secs=60)
    assert cells[2].startswith("$5.") and cells[3].endswith(" %"), f"its budget and share: {cells}"
    seen["overview_team_budget"] = cells[2]


def new_pages(d, run, alias):
    """Every new page, on this run's own tenants; `alias` is a key with requests in the logs."""
    os.makedirs(DOWNLOADS, exist_ok=True)
    d.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": DOWNLOADS})
    t = tenants(run)
    ledger_health(d)
    check_page(d, "overview-health")
    teams_by_spend(d, run)
    usage_and_csv(d, t)
    teams(d, t, run)
    others(d, t, run)
    models(d)
    request_detail(d, alias)
    attempt_chain(d, run)
