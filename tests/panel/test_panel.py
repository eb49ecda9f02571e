"""The live queue panel in a real headless Chromium: cards appear, Stop and Cancel work."""

import http.client
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("LANEWAY_BIN", str(ROOT / "target" / "debug" / "laneway"))
ADMIN = "panel-admin-key"
# The README's screenshot is refreshed only on request (LANEWAY_PANEL_SHOT=docs/panel.png).
SHOT = pathlib.Path(os.environ.get("LANEWAY_PANEL_SHOT", ROOT / "target" / "panel.png"))


def start(args, cwd):
    p = subprocess.Popen([BIN, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if line.startswith("listening on http://"):
            return p, line.strip().removeprefix("listening on http://")
    raise RuntimeError("laneway did not start")


def browser_paths():
    chrome = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(chrome) and os.path.exists(driver)):
        pytest.fail("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    return chrome, driver


@pytest.fixture(scope="module")
def gateway():
    with tempfile.TemporaryDirectory() as tmp:
        mock, mock_addr = start(["mock", "--listen", "127.0.0.1:0", "--latency-ms", "60000"], tmp)
        cfg = pathlib.Path(tmp) / "laneway.toml"
        cfg.write_text(f"""
[server]
admin_key = "{ADMIN}"
[storage]
path = "{tmp}/data"
[[lane]]
name = "slow-lane"
url = "http://{mock_addr}/v1"
concurrency_limit = {{ max_concurrent_requests = 2 }}
[[route]]
model = "mock-*"
lanes = ["slow-lane"]
[[key]]
name = "story-app"
key = "sk-story"
""")
        gw, addr = start(["serve", "--config", str(cfg), "--listen", "127.0.0.1:0"], tmp)
        yield addr, mock_addr
        for p in (gw, mock):
            p.terminate()
            p.wait(timeout=10)


@pytest.fixture
def driver():
    chrome, chromedriver = browser_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", f"--user-data-dir={tempfile.mkdtemp(prefix='laneway-chrome-')}"]:
        opts.add_argument(flag)
    d = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    yield d
    d.quit()


def slow_request(addr, out, i):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=120)
    body = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": f"prompt {i}"}]})
    c.request("POST", "/v1/chat/completions", body,
              {"Content-Type": "application/json", "Authorization": "Bearer sk-story", "x-request-id": f"story-{i}"})
    r = c.getresponse()
    out[i] = (r.status, json.loads(r.read()))


def admin(addr, path, method="GET"):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request(method, path, headers={"Authorization": f"Bearer {ADMIN}"})
    r = c.getresponse()
    return r.status, json.loads(r.read())


def test_stop_and_cancel_from_the_panel(gateway, driver):
    addr, mock_addr = gateway
    driver.get(f"http://{addr}/ui#key={ADMIN}")
    wait = WebDriverWait(driver, 20)
    wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "live"))
    assert "key=" not in driver.current_url, "the key is removed from the address bar"

    results = {}
    threads = [threading.Thread(target=slow_request, args=(addr, results, i)) for i in range(5)]
    for t in threads:
        t.start()
    card = lambda rid: (By.CSS_SELECTOR, f'.card[data-id="{rid}"]')
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#running .card")) == 2
               and len(d.find_elements(By.CSS_SELECTOR, "#queued .card")) == 3)
    running = driver.find_elements(By.CSS_SELECTOR, "#running .card")
    queued = driver.find_elements(By.CSS_SELECTOR, "#queued .card")
    assert all(c.find_element(By.TAG_NAME, "button").text == "Stop" for c in running)
    assert all(c.find_element(By.TAG_NAME, "button").text == "Cancel" for c in queued)
    assert "story-app" in queued[0].text and "position 1" in queued[0].text
    lane = driver.find_element(By.CSS_SELECTOR, '.lane[data-lane="slow-lane"]').text
    assert "2 / 2 in flight" in lane and "3 queued" in lane
    SHOT.parent.mkdir(exist_ok=True)
    driver.save_screenshot(str(SHOT))

    stop_id = running[0].get_attribute("data-id")
    cancel_id = queued[-1].get_attribute("data-id")
    client_ids = {stop_id: running[0].get_attribute("data-client-id"),
                  cancel_id: queued[-1].get_attribute("data-client-id")}
    driver.find_element(*card(stop_id)).find_element(By.TAG_NAME, "button").click()
    driver.find_element(*card(cancel_id)).find_element(By.TAG_NAME, "button").click()
    wait.until(EC.invisibility_of_element_located(card(stop_id)))
    wait.until(EC.invisibility_of_element_located(card(cancel_id)))

    for rid in (stop_id, cancel_id):
        i = int(client_ids[rid].split("-")[1])
        threads[i].join(timeout=20)
        status, body = results[i]
        assert status == 503 and body["error"]["code"] == "request_cancelled", (rid, status, body)

    # The stopped request's upstream connection was closed; a queued one took its slot.
    stats = json.loads(subprocess.run(["curl", "-s", f"http://{mock_addr}/mock/stats"], capture_output=True, text=True).stdout)
    assert stats["cancelled"] >= 1
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#running .card")) == 2
               and len(d.find_elements(By.CSS_SELECTOR, "#queued .card")) == 1)

    # The bulk buttons ask first, then act.
    driver.find_element(By.ID, "clear-queue").click()
    driver.switch_to.alert.accept()
    driver.find_element(By.ID, "stop-all").click()
    driver.switch_to.alert.accept()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".card"))
    for t in threads:
        t.join(timeout=20)
    assert sorted(s for s, _ in results.values()) == [503] * 5
    assert admin(addr, "/admin/requests") == (200, [])


def test_lane_controls_from_the_panel(gateway, driver):
    from selenium.common.exceptions import StaleElementReferenceException

    addr, _ = gateway
    driver.get(f"http://{addr}/ui#key={ADMIN}")
    # Request cards come and go while the test reads them.
    wait = WebDriverWait(driver, 20, ignored_exceptions=[StaleElementReferenceException])
    wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "live"))
    lane = (By.CSS_SELECTOR, '.lane[data-lane="slow-lane"]')
    button = lambda action: driver.find_element(*lane).find_element(By.CSS_SELECTOR, f'button[data-action="{action}"]')
    counts = lambda running, queued: lambda d: (len(d.find_elements(By.CSS_SELECTOR, "#running .card")) == running
                                                and len(d.find_elements(By.CSS_SELECTOR, "#queued .card")) == queued)

    button("mode").click()
    wait.until(lambda d: d.find_element(*lane).get_attribute("data-mode") == "serial")
    assert "set by hand" in driver.find_element(*lane).text
    status, view = admin(addr, "/admin/lanes/slow-lane")
    assert status == 200 and (view["mode"], view["limit"], view["limit_source"]) == ("serial", 1, "operator")

    results = {}
    threads = [threading.Thread(target=slow_request, args=(addr, results, 10 + i)) for i in range(3)]
    for t in threads:
        t.start()
    wait.until(counts(1, 2))
    # Back to parallel: the lane's limit of 2 applies again at once.
    button("mode").click()
    wait.until(counts(2, 1))
    assert "set by hand" not in driver.find_element(*lane).text

    button("pause").click()
    wait.until(lambda d: d.find_element(*lane).get_attribute("data-paused") == "true")
    driver.find_element(By.ID, "stop-all").click()
    driver.switch_to.alert.accept()
    # The running ones end; the waiting one does not start while the lane is paused.
    wait.until(counts(0, 1))
    assert admin(addr, "/admin/lanes/slow-lane")[1]["paused"] is True
    button("resume").click()
    wait.until(counts(1, 0))
    driver.find_element(By.ID, "stop-all").click()
    driver.switch_to.alert.accept()
    wait.until(counts(0, 0))
    for t in threads:
        t.join(timeout=20)
    assert sorted(s for s, _ in results.values()) == [503] * 3
    status, view = admin(addr, "/admin/lanes/slow-lane")
    assert (view["paused"], view["mode"], view["limit"]) == (False, "parallel", 2)


def test_the_panel_keeps_up_with_a_thousand_pending_requests(gateway, driver):
    import resource
    import socket

    addr, _ = gateway
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    host, port = addr.split(":")
    body = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "bulk"}]})
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer sk-story\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()
    socks = []
    for _ in range(1002):
        s = socket.create_connection((host, int(port)))
        s.sendall(req)
        socks.append(s)
    try:
        driver.get(f"http://{addr}/ui#key={ADMIN}")
        wait = WebDriverWait(driver, 30)
        wait.until(EC.text_to_be_present_in_element((By.ID, "counts"), "2 processing · 1000 pending"))
        # Only the first cards are drawn; the rest are counted, so each update stays cheap.
        assert len(driver.find_elements(By.CSS_SELECTOR, "#queued .card")) <= 300
        assert "and 700 more" in driver.find_element(By.ID, "more-queued").text
        driver.find_element(By.ID, "clear-queue").click()
        driver.switch_to.alert.accept()
        wait.until(EC.text_to_be_present_in_element((By.ID, "counts"), "2 processing · 0 pending"))
        driver.find_element(By.ID, "stop-all").click()
        driver.switch_to.alert.accept()
        wait.until(EC.text_to_be_present_in_element((By.ID, "counts"), "0 processing · 0 pending"))
    finally:
        for s in socks:
            s.close()


def api_call(addr, method, path, body, content_type, key="sk-story"):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request(method, path, body, {"Content-Type": content_type, "Authorization": f"Bearer {key}"})
    r = c.getresponse()
    return r.status, json.loads(r.read())


def test_batches_in_the_panel(gateway, driver):
    addr, _ = gateway
    lines = "".join(
        json.dumps({"custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "mock-1", "messages": [{"role": "user", "content": "x"}]}}) + "\n"
        for i in range(5)
    )
    boundary = "laneway-panel-test"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.jsonl\"\r\n"
            f"Content-Type: application/jsonl\r\n\r\n{lines}\r\n--{boundary}--\r\n")
    status, f = api_call(addr, "POST", "/v1/files", form, f"multipart/form-data; boundary={boundary}")
    assert status == 200, f
    status, b = api_call(addr, "POST", "/v1/batches", json.dumps(
        {"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}), "application/json")
    assert status == 200, b

    driver.get(f"http://{addr}/ui#key={ADMIN}")
    wait = WebDriverWait(driver, 20)
    row = (By.CSS_SELECTOR, f'.batch[data-batch="{b["id"]}"]')
    # Two items run on the lane's two slots; the panel shows the batch, its owner and lane.
    wait.until(lambda d: d.find_element(*row).get_attribute("data-status") == "in_progress"
               and len(d.find_elements(By.CSS_SELECTOR, "#running .card")) == 2)
    assert "0 / 5 done" in driver.find_element(*row).text
    wait.until(lambda d: "story-app" in d.find_element(*row).text)
    driver.find_element(*row).find_element(By.CSS_SELECTOR, 'button[data-action="cancel-batch"]').click()
    driver.switch_to.alert.accept()
    wait.until(lambda d: d.find_element(*row).get_attribute("data-status") == "cancelling")
    # The items still running are stopped; the batch ends with what finished.
    driver.find_element(By.ID, "stop-all").click()
    driver.switch_to.alert.accept()
    wait.until(lambda d: d.find_element(*row).get_attribute("data-status") == "cancelled")
    assert "2 failed" in driver.find_element(*row).text
    status, listed = admin(addr, "/admin/batches")
    assert listed["data"][0]["status"] == "cancelled" and listed["data"][0]["request_counts"]["failed"] == 2
