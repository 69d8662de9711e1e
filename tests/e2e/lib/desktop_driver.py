#!/usr/bin/env python3
"""A small W3C WebDriver client for the desktop end-to-end test (tests/e2e/desktop.sh), over
raw HTTP to tauri-driver on loopback. Each call is one step; the session id is kept in a
state file between calls, so the shell test can interleave steps with what it does to the
network.

  desktop_driver.py new APP                  start a session (launches the app)
  desktop_driver.py wait EXPR SECS [WHAT]    poll the JS expression EXPR until truthy
  desktop_driver.py js EXPR                  print EXPR's value as JSON
  desktop_driver.py paste CSS TEXT           put TEXT into the field as a paste does (an input
                                             event)
Clicks and screenshots go through the X server (desktop.sh): WebKitWebDriver's element
click, typing and screenshot do not work under Xvfb here.
  desktop_driver.py quit                     end the session (closes the app)

Environment: DRIVER_URL (http://127.0.0.1:PORT), DRIVER_STATE (the state file).
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

URL = os.environ.get("DRIVER_URL", "http://127.0.0.1:4444")
STATE = os.environ.get("DRIVER_STATE", "/tmp/veil-desktop-driver.json")


def call(method, path, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"{}").get("value")
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        raise SystemExit(f"webdriver {method} {path}: HTTP {e.code}: {detail[:400]}")
    except (urllib.error.URLError, OSError) as e:
        raise SystemExit(f"webdriver {method} {path}: {e}")


def session():
    try:
        with open(STATE) as f:
            return json.load(f)["session"]
    except (OSError, ValueError, KeyError):
        raise SystemExit("no webdriver session: run `desktop_driver.py new APP` first")


def js(sid, expr):
    return call("POST", f"/session/{sid}/execute/sync", {"script": f"return ({expr});", "args": []})


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "new":
        caps = {"capabilities": {"alwaysMatch": {"tauri:options": {"application": args[0]}}}}
        deadline = time.time() + 60
        while True:
            try:
                v = call("POST", "/session", caps, timeout=90)
                break
            except SystemExit as e:
                if time.time() > deadline:
                    raise
                print(f"retrying session start: {e}", file=sys.stderr)
                time.sleep(1)
        with open(STATE, "w") as f:
            json.dump({"session": v["sessionId"]}, f)
        return
    sid = session()
    if cmd == "wait":
        expr, secs = args[0], float(args[1])
        what = args[2] if len(args) > 2 else expr
        deadline = time.time() + secs
        last = None
        while time.time() < deadline:
            last = js(sid, expr)
            if last:
                print(json.dumps(last))
                return
            time.sleep(0.25)
        raise SystemExit(f"timed out after {secs:.0f}s waiting for {what} (last value {json.dumps(last)})")
    if cmd == "js":
        print(json.dumps(js(sid, args[0])))
    elif cmd == "paste":
        script = (
            "const e = document.querySelector(arguments[0]); e.focus(); e.value = arguments[1];"
            " e.dispatchEvent(new InputEvent('input', {bubbles: true, inputType: 'insertFromPaste'}));"
            " return e.value.length;"
        )
        n = call("POST", f"/session/{sid}/execute/sync", {"script": script, "args": [args[0], args[1]]})
        if n != len(args[1]):
            raise SystemExit(f"webdriver: {args[0]} holds {n} characters, not {len(args[1])}")
    elif cmd == "quit":
        call("DELETE", f"/session/{sid}")
        os.remove(STATE)
    else:
        raise SystemExit(f"unknown command {cmd}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
