"""Start `mlpipe serve` on a free port, query every kind of endpoint, stop it with SIGTERM.

Exits non-zero if any answer is wrong or the server does not shut down cleanly.
Usage: serve_smoke.py -c CONFIG
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

LISTENING = re.compile(r"listening on (http://[\d.]+:\d+)")


def request(base: str, path: str, body: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class SmokeFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailed(message)


def main() -> int:
    args = [sys.executable, "-m", "mlpipe_cli", "serve", *sys.argv[1:], "--port", "0"]
    server = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    base = None
    deadline = time.monotonic() + 60
    assert server.stderr is not None
    while base is None and time.monotonic() < deadline:
        line = server.stderr.readline()
        if not line:
            break
        sys.stderr.write(line)
        match = LISTENING.search(line)
        if match:
            base = match.group(1)
    if base is None:
        server.kill()
        print("serve did not start", file=sys.stderr)
        return 1
    try:
        status, _ = request(base, "/readyz")
        check(status == 200, f"/readyz answered {status}")
        status, body = request(base, "/features/1")
        check(status == 200, body)
        known = json.loads(body)
        print(
            f"GET /features/1 -> cold_start={known['cold_start']}, "
            f"{len(known['vector'])}-dim vector, transform {known['transform_version']}"
        )
        status, body = request(base, "/features/99999999")
        check(status == 200 and json.loads(body)["cold_start"] is True, body)
        print("GET /features/99999999 -> cold_start=true (configured defaults)")
        status, body = request(base, "/features", {"entities": [1, 2, 3]})
        check(status == 200, body)
        print(f"POST /features (3 ids) -> {len(json.loads(body)['results'])} results")
        status, body = request(base, "/predict", {"entity": 1})
        if status == 200:
            print(f"POST /predict -> prediction {json.loads(body)['prediction']:.4f}")
        status, body = request(base, "/features/not-a-number")
        check(400 <= status < 500, f"malformed id answered {status}")
        print(f"GET /features/not-a-number -> {status} {json.loads(body).get('error')}")
        status, body = request(base, "/metrics")
        requests = [ln for ln in body.splitlines() if ln.startswith("mlpipe_serve_requests_total")]
        print(f"GET /metrics -> {len(requests)} request counters")
    except SmokeFailed as exc:
        failure = str(exc)
    else:
        failure = None
    finally:
        server.send_signal(signal.SIGTERM)
        _, rest = server.communicate(timeout=60)
        sys.stderr.write(rest)
    if failure is not None:
        print(f"serve smoke check failed: {failure}", file=sys.stderr)
        return 1
    print(f"serve stopped with exit code {server.returncode} (feature log flushed)")
    return server.returncode


if __name__ == "__main__":
    sys.exit(main())
