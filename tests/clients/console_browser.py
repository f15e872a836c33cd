"""Drives the controller's web console in headless Chromium (Debian's, through Playwright).

Usage: console_browser.py SPEC.json

SPEC: {"url", "chromium", "edgefleet", "admin", "operator", "viewer", "screenshots" (a directory
or null), "drifted": [features], "steady": [features]}. Signs in, compares the overview with the
API, watches a rollout started from the CLI advance live, fails a gate and aborts the rollout from
the page, checks a viewer sees no action buttons and that forged POSTs are refused, and that the
drift page flags the drifted features first; no console errors and no request to another origin.
Prints one JSON line of what it measured; exits non-zero on the first failed check.
"""

import json
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright

spec = json.load(open(sys.argv[1]))
BASE = spec["url"].rstrip("/")
ORIGIN = "{0.scheme}://{0.netloc}".format(urlsplit(BASE))
measured = {}
problems = []
# Requests this script makes to be refused (the forged POSTs, the one after signing out).
PROVOKED = [("/abort", 403), ("/api/v1/overview", 401)]


def check(what, ok, detail=""):
    if not ok:
        raise SystemExit(f"FAILED: {what} {detail}")


def api(path, token=spec["admin"]):
    req = urllib.request.Request(BASE + "/api/v1" + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def cli(*args):
    out = subprocess.run(
        [spec["edgefleet"], "--controller", BASE, "--token", spec["admin"], "--output", "json", *args],
        capture_output=True, text=True, timeout=60)
    check(f"edgefleet {' '.join(args)}", out.returncode == 0, out.stderr)
    return json.loads(out.stdout)


def until(what, fn, secs=60, every=0.2):
    deadline = time.time() + secs
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"FAILED: timed out waiting for {what}")


def watch(page, label):
    """Records console errors, page errors and every request's origin."""
    def console(m):
        # The refusals this script provokes on purpose are logged by the browser too.
        url = (m.location or {}).get("url", "")
        if m.type == "error" and not any(url.endswith(suffix) and str(status) in m.text for suffix, status in PROVOKED):
            problems.append(f"{label} console: {m.text} ({url})")

    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(f"{label} page error: {e}"))

    def request(r):
        if not r.url.startswith(("data:", "blob:")) and "{0.scheme}://{0.netloc}".format(urlsplit(r.url)) != ORIGIN:
            problems.append(f"{label} requested another origin: {r.url}")

    page.on("request", request)


def shot(page, name):
    if spec.get("screenshots"):
        page.screenshot(path=f"{spec['screenshots']}/{name}.png", full_page=False)


def sign_in(context, token, label):
    page = context.new_page()
    watch(page, label)
    page.goto(BASE + "/ui/")
    page.wait_for_selector("#signin")
    shot(page, "sign-in") if label == "operator" else None
    page.fill("#token", token)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#overview .stat")
    return page


def text(page, selector):
    return page.locator(selector).first.inner_text(timeout=10_000).strip()


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=spec["chromium"], headless=True,
                                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
    ops = browser.new_context(viewport={"width": 1280, "height": 800})
    page = sign_in(ops, spec["operator"], "operator")

    # The session is an HttpOnly, SameSite=Strict cookie; the token is in no URL and no script can read it.
    cookie = next(c for c in ops.cookies() if c["name"] == "edgefleet_session")
    check("cookie flags", cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie)
    check("cookie hidden from scripts", "edgefleet_session" not in page.evaluate("document.cookie"))
    check("no token in the URL", spec["operator"] not in page.url)
    csp = page.request.get(BASE + "/ui/").headers.get("content-security-policy", "")
    check("CSP forbids inline script", "script-src 'self'" in csp and "unsafe-inline" not in csp, csp)

    # Overview numbers equal the API's.
    overview = api("/overview")
    online = len(api("/devices?state=online"))
    until("overview online count", lambda: text(page, "[data-stat=online] .stat-value") == str(online))
    check("offline count", text(page, "[data-stat=offline] .stat-value") == str(overview["offline"]))
    for v in overview["in_service"]:
        bar = page.locator(f"[data-model='{v['model']}'] .bar[data-label='v{v['version']}']")
        check("versions in service", bar.get_attribute("data-value") == str(v["devices"]), v)
    measured["overview"] = {"online": online, "in_service": overview["in_service"]}
    shot(page, "overview")

    # Page weight and time to first render of the overview, on loopback, with an empty cache.
    fresh = browser.new_context(viewport={"width": 1280, "height": 800}, storage_state=ops.storage_state())
    cold = fresh.new_page()
    watch(cold, "cold")
    cold.goto(BASE + "/ui/")
    cold.wait_for_selector("#overview .stat")
    perf = cold.evaluate("""() => {
        const nav = performance.getEntriesByType('navigation')[0];
        const res = performance.getEntriesByType('resource');
        const fcp = performance.getEntriesByName('first-contentful-paint')[0];
        return {bytes: nav.decodedBodySize + res.reduce((a, r) => a + r.decodedBodySize, 0),
                requests: 1 + res.length, first_contentful_paint_ms: fcp ? fcp.startTime : null,
                dom_content_loaded_ms: nav.domContentLoadedEventEnd};
    }""")
    measured["overview_load"] = perf
    fresh.close()

    # The drift page of the drifted version flags the drifted features, first.
    page.goto(BASE + "/ui/drift/iris/1")
    drifted = set(spec["drifted"])

    def flagged():
        cards = page.locator("[data-feature]")
        statuses = [(cards.nth(i).get_attribute("data-feature"), cards.nth(i).get_attribute("data-status"))
                    for i in range(cards.count())]
        got = {f for f, s in statuses if s == "drift"}
        return statuses if got == drifted else None

    statuses = until("the drifted features flagged", flagged, secs=60, every=0.5)
    check("flagged first", [f for f, _ in statuses[:len(drifted)]] and {f for f, _ in statuses[:len(drifted)]} == drifted, statuses)
    check("steady features not flagged", all(s != "drift" for f, s in statuses if f in spec["steady"]), statuses)
    page.wait_for_selector("#retrain-requests a", timeout=60_000)
    snapshot = page.locator("#retrain-requests a").first.get_attribute("href")
    check("snapshot downloads", page.request.get(BASE + snapshot).status == 200, snapshot)
    measured["drift"] = statuses
    shot(page, "drift")

    # A rollout started from the CLI: its waves advance on the page without a reload.
    created = cli("rollout", "create", "iris:2", "--selector", "group=lab", "--waves", "34,67,100",
                  "--bake", "2s", "--gate", "error_rate<0.05", "--min-requests", "5")
    rid = created["id"]
    page.goto(f"{BASE}/ui/rollouts/{rid}")
    page.wait_for_selector("#waves")
    navigations = []
    page.on("framenavigated", lambda f: f == page.main_frame and navigations.append(f.url))
    waves = []

    def completed():
        wave = text(page, "#current-wave")
        if not waves or waves[-1] != wave:
            waves.append(wave)
        return "completed" in text(page, "main p")

    until("the rollout to complete on the page", completed, secs=120)
    check("waves advanced live", len(waves) >= 2 and waves == sorted(waves), waves)
    check("no reload while watching", navigations == [], navigations)
    measured["live_waves"] = waves
    shot(page, "rollout")

    # A failing gate shows its measured value against its threshold; the operator aborts.
    failing = cli("rollout", "create", "iris:3", "--selector", "group=lab", "--waves", "34,100", "--bake", "1s",
                  "--gate", "p99_ms<0.0001", "--min-requests", "5", "--on-fail", "pause")
    fid = failing["id"]
    page.goto(f"{BASE}/ui/rollouts/{fid}")
    row = page.locator("#gates tr", has_text="p99_ms<0.0001")
    until("the gate to fail on the page", lambda: row.count() and "failed" in row.first.inner_text(), secs=90)
    value = float(row.first.locator(".gate-value").inner_text())
    check("measured value above the threshold", value > 0.0001, value)
    check("reason shown", "p99_ms" in text(page, "#rollout-reason"))
    check("operator sees the actions", page.locator("#abort").count() == 1)
    measured["failed_gate_value_ms"] = value

    # A viewer sees no action buttons, and a POST it forges is refused; so is one without the CSRF token.
    viewers = browser.new_context(viewport={"width": 390, "height": 844})
    vpage = sign_in(viewers, spec["viewer"], "viewer")
    width = vpage.evaluate("document.documentElement.scrollWidth")
    check("overview fits a phone", width <= 390, width)
    for path, ready in [("/ui/devices", "#device-table"), ("/ui/models/iris", "#lineage"), ("/ui/drift/iris/1", "#features"),
                        (f"/ui/rollouts/{fid}", "#gates")]:
        vpage.goto(BASE + path)
        vpage.wait_for_selector(ready)
        width = vpage.evaluate("document.documentElement.scrollWidth")
        check(f"{path} fits a phone (tables scroll inside their card)", width <= 390, width)
    check("viewer sees no action buttons", vpage.locator("#rollout-actions, #abort, #pause, #resume").count() == 0)
    forged = vpage.evaluate("""async (id) => {
        const s = await (await fetch('/api/v1/sessions/current')).json();
        const r = await fetch(`/api/v1/rollouts/${id}/abort`, {method: 'POST', headers: {'X-CSRF-Token': s.csrf}});
        return [r.status, (await r.json()).error];
    }""", fid)
    check("viewer's forged POST refused", forged[0] == 403, forged)
    no_csrf = page.evaluate("""async (id) => {
        const r = await fetch(`/api/v1/rollouts/${id}/abort`, {method: 'POST'});
        return [r.status, (await r.json()).error];
    }""", fid)
    check("a POST without the CSRF token refused", no_csrf[0] == 403, no_csrf)
    check("still paused after the forged POSTs", api(f"/rollouts/{fid}")["state"] == "paused")
    shot(page, "rollout-failed-gate")
    page.click("#abort")
    page.click("#confirm-abort")
    until("the abort", lambda: api(f"/rollouts/{fid}")["state"] == "aborted", secs=20)
    until("the page to show it aborted", lambda: "aborted" in text(page, "main p"), secs=10)
    measured["refused"] = {"viewer": forged, "no_csrf": no_csrf}

    # Every other page renders (and is captured).
    for name, path, selector in [("devices", "/ui/devices", "#device-table"), ("models", "/ui/models", "#model-table"),
                                 ("model", "/ui/models/iris", "#lineage"), ("rollouts", "/ui/rollouts", "#rollout-table")]:
        page.goto(BASE + path)
        page.wait_for_selector(selector)
        shot(page, name)
    device = api("/devices")[0]["id"]
    page.goto(f"{BASE}/ui/devices/{device}")
    page.wait_for_selector("#active-version")
    shot(page, "device")

    # Signing out ends the session: the cookie no longer works.
    page.click("#signout")
    page.wait_for_selector("#signin")
    status = page.evaluate("async () => (await fetch('/api/v1/overview')).status")
    check("signed out", status == 401, status)
    browser.close()

check("no console errors or other origins", not problems, problems)
print(json.dumps(measured))
