#!/usr/bin/env python3
"""Drives headless Chromium through chromedriver (plain WebDriver HTTP calls) against the
haconiwa dashboard, for tests/it/web.rs.

usage: dashboard.py URL SCREENSHOT
  prints "ready leader=<id> running=<n> members=<n>" once the page shows a leader and
  containers running; then reads lines from stdin:
    "stopped ID"   waits (no reload) until the page shows ID exited and its event
                   logged, prints "updated <state>"
    "output ID W"  clicks ID's cell, waits until the output panel shows the word W,
                   prints "output lines=<n> stderr=<n>"
    "quit"         saves the screenshot, ends
"""
import base64
import json
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Driver:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["chromedriver", f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                self.call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": "/usr/bin/chromium",
                        "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                 "--disable-dev-shm-usage", "--window-size=1000,1300"],
                    },
                }
            }
        }
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"{}").get("value", {})

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def js(self, script):
        return self.s("POST", "/execute/sync", {"script": script, "args": []})

    def quit(self):
        try:
            self.s("DELETE", "")
        finally:
            self.proc.kill()
            self.proc.wait()


PAGE = """
const rows = [...document.querySelectorAll('#containers tbody tr')].map(
  tr => [...tr.children].map(td => td.textContent));
return {
  leader: document.getElementById('leader').textContent,
  conn: document.getElementById('conn').textContent,
  members: document.querySelectorAll('#members tbody tr').length,
  running: rows.filter(r => r[3] === 'running').length,
  rows: rows,
  log: document.getElementById('log').textContent,
  output: document.getElementById('output').textContent,
  output_lines: document.querySelectorAll('#output span').length,
  output_stderr: document.querySelectorAll('#output span.down').length,
  loads: performance.getEntriesByType('navigation').length,
};
"""


def wait(d, what, cond, timeout=60):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = d.js(PAGE)
        if cond(last):
            return last
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}: {json.dumps(last)[:2000]}")


def main():
    url, shot = sys.argv[1], sys.argv[2]
    d = Driver()
    try:
        d.s("POST", "/url", {"url": url})
        # Mark this page load: a reload would lose the mark.
        d.js("window.__haconiwa_mark = 42; return 1;")
        p = wait(d, "a leader and 5 running", lambda p: "node" in p["leader"] and p["running"] == 5 and p["conn"] == "live")
        leader = p["leader"].split("node")[-1].strip()
        print(f"ready leader={leader} running={p['running']} members={p['members']}", flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            if cmd[0] == "stopped":
                cid = cmd[1]
                p = wait(d, f"{cid} shown exited, its event logged",
                         lambda p: any(r[0] == cid and r[3] in ("exited", "lost") for r in p["rows"])
                         and cid in p["log"])
                same = d.js("return window.__haconiwa_mark === 42;")
                state = [r[3] for r in p["rows"] if r[0] == cid][0]
                print(f"updated {state} same_page={str(bool(same)).lower()}", flush=True)
            elif cmd[0] == "output":
                cid, word = cmd[1], cmd[2]
                wait(d, f"{cid} in the table", lambda p: any(r[0] == cid for r in p["rows"]))
                d.js(f"document.querySelector('td.cid[data-id=\"{cid}\"]').click(); return 1;")
                p = wait(d, f"the output of {cid} showing {word}", lambda p: word in p["output"])
                print(f"output lines={p['output_lines']} stderr={p['output_stderr']}", flush=True)
            elif cmd[0] == "quit":
                png = d.s("GET", "/screenshot")
                with open(shot, "wb") as f:
                    f.write(base64.b64decode(png))
                print("saved", shot, flush=True)
                return 0
    finally:
        d.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
