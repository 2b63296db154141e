"""The web dashboard (docs/admin-api.md, "The dashboard"), driven in a real
browser: Debian's headless Chromium through chromedriver (selenium), against
`toolgate serve` in front of the probe server, with the Python SDK's MCP
client as the agent.

- a wrong token is refused, and the page says so;
- the catalogue lists the probe server's tools with their risk classes;
- a deny rule built in the policy builder (validated as it is edited, with
  the messages of `toolgate validate`), reviewed as a diff and saved: the file
  on disk changes, the running gateway reloads it, and the agent's next call
  is refused with the rule's reason without reaching the server;
- a call held by `require_approval` appears in the Approvals tab without a
  reload; approved in the page, the agent's call completes; denied with a
  reason, the agent sees the refusal;
- the traffic tab shows the calls, and its filter works.

Screenshots of the main pages are kept in target/screenshots/.

`toolgate ui` (the dashboard on its own) is driven over HTTP: it scans the
config's servers, and what it saves, a running `toolgate serve` on the same
files puts in force.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from conftest import LEGACY, REPO, RawGateway, run_toolgate, wait_for, wait_listening
from mcp.shared.exceptions import MCPError
from servekit import free_port, probe_server

ADMIN_TOKEN = "dashboard-admin-token-0123456789"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = REPO / "target" / "screenshots"
# How long the page may take to show something before the test calls it stuck.
PAGE_TIMEOUT = 20

POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "probe__echo": {},
        "probe__send_text": {
            "limits": [{"counter": "probe__send_text_rate", "window": "minute", "max": 30, "scope": "grant"}]
        },
        "probe__transfer": {
            "action": "require_approval",
            "reason": "money leaves the account",
            "approval": {"via": ["admin"], "hold": "60s", "expires": "10m"},
        },
        "probe__delete_all": {"action": "hide"},
    },
}


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- the browser ------------------------------------------------------------------

@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing: `bash scripts/setup.sh` installs Debian's chromium and chromium-driver",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", "--window-size=1366,768",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    # The driver is given: selenium must not look for (or download) one.
    os.environ.setdefault("SE_OFFLINE", "true")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def until(driver, predicate, what: str):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page redraws lists as news arrives: an element read mid-redraw is
    # looked up again.
    wait = WebDriverWait(driver, PAGE_TIMEOUT, poll_frequency=0.05,
                         ignored_exceptions=[StaleElementReferenceException])
    try:
        return wait.until(lambda d: predicate(d))
    except TimeoutException:
        raise AssertionError(f"the page never showed {what}") from None


def by_id(driver, id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, id)


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def sign_in(driver, url: str, token: str = ADMIN_TOKEN) -> None:
    from selenium.webdriver.common.keys import Keys

    driver.get(url)
    field = until(driver, lambda d: by_id(d, "token") if by_id(d, "token").is_displayed() else None, "the sign-in form")
    field.send_keys(token + Keys.ENTER)  # the keyboard alone signs in


def signed_in(driver) -> None:
    until(driver, lambda d: by_id(d, "tabs").is_displayed(), "the tabs after sign-in")


def open_tab(driver, name: str) -> None:
    by_id(driver, f"tab-{name}").click()
    until(driver, lambda d: by_id(d, f"panel-{name}").is_displayed(), f"the {name} tab")


# --- the gateway ---------------------------------------------------------------------

def start_gateway(serve_factory, policy: dict[str, Any] | None = None):
    port = free_port()
    config = {
        "policy": "policy.json",
        "servers": {"probe": probe_server()},
        "admin": {"listen": f"127.0.0.1:{port}", "token_sha256": sha256_hex(ADMIN_TOKEN)},
    }
    gw = serve_factory(config, {"policy.json": policy or POLICY})

    wait_listening(port, what="the admin listener")
    return gw, f"http://127.0.0.1:{port}"


def api(admin: str, token: str = ADMIN_TOKEN) -> httpx2.Client:
    return httpx2.Client(base_url=admin, headers={"Authorization": f"Bearer {token}"}, timeout=15)


# --- tests -----------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_wrong_token_is_refused_and_the_page_says_so(serve_factory, browser):
    gw, admin = start_gateway(serve_factory)
    # The page needs no token (it holds no data) and comes with strict headers.
    with httpx2.Client(timeout=10) as http:
        page = http.get(f"{admin}/")
        assert page.status_code == 200 and "<title>toolgate dashboard</title>" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        # Its API does: without the token, or with another, nothing is said.
        for headers in ({}, {"Authorization": "Bearer not-the-admin-token"}):
            refused = http.get(f"{admin}/api/catalogue", headers=headers)
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["code"] == "unauthorized"
            assert "servers" not in refused.text
        assert http.get(f"{admin}/api/no-such-route").status_code == 401

    sign_in(browser, admin, token="not-the-admin-token-at-all")
    error = until(browser, lambda d: by_id(d, "signin-error") if by_id(d, "signin-error").is_displayed() else None,
                  "the sign-in error")
    assert "refused" in error.text and "not the admin token" in error.text
    assert not by_id(browser, "tabs").is_displayed()
    screenshot(browser, "signin-refused")

    # A token that stops working (rotated) sends the page back to sign-in with a message.
    sign_in(browser, admin)
    signed_in(browser)
    browser.execute_script("sessionStorage.setItem('toolgate-admin-token', 'an-old-token-that-was-rotated')")
    browser.refresh()
    until(browser, lambda d: by_id(d, "signin-error").is_displayed(), "the refused-token message after a reload")
    assert "401" in by_id(browser, "signin-error").text


@pytest.mark.timeout(120)
def test_the_catalogue_lists_the_servers_tools_with_their_risk(serve_factory, browser):
    gw, admin = start_gateway(serve_factory)
    from selenium.webdriver.common.keys import Keys

    sign_in(browser, admin)
    signed_in(browser)
    # The tabs work from the keyboard: arrows move between them.
    by_id(browser, "tab-catalogue").send_keys(Keys.ARROW_RIGHT)
    until(browser, lambda d: by_id(d, "panel-policy").is_displayed(), "the policy tab by keyboard")
    assert browser.switch_to.active_element.get_attribute("id") == "tab-policy"
    browser.switch_to.active_element.send_keys(Keys.ARROW_LEFT)
    until(browser, lambda d: by_id(d, "panel-catalogue").is_displayed(), "the catalogue tab by keyboard")
    def row(tool: str) -> str:
        # Read inside the wait: the list may be redrawn meanwhile.
        return until(browser, lambda d: css(d, f'tr[data-tool="{tool}"]')[0].text if css(d, f'tr[data-tool="{tool}"]') else None, tool)

    delete_all = row("probe__delete_all")
    assert "Destructive" in delete_all and ("HIGH" in delete_all.upper() or "CRITICAL" in delete_all.upper())
    assert "hide" in delete_all  # the rule in force
    transfer = row("probe__transfer")
    assert "Financial" in transfer and "CRITICAL" in transfer.upper()
    assert "require approval" in transfer
    assert "allow" in row("probe__echo")
    assert "ready" in by_id(browser, "catalogue").text
    screenshot(browser, "catalogue")

    with api(admin) as http:
        catalogue = http.get("/api/catalogue").json()
    [server] = catalogue["servers"]
    tools = {t["name"]: t for t in server["tools"]}
    assert tools["probe__delete_all"]["recommended"]["action"] == "require_approval"
    assert tools["probe__send_text"]["rules"][0]["rule"]["limits"][0]["max"] == 30
    assert tools["probe__extra_000"]["rules"][0]["effect"] == "default: deny"


@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_a_rule_built_and_saved_in_the_page_refuses_the_next_call(serve_factory, browser, toolgate_bin, tmp_path):
    from selenium.webdriver.support.ui import Select

    gw, admin = start_gateway(serve_factory)
    policy_path = gw.dir / "policy.json"
    before = policy_path.read_text()
    async with gw.client(LEGACY) as client:
        sent = await client.call_tool("probe__send_text", {"to": "+15550100", "body": "first"})
        assert not sent.is_error, sent

        def build_and_save() -> None:
            sign_in(browser, admin)
            signed_in(browser)
            until(browser, lambda d: css(d, 'tr[data-tool="probe__send_text"] button'), "the catalogue")
            # "Edit rule" in the catalogue opens the builder on that tool.
            css(browser, 'tr[data-tool="probe__send_text"] button')[0].click()
            until(browser, lambda d: by_id(d, "panel-policy").is_displayed(), "the policy tab")
            until(browser, lambda d: Select(by_id(d, "builder-tool")).first_selected_option.get_attribute("value") == "probe__send_text",
                  "send_text in the builder")
            until(browser, lambda d: "valid policy" in by_id(d, "validation").text, "the file's validation")

            # A mistake is reported as `toolgate validate` reports it, and cannot be saved.
            window = css(browser, "#limits .limit-window")[0]
            window.clear()
            window.send_keys("minite")
            until(browser, lambda d: "unknown window" in by_id(d, "validation").text, "the validation message")
            assert not by_id(browser, "review").is_enabled()
            shown = [li.text for li in css(browser, "#validation-messages li")]
            preview = by_id(browser, "preview").text
            window.clear()
            window.send_keys("minute")
            until(browser, lambda d: "valid policy" in by_id(d, "validation").text, "the fixed policy")
            build_and_save.checked = (shown, preview)

            Select(by_id(browser, "rule-action")).select_by_value("deny")
            by_id(browser, "rule-reason").send_keys("texts are off today")
            until(browser, lambda d: '"reason": "texts are off today"' in by_id(d, "preview").text
                  and by_id(d, "review").is_enabled(), "the preview of the deny rule")
            assert "limits" not in by_id(browser, "preview").text.split('"probe__send_text"')[1].split("}")[0]
            screenshot(browser, "policy-builder")
            # The same document previewed as YAML, and back.
            by_id(browser, "preview-yaml").click()
            until(browser, lambda d: "  probe__send_text:\n    action: deny" in by_id(d, "preview").text, "the YAML preview")
            by_id(browser, "preview-json").click()
            until(browser, lambda d: '"probe__send_text": {' in by_id(d, "preview").text, "the JSON preview")
            by_id(browser, "review").click()
            until(browser, lambda d: by_id(d, "diff-panel").is_displayed(), "the diff")
            added = [e.text for e in css(browser, "#diff .add")]
            removed = [e.text for e in css(browser, "#diff .del")]
            assert any('"action": "deny"' in line for line in added), added
            assert any("probe__send_text_rate" in line for line in removed), removed
            # The file was one line of JSON: saving lays it out anew, and the
            # diff shown is the policy's own change, the whole file's on request.
            assert by_id(browser, "relayout-note").is_displayed()
            assert len(added) + len(removed) < 15, (added, removed)
            by_id(browser, "diff-whole-file").click()
            until(browser, lambda d: any('"version": "1"' in e.text for e in css(d, "#diff .del")), "the whole file's diff")
            by_id(browser, "diff-whole-file").click()
            until(browser, lambda d: not any('"version": "1"' in e.text for e in css(d, "#diff .del")), "the policy's diff")
            screenshot(browser, "policy-diff")
            by_id(browser, "save").click()
            until(browser, lambda d: "reloaded" in by_id(d, "save-result").text, "the saved message")

        build_and_save.checked = None
        await asyncio.to_thread(build_and_save)

        # The page showed exactly what `toolgate validate` says of that text.
        shown, preview = build_and_save.checked
        bad = tmp_path / "bad.json"
        bad.write_text(preview + "\n")
        validated = run_toolgate(toolgate_bin, "validate", str(bad))
        assert validated.returncode == 1
        strip = lambda line, path: line.split(path + ":", 1)[1]  # noqa: E731
        assert [strip(line, str(policy_path)) for line in shown] == [strip(line, str(bad)) for line in validated.stderr.splitlines()]

        saved = json.loads(policy_path.read_text())
        assert saved["tools"]["probe__send_text"] == {"action": "deny", "reason": "texts are off today"}
        untouched = {k: v for k, v in POLICY["tools"].items() if k != "probe__send_text"}
        assert {k: v for k, v in saved["tools"].items() if k != "probe__send_text"} == untouched, \
            "the builder keeps what it does not touch"
        assert (saved["version"], saved["default"]) == ("1", "deny")
        assert json.loads(before)["tools"]["probe__send_text"] == POLICY["tools"]["probe__send_text"]
        assert not list(gw.dir.glob(".policy.json.*")), "no temporary file is left"

        refused = await client.call_tool("probe__send_text", {"to": "+15550100", "body": "second"})
        assert refused.is_error
        assert "texts are off today" in refused.content[0].text
    assert gw.received() == [{"tool": "send_text", "arguments": {"to": "+15550100", "body": "first"}}]


@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_a_held_call_is_approved_or_denied_in_the_page(serve_factory, browser):
    gw, admin = start_gateway(serve_factory)

    def open_approvals() -> None:
        sign_in(browser, admin)
        signed_in(browser)
        open_tab(browser, "approvals")
        until(browser, lambda d: "No call is waiting" in by_id(d, "approvals-pending").text, "an empty list")

    def decide(approve: bool, arguments: dict[str, Any], reason: str = "") -> None:
        # The held call appears without reloading the page.
        needle = json.dumps(arguments, separators=(",", ":"))
        row = until(browser, lambda d: next((r for r in css(d, "#approvals-pending tr[data-id]") if needle in r.text), None),
                    f"the held call {needle}")
        assert "probe__transfer" in row.text and "money leaves the account" in row.text
        if reason:
            row.find_element("css selector", "input.decision-reason").send_keys(reason)
        screenshot(browser, "approvals")
        row.find_element("css selector", "button.approve" if approve else "button.deny").click()
        until(browser, lambda d: needle not in by_id(d, "approvals-pending").text, "the decided call leaving the list")

    await asyncio.to_thread(open_approvals)
    async with gw.client(LEGACY, read_timeout_seconds=90) as client:
        first = {"to": "bob", "amount": 5}
        call = asyncio.create_task(client.call_tool("probe__transfer", first))
        await asyncio.to_thread(decide, True, first)
        done = await call
        assert not done.is_error, done
        assert gw.received() == [{"tool": "transfer", "arguments": first}]

        second = {"to": "mallory", "amount": 9999}
        call = asyncio.create_task(client.call_tool("probe__transfer", second))
        await asyncio.to_thread(decide, False, second, "not on a Sunday")
        refused = await call
        assert refused.is_error
        facts = refused.structured_content["toolgate"]
        assert facts["decision"] == "approval_denied", facts
        assert "not on a Sunday" in refused.content[0].text
    assert gw.received() == [{"tool": "transfer", "arguments": first}]

    def decided_list() -> None:
        until(browser, lambda d: "not on a Sunday" in by_id(d, "approvals-decided").text, "the decided list")
        text = by_id(browser, "approvals-decided").text
        assert "denied" in text and "dashboard (api)" in text

    await asyncio.to_thread(decided_list)


@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_the_traffic_tab_shows_the_calls_and_filters_them(serve_factory, browser):
    from selenium.webdriver.support.ui import Select

    gw, admin = start_gateway(serve_factory)
    async with gw.client(LEGACY) as client:
        assert not (await client.call_tool("probe__echo", {"text": "hi"})).is_error
        assert not (await client.call_tool("probe__send_text", {"to": "+1", "body": "x"})).is_error
        with pytest.raises(MCPError):  # default deny: answered as an unknown tool
            await client.call_tool("probe__get_balance", {})
    with api(admin) as http:
        wait_for(lambda: len(http.get("/api/audit").json()["records"]) >= 3, what="3 audit records")

    def check() -> None:
        sign_in(browser, admin)
        signed_in(browser)
        open_tab(browser, "traffic")
        until(browser, lambda d: len(css(d, "#traffic tr[data-seq]")) >= 3, "three calls")
        tools = [r.get_attribute("data-tool") for r in css(browser, "#traffic tr[data-seq]")]
        assert {"probe__echo", "probe__send_text", "probe__get_balance"} <= set(tools), tools
        # Counters in use against their limits.
        counter = until(browser, lambda d: (css(d, 'tr[data-counter="probe__send_text_rate"]') or [None])[0], "the counter")
        assert "1 / 30" in counter.text
        screenshot(browser, "traffic")

        Select(by_id(browser, "filter-decision")).select_by_value("unknown")
        by_id(browser, "filter-apply").click()
        until(browser, lambda d: {r.get_attribute("data-tool") for r in css(d, "#traffic tr[data-seq]")} == {"probe__get_balance"},
              "only the unknown call")
        by_id(browser, "filter-clear").click()
        by_id(browser, "filter-tool").send_keys("probe__echo")
        by_id(browser, "filter-apply").click()
        until(browser, lambda d: {r.get_attribute("data-tool") for r in css(d, "#traffic tr[data-seq]")} == {"probe__echo"},
              "only the echo call")

    await asyncio.to_thread(check)

    # The trail is live: a new call shows up without touching the page.
    async with gw.client(LEGACY) as client:
        assert not (await client.call_tool("probe__echo", {"text": "again"})).is_error

    await asyncio.to_thread(
        until, browser, lambda d: len(css(d, '#traffic tr[data-tool="probe__echo"]')) >= 2, "the new call")


@pytest.mark.timeout(120)
def test_the_page_says_when_the_gateway_is_unreachable(serve_factory, browser):
    gw, admin = start_gateway(serve_factory)
    sign_in(browser, admin)
    signed_in(browser)
    gw.stop()
    banner = until(browser, lambda d: by_id(d, "banner") if by_id(d, "banner").is_displayed() else None, "the banner")
    assert "Cannot reach the gateway" in banner.text
    screenshot(browser, "unreachable")


# --- the API, over HTTP ------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_the_api_refuses_stale_and_invalid_saves(serve_factory):
    gw, admin = start_gateway(serve_factory)
    path = str(gw.dir / "policy.json")
    with api(admin) as http:
        [policy] = http.get("/api/policies").json()["policies"]
        assert policy["path"] == path and policy["valid"] and policy["format"] == "json"
        original = policy["text"]

        invalid = original.replace('"default": "deny"', '"default": "maybe"')
        answer = http.post("/api/policies/save", json={"path": path, "text": invalid, "base_sha256": policy["sha256"]})
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_policy"
        assert "default" in answer.json()["messages"][0]["text"]
        assert Path(path).read_text() == original, "an invalid policy is never written"

        stale = http.post("/api/policies/save", json={"path": path, "text": original, "base_sha256": "0" * 64})
        assert stale.status_code == 409 and stale.json()["current_sha256"] == policy["sha256"]

        outside = http.post("/api/policies/save", json={"path": "/etc/passwd", "text": "x", "base_sha256": "0" * 64})
        assert outside.status_code == 404 and outside.json()["error"]["code"] == "unknown_policy"

        extra = http.post("/api/policies/validate", json={"path": path, "text": original, "force": True})
        assert extra.status_code == 400 and "unknown field" in extra.json()["error"]["message"]

        ok = http.post("/api/policies/save", json={"path": path, "text": original.replace("money leaves", "money goes"),
                                                    "base_sha256": policy["sha256"]})
        assert ok.status_code == 200, ok.text
        assert ok.json()["reload"]["status"] == "reloaded"


def start_ui(toolgate_bin: Path, directory: Path, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    stderr = open(directory / "ui.stderr", "wb")
    proc = subprocess.Popen(
        [str(toolgate_bin), "ui", "--listen", f"127.0.0.1:{port}", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, cwd=directory,
        env={**os.environ, "TOOLGATE_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    stderr.close()
    wait_for(lambda: "dashboard on http://" in (directory / "ui.stderr").read_text() or proc.poll() is not None,
             what="toolgate ui to listen")
    assert proc.poll() is None, (directory / "ui.stderr").read_text()
    return proc, f"http://127.0.0.1:{port}"


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_toolgate_ui_edits_the_files_a_running_gateway_reloads(serve_factory, toolgate_bin):
    gw, _ = start_gateway(serve_factory)
    proc, ui = start_ui(toolgate_bin, gw.dir, "--config", str(gw.config_path), "--data-dir", str(gw.dir / "data"))
    try:
        with httpx2.Client(timeout=10) as anonymous:
            assert anonymous.get(f"{ui}/api/info").status_code == 401
            assert anonymous.get(f"{ui}/").status_code == 200
        with api(ui) as http:
            assert http.get("/api/info").json()["mode"] == "ui"
            wait_for(lambda: http.get("/api/catalogue").json()["servers"][0]["status"] == "ready", 30, "the scan")
            [server] = http.get("/api/catalogue").json()["servers"]
            assert {"probe__echo", "probe__transfer"} <= {t["name"] for t in server["tools"]}
            [policy] = http.get("/api/policies").json()["policies"]
            document = policy["document"]
            document["tools"]["probe__echo"] = {"action": "deny", "reason": "echo is closed"}
            rendered = http.post("/api/policies/render", json={"path": policy["path"], "document": document}).json()
            assert rendered["valid"] and rendered["changed"]
            saved = http.post("/api/policies/save", json={"path": policy["path"], "text": rendered["text"],
                                                           "base_sha256": policy["sha256"]})
            assert saved.status_code == 200, saved.text
            assert saved.json()["reload"]["status"] == "pending"
        # The gateway (another process) reloads what the dashboard wrote,
        # and a call it holds is decided from the dashboard (the same data directory).
        async with gw.client(LEGACY, read_timeout_seconds=90) as client:
            arguments = {"to": "bob", "amount": 7}
            held = asyncio.create_task(client.call_tool("probe__transfer", arguments))
            with api(ui) as http:
                def listed() -> list[dict[str, Any]]:
                    return http.get("/approvals").json()["approvals"]

                await asyncio.to_thread(wait_for, lambda: listed(), 30, "the held call in toolgate ui")
                [request] = listed()
                assert (request["tool"], request["arguments"]) == ("probe__transfer", arguments)
                approved = http.post(f"/approvals/{request['id']}/approve", json={"by": "ui"})
                assert approved.status_code == 200, approved.text
            done = await held
            assert not done.is_error, done
            assert gw.received() == [{"tool": "transfer", "arguments": arguments}]

            async def refused() -> bool:
                result = await client.call_tool("probe__echo", {"text": "x"})
                return result.is_error and "echo is closed" in result.content[0].text

            deadline = time.monotonic() + 10
            while not await refused():
                assert time.monotonic() < deadline, "the gateway never reloaded the saved policy"
                await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- the documented examples ---------------------------------------------------------------

EXAMPLE = re.compile(r"^```sh\n(curl .*?)^```\n\n```jsonc\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Values the docs show as they are (the rest are only shapes: hashes, times).
EXACT = {"code", "status", "kind", "format", "valid", "path", "message", "op", "decision", "tool",
         "changed", "mode", "summary", "grant", "server", "outcome"}


def same_shape(documented: Any, actual: Any, where: str = "") -> None:
    if isinstance(documented, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r}"
        for key, value in documented.items():
            assert key in actual, f"{where}.{key} is documented but not answered: {actual!r}"
            if key in EXACT and not isinstance(value, (dict, list)):
                assert actual[key] == value, f"{where}.{key}: documented {value!r}, answered {actual[key]!r}"
            same_shape(value, actual[key], f"{where}.{key}")
    elif isinstance(documented, list) and documented:
        assert isinstance(actual, list) and actual, f"{where}: {actual!r}"
        same_shape(documented[0], actual[0], f"{where}[0]")


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_the_documented_api_examples_answer_as_documented(serve_factory):
    doc = (REPO / "docs" / "admin-api.md").read_text(encoding="utf-8")
    section = doc[doc.index("## The dashboard's API"):doc.index("## Security notes")]
    examples = EXAMPLE.findall(section)
    assert len(examples) >= 4, examples
    port = free_port()
    config = {
        "policy": "gateway.policy.yaml",
        "servers": {"probe": probe_server()},
        "admin": {"listen": f"127.0.0.1:{port}", "token_sha256": sha256_hex(ADMIN_TOKEN)},
    }
    gw = serve_factory(config, start=False)
    (gw.dir / "gateway.policy.yaml").write_text('version: "1"\ndefault: deny\ntools:\n  probe__echo: {}\n')
    gw.config_path = Path("gateway.yaml")  # relative, as in the docs (the gateway runs in its directory)
    gw.start()
    async with gw.client(LEGACY) as client:
        assert not (await client.call_tool("probe__echo", {"text": "hi"})).is_error
    with api(f"http://127.0.0.1:{port}") as http:
        wait_for(lambda: http.get("/api/audit").json()["records"], what="the audit record")
        for command, answer in examples:
            command = command.replace("\\\n", " ")
            url = re.search(r"http://127\.0\.0\.1:8081(/[^\s\"']*)", command)
            assert url, command
            body = re.search(r"-d '(.*?)'", command, re.DOTALL)
            method = "POST" if "-X POST" in command else "GET"
            response = http.request(method, url.group(1), content=body.group(1) if body else None)
            documented = json.loads(answer)
            assert response.status_code < 500, response.text
            same_shape(documented, response.json(), url.group(1))


@pytest.mark.timeout(120)
def test_toolgate_run_serves_the_dashboard_for_its_policy(gateway, monkeypatch):
    port = free_port()
    admin = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("TOOLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
    gw = gateway({"version": "1", "default": "deny", "tools": {"echo": {}}}, "--admin-listen", f"127.0.0.1:{port}")
    raw = RawGateway(gw, LEGACY)
    try:
        raw.handshake()
        assert not raw.call("echo", {"text": "first"})["result"].get("isError")
        with api(admin) as http:
            assert http.get("/api/info").json()["mode"] == "run"
            [server] = http.get("/api/catalogue").json()["servers"]
            assert server["status"] == "unlisted" and "tools/list" in server["note"]
            # The tools as the gateway last listed them to the agent.
            raw.request("tools/list")
            [server] = http.get("/api/catalogue").json()["servers"]
            assert server["status"] == "ready"
            echo = next(t for t in server["tools"] if t["name"] == "echo")
            assert echo["rules"][0]["effect"] == "allow"
            # Only what the agent was shown: the policy (default deny) hides the rest.
            assert {t["name"] for t in server["tools"]} == {"echo"}
            [policy] = http.get("/api/policies").json()["policies"]
            assert policy["path"] == str(gw.policy)
            document = policy["document"]
            document["tools"]["echo"] = {"action": "deny", "reason": "echo is closed"}
            rendered = http.post("/api/policies/render", json={"path": policy["path"], "document": document}).json()
            saved = http.post("/api/policies/save", json={"path": policy["path"], "text": rendered["text"],
                                                           "base_sha256": policy["sha256"]})
            assert saved.status_code == 200, saved.text
            assert saved.json()["reload"]["status"] == "pending"

        def refused() -> bool:
            answer = raw.call("echo", {"text": "again"})
            return bool(answer["result"].get("isError")) and "echo is closed" in json.dumps(answer)

        wait_for(refused, what="toolgate run to reload the saved policy")
        reached = len(gw.received())
        assert refused()
        assert len(gw.received()) == reached, "a refused call never reaches the server"
    finally:
        raw.cleanup()


@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_a_condition_built_in_the_page_limits_a_tools_arguments(serve_factory, browser):
    from selenium.webdriver.support.ui import Select

    gw, admin = start_gateway(serve_factory)

    def build() -> None:
        sign_in(browser, admin)
        signed_in(browser)
        open_tab(browser, "policy")
        until(browser, lambda d: "valid policy" in by_id(d, "validation").text, "the policy")
        Select(by_id(browser, "builder-tool")).select_by_value("probe__send_text")
        until(browser, lambda d: css(d, "#limits .limit"), "the tool's limit in the form")
        by_id(browser, "add-condition").click()
        row = css(browser, "#conditions .condition")[0]
        path = row.find_element("css selector", ".cond-path")
        path.clear()
        path.send_keys("args.to")
        Select(row.find_element("css selector", ".cond-op")).select_by_value("regex")
        row.find_element("css selector", ".cond-value").send_keys("^\\+1[0-9]+$")
        row.find_element("css selector", ".cond-reason").send_keys("US numbers only")
        until(browser, lambda d: '"reason": "US numbers only"' in by_id(d, "preview").text
              and by_id(d, "review").is_enabled(), "the condition in the preview")
        by_id(browser, "review").click()
        until(browser, lambda d: by_id(d, "diff-panel").is_displayed(), "the diff")
        by_id(browser, "save").click()
        until(browser, lambda d: "reloaded" in by_id(d, "save-result").text, "the saved message")

        # A rule removed: the tool falls back to the default.
        until(browser, lambda d: not by_id(d, "review").is_enabled() and "US numbers only" in by_id(d, "preview").text,
              "the saved file in the builder")
        Select(by_id(browser, "builder-tool")).select_by_value("probe__delete_all")
        Select(by_id(browser, "rule-action")).select_by_value("none")
        until(browser, lambda d: "probe__delete_all" not in by_id(d, "preview").text and by_id(d, "review").is_enabled()
              and by_id(d, "save-result").text == "", "the preview without the rule")
        by_id(browser, "review").click()
        until(browser, lambda d: any("probe__delete_all" in e.text for e in css(d, "#diff .del")), "the removal in the diff")
        by_id(browser, "save").click()
        until(browser, lambda d: "reloaded" in by_id(d, "save-result").text and
              "probe__delete_all" not in by_id(d, "preview").text, "the second save")

        # Approval settings: shown for require_approval rules, kept, editable.
        Select(by_id(browser, "builder-tool")).select_by_value("probe__transfer")
        until(browser, lambda d: by_id(d, "approval-fieldset").is_displayed(), "the approval settings")
        assert by_id(browser, "approval-hold").get_attribute("value") == "60s"
        assert Select(by_id(browser, "approval-via")).first_selected_option.get_attribute("value") == "admin"
        hold = by_id(browser, "approval-hold")
        hold.clear()
        hold.send_keys("5s")
        until(browser, lambda d: '"hold": "5s"' in by_id(d, "preview").text and by_id(d, "review").is_enabled(),
              "the new hold in the preview")
        assert '"expires": "10m"' in by_id(browser, "preview").text
        by_id(browser, "discard").click()
        until(browser, lambda d: '"hold": "60s"' in by_id(d, "preview").text, "the draft discarded")
        Select(by_id(browser, "builder-tool")).select_by_value("probe__echo")
        until(browser, lambda d: not by_id(d, "approval-fieldset").is_displayed(), "no approval settings for allow")

    await asyncio.to_thread(build)
    assert "probe__delete_all" not in json.loads((gw.dir / "policy.json").read_text())["tools"]
    rule = json.loads((gw.dir / "policy.json").read_text())["tools"]["probe__send_text"]
    assert rule == {
        "limits": [{"counter": "probe__send_text_rate", "window": "minute", "max": 30, "scope": "grant"}],
        "conditions": [{"path": "args.to", "op": "regex", "value": "^\\+1[0-9]+$", "reason": "US numbers only"}],
    }
    async with gw.client(LEGACY) as client:
        assert not (await client.call_tool("probe__send_text", {"to": "+15550100", "body": "hi"})).is_error
        abroad = await client.call_tool("probe__send_text", {"to": "+445550100", "body": "hi"})
        assert abroad.is_error and "US numbers only" in abroad.content[0].text
    assert gw.received() == [{"tool": "send_text", "arguments": {"to": "+15550100", "body": "hi"}}]


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_serve_with_one_policy_reloads_what_the_dashboard_saves(toolgate_bin, tmp_path):
    import sys

    from conftest import PROBE_SERVER
    from servekit import ServeGateway

    policy = tmp_path / "policy.yaml"
    policy.write_text('version: "1"\ndefault: deny\ntools:\n  echo: {}\n')
    port, admin_port = free_port(), free_port()
    stderr = open(tmp_path / "serve.stderr", "wb")
    proc = subprocess.Popen(
        [str(toolgate_bin), "serve", "--policy", "policy.yaml", "--listen", f"127.0.0.1:{port}",
         "--admin-listen", f"127.0.0.1:{admin_port}", "--", sys.executable, str(PROBE_SERVER)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path,
        env={**os.environ, "TOOLGATE_ADMIN_TOKEN": ADMIN_TOKEN, "TOOLGATE_DATA_DIR": str(tmp_path / "data"),
             "PROBE_LOG": str(tmp_path / "probe.jsonl")},
    )
    stderr.close()
    try:
        wait_for(lambda: "toolgate serve: listening on" in (tmp_path / "serve.stderr").read_text() or proc.poll() is not None, 30,
                 "toolgate serve to listen")
        assert proc.poll() is None, (tmp_path / "serve.stderr").read_text()
        with api(f"http://127.0.0.1:{admin_port}") as http:
            [server] = http.get("/api/catalogue").json()["servers"]
            assert "echo" in {t["name"] for t in server["tools"]}
            [file] = http.get("/api/policies").json()["policies"]
            assert (file["path"], file["format"]) == ("policy.yaml", "yaml")
            text = file["text"].replace("echo: {}", "echo: {action: deny, reason: closed for the night}")
            saved = http.post("/api/policies/save", json={"path": "policy.yaml", "text": text, "base_sha256": file["sha256"]})
            assert saved.status_code == 200, saved.text
            assert saved.json()["reload"]["status"] == "reloaded"
        # Reloaded before the save answered: the very next call is refused.
        gw = ServeGateway.__new__(ServeGateway)
        gw.addr = f"127.0.0.1:{port}"
        async with gw.client(LEGACY) as client:
            refused = await client.call_tool("echo", {"text": "x"})
            assert refused.is_error and "closed for the night" in refused.content[0].text
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert not (tmp_path / "probe.jsonl").exists() or (tmp_path / "probe.jsonl").read_text() == ""


def test_toolgate_ui_says_what_it_needs(toolgate_bin, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TOOLGATE_ADMIN_TOKEN"}

    def ui(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        extra = {"TOOLGATE_ADMIN_TOKEN": token} if token else {}
        return subprocess.run([str(toolgate_bin), "ui", *args], cwd=tmp_path, env={**env, **extra},
                              capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)

    (tmp_path / "policy.json").write_text(json.dumps(POLICY))
    no_token = ui("--policy", "policy.json")
    assert no_token.returncode == 1
    assert "TOOLGATE_ADMIN_TOKEN is not set" in no_token.stderr, no_token.stderr
    short = ui("--policy", "policy.json", token="short")
    assert short.returncode == 1 and "too short" in short.stderr
    nothing = ui(token=ADMIN_TOKEN)
    assert nothing.returncode == 1 and "give --config FILE, or --policy FILE" in nothing.stderr
    (tmp_path / "policy.txt").write_text("{}")
    wrong = ui("--policy", "policy.txt", token=ADMIN_TOKEN)
    assert wrong.returncode == 1 and "unknown policy format" in wrong.stderr


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_toolgate_ui_decides_through_redis(serve_factory, toolgate_bin, tmp_path):
    from test_state import Redis

    redis = Redis(tmp_path / "redis").start()
    try:
        policy = {"version": "1", "default": "deny", "tools": {"probe__transfer": {
            "action": "require_approval", "reason": "money leaves the account",
            "approval": {"via": ["admin"], "hold": 0, "expires": "10m"}}}}
        config = {"policy": "policy.json", "servers": {"probe": probe_server()},
                  "state": {"store": redis.url, "prefix": "dash"}}
        gw = serve_factory(config, {"policy.json": policy})
        # The dashboard's data directory is its own: approvals come from Redis (the config's state).
        proc, ui = start_ui(toolgate_bin, gw.dir, "--config", str(gw.config_path), "--data-dir", str(tmp_path / "ui-data"))
        try:
            arguments = {"to": "bob", "amount": 7}
            async with gw.client(LEGACY) as client:
                pending = await client.call_tool("probe__transfer", arguments)
                approval_id = pending.structured_content["toolgate"]["approval_id"]
                with api(ui) as http:
                    [request] = http.get("/approvals").json()["approvals"]
                    assert request["id"] == approval_id
                    assert http.post(f"/approvals/{approval_id}/approve", json={"by": "ui"}).status_code == 200
                ran = await client.call_tool("probe__transfer", arguments)
                assert not ran.is_error, ran
            assert gw.received() == [{"tool": "transfer", "arguments": arguments}]
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        redis.stop()
