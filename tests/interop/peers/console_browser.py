#!/usr/bin/env python3
"""The web console in Debian's Chromium, driven by Playwright (PyPI; the browser
is Debian's, passed as executable_path, nothing is downloaded).

Usage: console_browser.py READY_JSON SCREENSHOT_DIR AXE_JS

READY_JSON is what `palisade demo --ready-file` wrote (URL, sign-ins). The
script signs in, walks every page (a screenshot of each, axe-core on each),
quarantines a device, acknowledges an alert, pauses a rollout, checks that
hostile text renders as text, that an auditor sees no action and that forged
or cross-origin POSTs are refused. It prints one JSON line with what it did
and exits non-zero listing every failed check.
"""

import json
import os
import pathlib
import re
import sys
import time

from playwright.sync_api import sync_playwright

READY = json.load(open(sys.argv[1]))
OUT = pathlib.Path(sys.argv[2])
AXE = open(sys.argv[3]).read()
URL = READY["url"].rstrip("/")
ORIGIN = URL
# Text the test seeded into the fleet (model description, a device's reported
# firmware) or types into forms (a sign-in name, a bulk tag): it must show as
# text, never run.
PAYLOADS = {
    "model": "<script>window.__xss='model'</script>",
    "firmware": "<img src=x onerror=\"window.__xss='telemetry'\">",
    "login": "\"><img src=x onerror=window.__xss='alert'>",
    "tag": "<svg onload=window.__xss='tag'>",
}

failures = []
done = {"pages": [], "axe": {}, "actions": []}
OUT.mkdir(parents=True, exist_ok=True)


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def guard(page, name):
    """Fails the run if a dialog opens or script from the page's data runs."""
    page.on("dialog", lambda d: (check(False, f"{name}: a dialog opened: {d.message}"), d.dismiss()))


def no_script_ran(page, where):
    ran = page.evaluate("() => window.__xss || null")
    check(ran is None, f"{where}: injected script ran ({ran})")
    check(page.locator("img[src=x]").count() == 0, f"{where}: an injected <img> became an element")


def axe(page, name):
    # axe-core is evaluated through the DevTools protocol, which the page's
    # CSP (script-src 'self') does not govern.
    page.evaluate(AXE)
    result = page.evaluate(
        "async () => { const r = await axe.run(document, {resultTypes: ['violations']});"
        " return r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length,"
        " target: v.nodes[0] && v.nodes[0].target.join(' ')})); }"
    )
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    done["axe"][name] = [f"{v['id']}:{v['impact']}" for v in result]
    check(not bad, f"axe-core on {name}: {bad}")


def shoot(page, name):
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)


def visit(page, name, path, expect_status=200):
    r = page.goto(URL + path)
    check(r is not None and r.status == expect_status, f"{name} ({path}): HTTP {r.status if r else None}")
    csp = (r.headers.get("content-security-policy") or "") if r else ""
    check("script-src 'self'" in csp and "frame-ancestors 'none'" in csp, f"{name}: CSP header {csp!r}")
    check("unsafe-inline" not in csp, f"{name}: CSP allows inline script")
    no_script_ran(page, name)
    shoot(page, name)
    axe(page, name)
    done["pages"].append(name)
    return r


def sign_in(page, who):
    page.goto(URL + "/login")
    page.fill("input[name=name]", READY[who]["name"])
    page.fill("input[name=password]", READY[who]["password"])
    page.click("button[type=submit]")
    check(page.url.rstrip("/") == URL, f"{who} sign-in landed on {page.url}")


def csrf_of(page):
    return page.locator("input[name=csrf]").first.get_attribute("value")


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
        args=["--no-sandbox", "--disable-gpu"],
    )
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    guard(page, "admin")

    # Signed out, every page is the sign-in page.
    for path in ["/", "/devices", "/audit", "/posture"]:
        page.goto(URL + path)
        check(page.url.startswith(URL + "/login"), f"signed out, {path} showed {page.url}")
    shoot(page, "00-sign-in")
    axe(page, "sign-in")
    # A sign-in without the form's token, and one from another origin.
    r = ctx.request.post(URL + "/login", form={"name": "demo", "password": "x" * 12, "csrf": "forged"})
    check(r.status == 403, f"sign-in without its token: HTTP {r.status}")
    # Hostile sign-in names: refused, counted by the failed-login detector,
    # and later shown (as text) in the alert and the audit log.
    for _ in range(9):
        page.goto(URL + "/login")
        page.fill("input[name=name]", PAYLOADS["login"])
        page.fill("input[name=password]", "not the password at all")
        page.click("button[type=submit]")
    check("wrong name or password" in page.content() or "too many" in page.content(),
          "a wrong password did not say so")
    no_script_ran(page, "refused sign-in")

    sign_in(page, "admin")
    devices = page.goto(URL + "/devices?model=camera")
    first = page.locator("table tbody tr td a[href^='/devices/cam-']").first.get_attribute("href")
    device = first.split("/")[-1]

    walk = [
        ("01-overview", "/"),
        ("02-devices", "/devices"),
        ("03-devices-filtered", "/devices?model=thermostat&sort=firmware&dir=desc"),
        ("04-device", f"/devices/{device}"),
        ("05-alerts", "/alerts"),
        ("06-rollouts", "/rollouts"),
        ("07-rollout", "/rollouts/thermostat-1.1.0"),
        ("08-releases", "/releases"),
        ("09-sites", "/sites"),
        ("09u-unmanaged", "/sites/plant-north/unmanaged"),
        ("10-certificates", "/certificates"),
        ("10s-suppliers", "/suppliers"),
        ("11-audit", "/audit"),
        ("12-posture", "/posture"),
        ("13-posture-etsi", "/posture?framework=etsi-en-303-645"),
        ("14-posture-failing", "/posture?framework=checklist&control=CL1"),
        ("15-xss-device", "/devices/xss-0001"),
        ("16-xss-models", "/devices?model=xss-model"),
        ("17-audit-verified", "/audit?verify=1"),
    ]
    for name, path in walk:
        visit(page, name, path)
    check("intact" in page.content(), "the audit log did not verify as intact")
    # The seeded hostile text is on the pages, as text.
    page.goto(URL + "/devices/xss-0001")
    check(PAYLOADS["firmware"] in page.inner_text("main"), "the hostile firmware string is not shown as text")
    check(PAYLOADS["model"] in page.inner_text("main"), "the hostile model description is not shown as text")
    page.goto(URL + "/devices?model=xss-model")
    check(page.locator("td a", has_text="xss-0001").count() == 1, "the hostile model's device is not listed")
    # The failed-login alert carries the hostile sign-in name (it may take the
    # detector a moment).
    for _ in range(30):
        page.goto(URL + "/alerts")
        if PAYLOADS["login"] in page.inner_text("main"):
            break
        time.sleep(1)
    check(PAYLOADS["login"] in page.inner_text("main"), "the hostile sign-in name is not in an alert, as text")
    no_script_ran(page, "alerts with hostile text")
    shoot(page, "18-xss-alerts")
    page.goto(URL + "/audit")
    check(PAYLOADS["login"] in page.inner_text("main"), "the hostile sign-in name is not in the audit log, as text")
    no_script_ran(page, "audit with hostile text")

    # Quarantine a device, with confirmation.
    page.goto(URL + f"/devices/{device}")
    page.click("a:has-text('Quarantine')")
    shoot(page, "19-confirm-quarantine")
    check("Quarantine" in page.inner_text("main"), "no confirmation before quarantine")
    page.click("button:has-text('Confirm')")
    check(page.url.endswith(f"/devices/{device}"), f"after quarantine: {page.url}")
    check("quarantined" in page.inner_text("main"), "the device page does not show the quarantine")
    done["actions"].append(f"quarantined {device}")

    # Acknowledge an alert with a note.
    page.goto(URL + "/alerts")
    alert = page.locator("form[action$='/ack']").first
    alert_id = alert.get_attribute("action").split("/")[2]
    alert.locator("input[name=note]").fill("looking into it from the console")
    alert.locator("button").click()
    done["actions"].append(f"acknowledged {alert_id}")
    page.goto(URL + "/alerts?state=acknowledged")
    check(alert_id in page.content(), "the acknowledged alert is not listed as acknowledged")

    # Pause the rollout.
    page.goto(URL + "/rollouts/thermostat-1.1.0")
    if page.locator("button:has-text('Pause')").count():
        page.click("button:has-text('Pause')")
        check("paused" in page.inner_text("main"), "the rollout page does not show the pause")
        done["actions"].append("paused thermostat-1.1.0")
    else:
        check(False, "the rollout offers no Pause (state: %s)" % page.inner_text("main")[:200])

    # Unmanaged devices the edge reported: block the laptop, adopt the camera.
    page.goto(URL + "/sites/plant-north/unmanaged")
    body = page.inner_text("main")
    check("10.20.1.77" in body and "tech-laptop" in body and "IPCAM-9E01" in body,
          f"the unmanaged devices are not listed: {body[:400]}")
    page.locator("form[action='/sites/plant-north/unmanaged/10.20.1.77/block'] button").click()
    check(page.url.endswith("/sites/plant-north/unmanaged"), f"after block: {page.url}")
    adopt = page.locator("form[action='/sites/plant-north/unmanaged/10.20.2.201/adopt']")
    adopt.locator("input[name=device]").fill("cam-found-1")
    adopt.locator("select[name=model]").select_option("camera")
    adopt.locator("button").click()
    body = page.inner_text("main")
    check("blocked" in body and "adopted as cam-found-1" in body, f"after block and adopt: {body[:400]}")
    shoot(page, "19u-unmanaged-decided")
    done["actions"].append("blocked 10.20.1.77, adopted 10.20.2.201 as cam-found-1")

    # Decommission the hostile-text device, with confirmation: the device page
    # then says who did it, why and what is known of its wipe; posture counts it.
    page.goto(URL + "/devices/xss-0001")
    page.click("a:has-text('Decommission'):not(:has-text('wipe'))")
    check("leaves its site" in page.inner_text("main"), "no confirmation before decommissioning")
    page.click("button:has-text('Confirm')")
    body = page.inner_text("main")
    check("decommissioned" in body and "Decommissioning" in body and "wipe: not requested" in body,
          f"the device page does not show the decommissioning: {body[:400]}")
    check("Not assessed" in body, "a decommissioned device is still judged for posture")
    shoot(page, "19d-decommissioned")
    done["actions"].append("decommissioned xss-0001")
    page.goto(URL + "/posture")
    check("decommissioned: wipe verified 0, unconfirmed 0, pending 0, not requested 1" in page.inner_text("main"),
          "posture does not count the decommissioned device")

    # A bulk tag with hostile text: refused with a message that shows it as text.
    page.goto(URL + "/devices?model=camera")
    page.locator("input[name=devices]").nth(1).check()
    page.select_option("select[name=action]", "tag")
    page.fill("input[name=value]", PAYLOADS["tag"])
    page.click("button:has-text('Continue')")
    if page.locator("button:has-text('Confirm')").count():
        page.click("button:has-text('Confirm')")
    body = page.inner_text("main")
    check("tag" in body.lower() and ("not allowed" in body or "svg" in body), f"hostile tag: {body[:300]}")
    no_script_ran(page, "hostile tag")
    shoot(page, "20-hostile-tag")

    # A POST from another origin with the admin's own session and token.
    page.goto(URL + "/devices")
    token = csrf_of(page)
    r = ctx.request.post(URL + f"/devices/{device}/action",
                         form={"csrf": token, "action": "release"},
                         headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    check(r.status == 403, f"cross-origin POST: HTTP {r.status}")
    r = ctx.request.post(URL + f"/devices/{device}/action", form={"csrf": "0" * 48, "action": "release"})
    check(r.status == 403, f"POST with a wrong CSRF token: HTTP {r.status}")
    r = ctx.request.post(URL + f"/devices/{device}/action", form={"action": "release"})
    check(r.status in (400, 403, 422), f"POST without a CSRF token: HTTP {r.status}")
    # Absurd queries: clear 4xx or a page, never a 500.
    for q in ["/devices?page=1000000000", "/devices?q=" + "A" * 10240, "/devices?sort=nonsense",
              "/devices?state=%F0%9F%92%A3", "/devices/..%2F..%2Fetc", "/audit?entry=99999999999",
              "/posture?framework=iso-9001", "/rollouts/%E2%80%AEevil"]:
        r = page.goto(URL + q)
        check(r is not None and r.status < 500, f"{q[:60]}: HTTP {r.status if r else None}")
        check("panicked" not in page.content() and "RUST_BACKTRACE" not in page.content(), f"{q[:60]}: a stack trace")
    # A forged or expired session cookie is a sign-in, not an error.
    c2 = browser.new_context(ignore_https_errors=True)
    c2.add_cookies([{"name": "palisade_session", "value": "A" * 43, "url": URL}])
    p2 = c2.new_page()
    p2.goto(URL + "/devices")
    check(p2.url.startswith(URL + "/login"), f"forged session cookie: {p2.url}")
    c2.close()

    # Sign out: the session ends on the server.
    cookie = [c for c in ctx.cookies() if c["name"] == "palisade_session"][0]
    page.goto(URL + "/")
    page.click("button:has-text('Sign out')")
    check(page.url.startswith(URL + "/login"), f"after sign-out: {page.url}")
    c3 = browser.new_context(ignore_https_errors=True)
    c3.add_cookies([{"name": cookie["name"], "value": cookie["value"], "url": URL}])
    p3 = c3.new_page()
    p3.goto(URL + "/")
    check(p3.url.startswith(URL + "/login"), "a signed-out session still worked")
    c3.close()

    # The auditor reads everything and can change nothing.
    actx = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
    apage = actx.new_page()
    guard(apage, "auditor")
    sign_in(apage, "auditor")
    for name, path in [("21-auditor-device", f"/devices/{device}"), ("22-auditor-alerts", "/alerts"),
                       ("23-auditor-rollout", "/rollouts/thermostat-1.1.0"), ("24-auditor-devices", "/devices"),
                       ("25-auditor-unmanaged", "/sites/plant-north/unmanaged")]:
        apage.goto(URL + path)
        forms = apage.locator("main form[method=post]").count()
        links = apage.locator("main a[href*='/confirm']").count()
        check(forms == 0 and links == 0, f"auditor sees {forms} action forms and {links} action links on {path}")
        shoot(apage, name)
    token = csrf_of(apage)
    r = actx.request.post(URL + f"/devices/{device}/action", form={"csrf": token, "action": "release"})
    check(r.status == 403, f"auditor's POST: HTTP {r.status}")
    r = actx.request.post(URL + "/rollouts/thermostat-1.1.0/resume", form={"csrf": token})
    check(r.status == 403, f"auditor's rollout POST: HTTP {r.status}")
    done["device"] = device
    done["alert"] = alert_id
    browser.close()

print(json.dumps({"failures": failures, **done}))
sys.exit(1 if failures else 0)
