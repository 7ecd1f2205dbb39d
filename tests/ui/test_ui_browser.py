"""The web UI in a real headless Chromium (selenium + Debian's chromium-driver) against a real ``-dev`` agent.

Data goes in through the HTTP API, the UI is driven like a user would, and every write the UI makes is
read back through ``/v1`` with httpx. Screenshots land in each test's tmp dir.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agentproc import AgentProcess, wait_for
from tests.cluster.cluster import Cluster, settle

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(f"needs Debian chromium + chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                "apt-get install -y chromium chromium-driver", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")

from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

XSS_TAG = "<img src=x onerror=alert(1)>"
OUTPUT = "payment gateway timeout <b>after 3s</b>"
# Chrome logs every non-2xx fetch; autopilot answers 429 by design while a server is down.
EXPECTED_CONSOLE = ("/v1/operator/autopilot/health - Failed to load resource: the server responded with a status of 429",)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    log = tmp_path_factory.mktemp("ui-agent") / "agent.log"
    with AgentProcess("-dev", "-node", "n1", log_path=log) as a:
        yield a


@pytest.fixture(scope="module")
def api(agent: AgentProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=agent.url + "/v1", timeout=10) as c:
        for i, status in ((1, "passing"), (2, "passing"), (3, "passing")):
            tags = ["v2", XSS_TAG] if i == 3 else ["v2"]
            r = c.put("/agent/service/register", json={
                "Name": "billing", "ID": f"billing-{i}", "Port": 9000 + i, "Tags": tags,
                "Check": {"TTL": "10m", "Status": status}})
            assert r.status_code == 200, r.text
        # A status change syncs at once (an output-only change would wait for anti-entropy).
        assert c.put("/agent/check/fail/service:billing-3", params={"note": OUTPUT}).status_code == 200
        wait_for(lambda: any(ch["Output"] == OUTPUT for e in c.get("/health/service/billing").json()
                             for ch in e["Checks"]))
        yield c


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="ctk-ui-chromium-")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--window-size=1280,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield d
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and not any(
            x in e["message"] for x in EXPECTED_CONSOLE)]
        assert not errors, f"browser console errors (CSP violations, JS exceptions): {errors}"
    finally:
        d.quit()


def until(d: WebDriver, cond: Callable[[WebDriver], Any], timeout_s: float = 10) -> Any:
    return WebDriverWait(d, timeout_s, ignored_exceptions=[StaleElementReferenceException]).until(cond)


def find(d: WebDriver, css: str) -> WebElement:
    return until(d, lambda d: d.find_element(By.CSS_SELECTOR, css) if d.find_elements(By.CSS_SELECTOR, css) else None)


def counts(d: WebDriver, service: str) -> dict[str, str]:
    row = d.find_element(By.CSS_SELECTOR, f'tr[data-service="{service}"]')
    return {s: row.find_element(By.CSS_SELECTOR, f".count-{s}").text for s in ("passing", "warning", "critical")}


def retype(box: WebElement, text: str) -> None:
    """Replace an input's text with key presses (``clear()`` fires no ``input`` event)."""
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    if text:
        box.send_keys(text)


def go(d: WebDriver, agent: AgentProcess, hash_: str) -> None:
    d.get(f"{agent.url}/ui/{hash_}")


def kv_raw(api: httpx.Client, key: str) -> bytes | None:
    r = api.get(f"/kv/{key}", params={"raw": ""})
    return None if r.status_code == 404 else r.content


# ------------------------------------------------------------------ services


def test_services_show_instance_counts_and_filters(driver: WebDriver, agent: AgentProcess, api: httpx.Client,
                                                   tmp_path: Path) -> None:
    driver.get(agent.url + "/")  # Consul's redirect: / -> /ui/
    until(driver, lambda d: d.current_url.endswith("/ui/#/services"))
    find(driver, 'tr[data-service="billing"]')
    assert counts(driver, "billing") == {"passing": "2", "warning": "0", "critical": "1"}  # instances, not checks
    assert counts(driver, "consul") == {"passing": "1", "warning": "0", "critical": "0"}
    summary = find(driver, "#summary")
    assert summary.text == "1 of 4 instances critical" and "critical" in summary.get_attribute("class")
    assert "datacenter dc1" in driver.find_element(By.ID, "agent-info").text
    tags = driver.find_element(By.CSS_SELECTOR, 'tr[data-service="billing"]').text
    assert XSS_TAG in tags  # shown as text
    assert not driver.find_elements(By.CSS_SELECTOR, "main img")
    driver.save_screenshot(str(tmp_path / "services.png"))

    driver.find_element(By.ID, "only-unhealthy").click()
    until(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, 'tr[data-service="consul"]'))
    assert driver.find_elements(By.CSS_SELECTOR, 'tr[data-service="billing"]')
    driver.find_element(By.ID, "only-unhealthy").click()
    box = driver.find_element(By.ID, "filter")
    retype(box, "cons")
    until(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, 'tr[data-service="billing"]'))
    assert driver.find_elements(By.CSS_SELECTOR, 'tr[data-service="consul"]')
    retype(box, "V2")  # tags match too, case-insensitively
    until(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, 'tr[data-service="consul"]'))
    assert driver.find_elements(By.CSS_SELECTOR, 'tr[data-service="billing"]')
    retype(box, "")
    find(driver, 'tr[data-service="consul"]')


def test_service_detail_shows_instances_checks_and_output(driver: WebDriver, agent: AgentProcess,
                                                          api: httpx.Client, tmp_path: Path) -> None:
    go(driver, agent, "#/services")
    find(driver, 'tr[data-service="billing"] a').click()
    bad = find(driver, '[data-instance="billing-3"]')
    assert "critical" in bad.find_element(By.CSS_SELECTOR, ".head .badge").text
    assert bad.find_element(By.CSS_SELECTOR, ".addr").text == "127.0.0.1:9003"
    check = bad.find_element(By.CSS_SELECTOR, '[data-check="service:billing-3"]')
    assert check.find_element(By.CSS_SELECTOR, ".output").text == OUTPUT  # literally, not as markup
    assert not bad.find_elements(By.CSS_SELECTOR, ".output b")
    node_check = bad.find_element(By.CSS_SELECTOR, '[data-check="serfHealth"]')
    assert "(node)" in node_check.text and "passing" in node_check.text
    ok = driver.find_element(By.CSS_SELECTOR, '[data-instance="billing-1"]')
    assert "passing" in ok.find_element(By.CSS_SELECTOR, ".head .badge").text
    driver.save_screenshot(str(tmp_path / "service-billing.png"))
    driver.find_element(By.ID, "only-unhealthy").click()
    until(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-instance="billing-1"]'))
    assert driver.find_elements(By.CSS_SELECTOR, '[data-instance="billing-3"]')
    driver.find_element(By.ID, "only-unhealthy").click()


def test_long_output_is_collapsible(driver: WebDriver, agent: AgentProcess, api: httpx.Client) -> None:
    long = "\n".join(f"line {i}: upstream answered 503" for i in range(40))
    api.put("/agent/service/register", json={"Name": "chatty", "ID": "chatty-1", "Check": {"TTL": "10m"}})
    api.put("/agent/check/warn/service:chatty-1", params={"note": long})
    wait_for(lambda: any(c["Output"] == long for c in api.get("/health/checks/chatty").json()))
    go(driver, agent, "#/service/chatty")
    details = find(driver, '[data-check="service:chatty-1"] details')
    assert details.get_attribute("open") is None
    assert "line 0" in details.find_element(By.TAG_NAME, "summary").text
    details.find_element(By.TAG_NAME, "summary").click()
    until(driver, lambda d: "line 39" in d.find_element(By.CSS_SELECTOR, '[data-check="service:chatty-1"] pre').text)


# ------------------------------------------------------------------ nodes, raft


def test_nodes_and_raft_views(driver: WebDriver, agent: AgentProcess, api: httpx.Client, tmp_path: Path) -> None:
    go(driver, agent, "#/nodes")
    row = find(driver, 'tr[data-node="n1"]')
    assert "alive" in row.text and "Serf Health Status" in row.text
    hide = driver.find_element(By.ID, "hide-gone")
    hide.click()  # n1 is alive: still shown
    assert driver.find_elements(By.CSS_SELECTOR, 'tr[data-node="n1"]')
    hide.click()
    go(driver, agent, "#/raft")
    peer = find(driver, 'tr[data-peer="n1"]')
    assert "leader" in peer.text and "127.0.0.1:" in peer.text and "yes" in peer.text
    assert find(driver, "#summary").text.startswith("Leader: n1")
    driver.save_screenshot(str(tmp_path / "raft.png"))


# ------------------------------------------------------------------ key/value


def open_key(d: WebDriver, agent: AgentProcess, key: str, expect: str) -> WebElement:
    go(d, agent, "#/kv/")
    go(d, agent, "#/kv/" + key)
    area = find(d, "#kv-value")
    until(d, lambda d: d.find_element(By.ID, "kv-value").get_attribute("value") == expect)
    return area


def test_kv_browse_and_edit(driver: WebDriver, agent: AgentProcess, api: httpx.Client, tmp_path: Path) -> None:
    api.put("/kv/app/db/url", content=b"postgres://old")
    api.put("/kv/app/name", content=b"billing")
    go(driver, agent, "#/kv/")
    find(driver, 'a[data-key="app/"]').click()
    find(driver, 'a[data-key="app/db/"]')
    find(driver, 'a[data-key="app/name"]').click()
    area = find(driver, "#kv-value")
    until(driver, lambda d: area.get_attribute("value") == "billing")
    retype(area, "billing v2 ✓")
    driver.find_element(By.ID, "kv-save").click()
    until(driver, lambda d: "Saved" in d.find_element(By.ID, "kv-msg").text)
    assert kv_raw(api, "app/name") == "billing v2 ✓".encode()
    driver.save_screenshot(str(tmp_path / "kv-saved.png"))
    # A second save from the same page uses the new ModifyIndex, so it goes through too.
    area.send_keys("!")
    driver.find_element(By.ID, "kv-save").click()
    until(driver, lambda d: kv_raw(api, "app/name") == "billing v2 ✓!".encode())


def test_kv_concurrent_edit_is_reported_not_overwritten(driver: WebDriver, agent: AgentProcess,
                                                        api: httpx.Client, tmp_path: Path) -> None:
    api.put("/kv/app/limit", content=b"10")
    area = open_key(driver, agent, "app/limit", "10")
    assert api.put("/kv/app/limit", content=b"20 (set by the API)").json() is True  # between load and save
    retype(area, "30 (from the UI)")
    driver.find_element(By.ID, "kv-save").click()
    msg = until(driver, lambda d: d.find_element(By.ID, "kv-msg").text or None)
    assert "changed by someone else" in msg and "Not saved" in msg
    assert kv_raw(api, "app/limit") == b"20 (set by the API)"
    assert area.get_attribute("value") == "30 (from the UI)"  # the user's text is kept
    driver.save_screenshot(str(tmp_path / "kv-conflict.png"))
    # Deleting from the stale page is refused the same way.
    driver.find_element(By.ID, "kv-delete").click()
    driver.switch_to.alert.accept()
    until(driver, lambda d: "Not deleted" in d.find_element(By.ID, "kv-msg").text)
    assert kv_raw(api, "app/limit") == b"20 (set by the API)"


def test_kv_delete_asks_for_confirmation(driver: WebDriver, agent: AgentProcess, api: httpx.Client) -> None:
    api.put("/kv/app/tmp", content=b"bye")
    open_key(driver, agent, "app/tmp", "bye")
    driver.find_element(By.ID, "kv-delete").click()
    alert = driver.switch_to.alert
    assert alert.text == 'Delete key "app/tmp"?'
    alert.dismiss()
    assert kv_raw(api, "app/tmp") == b"bye"
    driver.find_element(By.ID, "kv-delete").click()
    driver.switch_to.alert.accept()
    until(driver, lambda d: d.current_url.endswith("#/kv/app/"))
    assert kv_raw(api, "app/tmp") is None
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018


def test_kv_create_never_overwrites(driver: WebDriver, agent: AgentProcess, api: httpx.Client) -> None:
    api.put("/kv/app/exists", content=b"keep me")
    go(driver, agent, "#/kv/app/")
    find(driver, "#kv-new-key").send_keys("feature/flag")
    driver.find_element(By.ID, "kv-new-value").send_keys("on")
    driver.find_element(By.ID, "kv-create").click()
    until(driver, lambda d: d.current_url.endswith("#/kv/app/feature/flag"))
    assert kv_raw(api, "app/feature/flag") == b"on"
    go(driver, agent, "#/kv/app/")
    find(driver, "#kv-new-key").send_keys("exists")
    driver.find_element(By.ID, "kv-new-value").send_keys("clobber")
    driver.find_element(By.ID, "kv-create").click()
    until(driver, lambda d: "already exists" in d.find_element(By.ID, "kv-msg").text)
    assert kv_raw(api, "app/exists") == b"keep me"


# ------------------------------------------------------------------ a cluster with a dead server


def test_cluster_with_a_failed_server(driver: WebDriver, tmp_path: Path) -> None:
    """Raft peers, failed nodes and the consul service as an operator sees them after a crash."""
    c = Cluster(tmp_path, 3)
    # Keep the dead server in the Raft configuration (autopilot would otherwise prune it once the other
    # two hold a majority): the page under test is the one an operator sees while a server is down.
    keep = tmp_path / "autopilot.json"
    keep.write_text('{"autopilot": {"cleanup_dead_servers": false}}')
    for srv in c.servers:
        srv.extra = ["-ui", "-config-file", str(keep)]
    with c:  # kills every server on the way out, even if start() fails
        c.start()
        s1, s2, s3 = c.servers
        settle(lambda: s1.get("/v1/operator/autopilot/health").json().get("FailureTolerance") == 1)
        s3.kill()
        c.wait_leader(among=[s1, s2])
        settle(lambda: any(m["Name"] == "s3" and m["Status"] == 4 for m in s1.get("/v1/agent/members").json()))
        settle(lambda: s1.get("/v1/operator/autopilot/health").status_code == 429)
        driver.get(s1.url + "/ui/#/raft")
        until(driver, lambda d: "UNHEALTHY" in d.find_element(By.ID, "summary").text, timeout_s=20)
        assert "3 voter(s) of 3" in driver.find_element(By.ID, "summary").text
        dead = find(driver, 'tr[data-peer="s3"]')
        assert "no" in dead.find_element(By.CSS_SELECTOR, "td:nth-child(5)").text  # Healthy
        assert len(driver.find_elements(By.CSS_SELECTOR, "#peers td .badge.passing")) >= 3  # leader + 2 healthy
        driver.save_screenshot(str(tmp_path / "cluster-raft.png"))

        driver.get(s1.url + "/ui/#/nodes")
        until(driver, lambda d: "failed" in d.find_element(By.CSS_SELECTOR, 'tr[data-node="s3"]').text, timeout_s=20)
        assert "alive" in driver.find_element(By.CSS_SELECTOR, 'tr[data-node="s1"]').text
        assert "critical" in driver.find_element(By.ID, "summary").text
        driver.find_element(By.ID, "hide-gone").click()
        until(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, 'tr[data-node="s3"]'))
        assert driver.find_elements(By.CSS_SELECTOR, 'tr[data-node="s1"]')
        driver.save_screenshot(str(tmp_path / "cluster-nodes-hidden.png"))
        driver.find_element(By.ID, "hide-gone").click()

        driver.get(s1.url + "/ui/#/services")
        until(driver, lambda d: counts(d, "consul") == {"passing": "2", "warning": "0", "critical": "1"}, timeout_s=20)
        assert not driver.find_element(By.ID, "summary").text.startswith("All")
        driver.save_screenshot(str(tmp_path / "cluster-services.png"))
