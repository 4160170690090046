"""Screenshot the MLflow "Training runs" chart view of a sweep (parent run expanded) via headless Chromium.
Usage: python3 scripts/mlflow_screenshot.py [--uri http://127.0.0.1:5000] [--experiment smoke] [--out docs/images/mlflow-sweep.png]
"""
import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

CHROMIUM = "/usr/lib/chromium/chromium"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # W3C WebDriver element reference key
WIDTH, HEIGHT = 1600, 1000
ZOOM = 0.85  # render at 85% so both chart rows (train/*, val/*) fit in a 1600x1000 image


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {url}: {e.code} {e.read()[:300]!r}") from None


def wait_for(what, fn, timeout=30.0, interval=0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


class Session:
    def __init__(self, base, profile):
        self.base = base
        opts = {"binary": CHROMIUM, "args": ["--headless", "--no-sandbox", "--disable-gpu",
                                             f"--window-size={WIDTH},{HEIGHT}", f"--user-data-dir={profile}"]}
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": opts}}}
        self.sid = http("POST", f"{base}/session", caps)["value"]["sessionId"]

    def cmd(self, method, path, body=None):
        return http(method, f"{self.base}/session/{self.sid}{path}", body)["value"]

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        found = self.cmd("POST", "/elements", {"using": "css selector", "value": css})
        return found[0] if found else None

    def click(self, element):
        self.cmd("POST", f"/element/{element[ELEMENT]}/click", {})

    def close(self):
        self.cmd("DELETE", "")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shoot(s, uri, exp_id, parent, charts):
    # Headless Chromium reserves part of the window for (invisible) browser UI, and window sizes are in
    # CSS px; emulating the viewport via CDP gives an exact WIDTHxHEIGHT PNG at the chosen zoom.
    s.cmd("POST", "/goog/cdp/execute", {"cmd": "Emulation.setDeviceMetricsOverride", "params": {
        "width": round(WIDTH / ZOOM), "height": round(HEIGHT / ZOOM), "deviceScaleFactor": ZOOM, "mobile": False}})
    s.cmd("POST", "/url", {"url": f"{uri}/#/experiments/{exp_id}/runs?compareRunsMode=CHART"})

    # The expander is the only button in the parent's run-name cell; find it via the run link.
    expander_js = """const a = document.querySelector(`a[href$="/runs/${arguments[0]}"]`);
                     return a && a.closest('[role=gridcell]').querySelector('button');"""
    wait_for("parent run row", lambda: s.js(expander_js, parent["run_id"]))

    # A fresh profile opens the MLflow Assistant side panel (it may mount a bit after the runs);
    # close it so the charts get the full width.
    close_css = 'button[data-component-id="mlflow.assistant.chat_panel.close"]'
    close = None
    with contextlib.suppress(TimeoutError):  # absent in builds/profiles without the assistant
        close = wait_for("assistant panel", lambda: s.find(close_css), timeout=5)
    if close:
        s.click(close)
        wait_for("assistant panel to close", lambda: not s.find(close_css), timeout=5)

    rows_js = "return document.querySelectorAll('[role=row] a[href*=\"/runs/\"]').length"
    # Other sweeps of the experiment are listed too: expand this parent until
    # its trials add rows (re-query: closing the panel re-renders).
    before = s.js(rows_js)
    if before <= 1:
        s.click(s.js(expander_js, parent["run_id"]))
    else:
        s.click(s.js(expander_js, parent["run_id"]))
        with contextlib.suppress(TimeoutError):
            wait_for("child runs", lambda: s.js(rows_js) > before, timeout=5)
        if s.js(rows_js) <= before:  # it was expanded and the click folded it
            s.click(s.js(expander_js, parent["run_id"]))
    rows = wait_for("child runs", lambda: (n := s.js(rows_js)) > 1 and n)

    # Only show the per-epoch curves (the search box accepts a regex).
    search = wait_for("chart search box", lambda: s.find('input[placeholder="Search metric charts"]'))
    s.cmd("POST", f"/element/{search[ELEMENT]}/value", {"text": charts})

    # Charts render lazily once in view: wait until every visible plot has traces and no spinner is visible.
    ready_js = """const vis = e => { const r = e.getBoundingClientRect();
                                    return r.width > 0 && r.top < innerHeight && r.bottom > 0; };
                  const plots = [...document.querySelectorAll('.js-plotly-plot')].filter(vis);
                  const spinning = [...document.querySelectorAll('.du-bois-light-spin-spinning')].filter(vis);
                  return plots.length > 0 && !spinning.length && plots.every(p => p.querySelector('.trace'))
                         && plots.length;"""
    # A chart of runs that never logged its metric stays empty: after the wait,
    # settle for every visible chart being done loading.
    try:
        plots = wait_for("charts to render", lambda: s.js(ready_js), timeout=60)
    except TimeoutError:
        loaded_js = ready_js.replace("&& plots.every(p => p.querySelector('.trace'))", "")
        plots = wait_for("charts to load", lambda: s.js(loaded_js), timeout=60)

    # Cosmetics: drop the plotly toolbars (always shown headless), unfocus the search box, park the mouse.
    s.js("""const st = document.createElement('style');
            st.textContent = '.modebar-container { display: none !important; }';
            document.head.append(st); document.activeElement.blur();""")
    s.cmd("POST", "/actions", {"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                                            "actions": [{"type": "pointerMove", "x": 1, "y": 1, "origin": "viewport"}]}]})
    time.sleep(1)  # let plotly's transitions settle after the relayout
    print(f"runs listed: {rows}, charts visible: {plots}", file=sys.stderr)
    return base64.b64decode(s.cmd("GET", "/screenshot"))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--uri", default="http://127.0.0.1:5000")
    ap.add_argument("--experiment", default="smoke")
    ap.add_argument("--out", default="docs/images/mlflow-sweep.png")
    ap.add_argument("--charts", default="^(train|val)/", help="regex for the metric chart search box")
    args = ap.parse_args()
    uri = args.uri.rstrip("/")

    q = urllib.parse.urlencode({"experiment_name": args.experiment})
    exp_id = http("GET", f"{uri}/api/2.0/mlflow/experiments/get-by-name?{q}")["experiment"]["experiment_id"]
    found = http("POST", f"{uri}/api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp_id], "filter": "tags.`fer.kind` = 'sweep'",
        "order_by": ["attributes.start_time DESC"], "max_results": 1}).get("runs")
    if not found:
        sys.exit(f"no sweep parent run (tag fer.kind=sweep) in experiment {args.experiment!r}")
    parent = found[0]["info"]

    port = free_port()
    profile = tempfile.mkdtemp(prefix="mlflow-shot-")
    driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    session = None
    try:
        base = f"http://127.0.0.1:{port}"

        def driver_ready():
            try:
                return http("GET", f"{base}/status")["value"]["ready"]
            except OSError:
                return False

        wait_for("chromedriver", driver_ready, timeout=15)
        session = Session(base, profile)
        png = shoot(session, uri, exp_id, parent, args.charts)
    finally:
        if session:
            with contextlib.suppress(OSError, RuntimeError):
                session.close()  # also quits Chromium
        driver.terminate()
        try:
            driver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            driver.kill()
        shutil.rmtree(profile, ignore_errors=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(png)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
