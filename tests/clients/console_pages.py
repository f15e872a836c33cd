"""Visits every console page in headless Chromium and reports, per page, the time from navigation
to its content on screen and the bytes it loaded (empty cache); with --screenshots DIR also keeps
a 1280×800 screenshot of each. Used for the screenshots in docs/console/ (from the demo's data)
and by controller/benches/console_scale.sh (10,000 simulated devices).

Usage: console_pages.py URL TOKEN [--chromium PATH] [--screenshots DIR]
Prints one JSON object: {page: {"first_paint_ms", "content_ms" (navigation start to the page's
content on screen, in the page's clock), "bytes" (everything it loaded), "requests"}}.
"""

import argparse
import json
import urllib.request

from playwright.sync_api import sync_playwright

parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("token")
parser.add_argument("--chromium", default="/usr/bin/chromium")
parser.add_argument("--screenshots")
args = parser.parse_args()
base = args.url.rstrip("/")


def api(path):
    req = urllib.request.Request(f"{base}/api/v1{path}", headers={"Authorization": f"Bearer {args.token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


models = api("/models")
model = models[0]["name"] if models else None
version = models[0]["versions"][0] if models else None
devices = api("/devices?limit=1")
rollouts = api("/rollouts")
pages = [("overview", "/ui/", "#overview .stat"), ("devices", "/ui/devices", "#device-table")]
if devices:
    pages.append(("device", f"/ui/devices/{devices[0]['id']}", "#active-version"))
pages += [("models", "/ui/models", "#model-table")]
if model:
    pages.append(("model", f"/ui/models/{model}", "#lineage"))
pages.append(("rollouts", "/ui/rollouts", "#rollouts table, #rollouts p"))
if rollouts:
    pages.append(("rollout", f"/ui/rollouts/{rollouts[-1]['id']}", "#waves"))
pages.append(("drift-models", "/ui/drift", "#drift-models"))
if model:
    drifted = max(models[0]["versions"], key=lambda v: len(api(f"/models/{model}/versions/{v}/drift")["features"]))
    pages.append(("drift", f"/ui/drift/{model}/{drifted}", "#features"))

out = {}
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=args.chromium, headless=True,
                                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
    signed = browser.new_context(viewport={"width": 1280, "height": 800})
    page = signed.new_page()
    page.goto(base + "/ui/")
    page.wait_for_selector("#signin")
    if args.screenshots:
        page.screenshot(path=f"{args.screenshots}/sign-in.png")
    page.fill("#token", args.token)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#overview .stat")
    if args.screenshots:
        for name, path, ready in pages:
            page.goto(base + path)
            page.wait_for_selector(ready, timeout=60_000)
            page.wait_for_timeout(300)
            page.screenshot(path=f"{args.screenshots}/{name}.png")
    # Its live refreshes must not weigh on the timings below.
    page.goto("about:blank")
    state = signed.storage_state()
    for name, path, ready in pages:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, storage_state=state)
        cold = context.new_page()
        cold.goto(base + path)
        cold.wait_for_selector(ready, timeout=60_000)
        # In the page's own clock, from the start of navigation: first paint, and the content there.
        out[name] = cold.evaluate("""() => {
            const nav = performance.getEntriesByType('navigation')[0];
            const res = performance.getEntriesByType('resource');
            const fcp = performance.getEntriesByName('first-contentful-paint')[0];
            return {first_paint_ms: fcp ? Math.round(fcp.startTime) : null, content_ms: Math.round(performance.now()),
                    bytes: nav.decodedBodySize + res.reduce((a, r) => a + r.decodedBodySize, 0), requests: 1 + res.length};
        }""")
        context.close()
    browser.close()
print(json.dumps(out))
