"""`mlpipe serve` under hostile clients (issue 13): the REAL server as a subprocess on a free
port, raw sockets where an HTTP client would be too polite, a real redis-server (stopped,
frozen with SIGSTOP, restarted).

Oracles: for keys, a regular expression and Python's own int range (no code shared with
serving/keys.py); for "one bad request fails no other", the batch endpoint's answers; for
the drain, the feature log's row count against the 200 answers clients received.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO_ROOT, free_port, run_mlpipe
from hypothesis import given, settings
from hypothesis import strategies as st
from test_serve import (
    UNKNOWN,
    Server,
    ServerPool,
    build_fitted_base,
    make_project,
    read_log,
    some_user_ids,
)

from mlpipe_cli.errors import UsageError
from mlpipe_cli.serving.keys import MAX_KEY_BYTES, KeyParser

# Ids that are not entity 3 (nor any entity): each must be a 400 for its own request only.
BAD_IDS = [
    "３",  # FULLWIDTH DIGIT THREE: str.isdigit() says yes, int() reads 3
    "%203",  # " 3"
    "3%20",  # "3 "
    "0003",
    "+3",
    "-0",
    "3.0",
    "0x3",
    "1e3",
    "1_000",
    "99999999999999999999",  # over 64 bits: was a 503 and a counted store error
    "18446744073709551616",  # 2**64
    "-9223372036854775809",  # -2**63 - 1
    "9" * 5000,  # over Python's 4,300-digit int() limit: was a 500
    "%FF%FE",  # not UTF-8
    "1,2",  # two key values for a one-column key
]
# In range but not materialized: served as cold starts, never refused.
EDGE_IDS = ["0", "-5", "9223372036854775807", "-9223372036854775808", "18446744073709551615"]


@pytest.fixture(scope="module")
def fitted_base(tmp_path_factory: pytest.TempPathFactory, sample_data_dir: Path) -> Path:
    return build_fitted_base(tmp_path_factory, sample_data_dir)  # shared with test_serve


@pytest.fixture
def servers():  # type: ignore[no-untyped-def]
    pool = ServerPool()
    yield pool
    pool.close()


def assert_one_line_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert set(doc) == {"error", "message"}
    assert doc["error"] == code
    assert "\n" not in doc["message"]
    assert len(response.content) < 400  # a 5,000-digit id is not echoed back


def redis_project(tmp_path: Path, sample_data_dir: Path, base: Path, redis: Any, **kw: Any) -> Path:
    online = {"type": "redis", "url": redis.url, "timeout": kw.pop("timeout", "500ms")}
    return make_project(tmp_path, sample_data_dir, base, online=online, **kw)


# -- keys: parsed strictly before the store is touched ------------------------------------


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_bad_ids_are_400_and_never_fail_the_good_requests_they_are_coalesced_with(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, servers: Any, request: Any,
    store: str,
) -> None:  # fmt: skip
    if store == "redis":
        redis = request.getfixturevalue("redis_server")
        config = redis_project(tmp_path, sample_data_dir, fitted_base, redis)
    else:
        config = make_project(tmp_path, sample_data_dir, fitted_base)
    srv = servers(config)
    good = [*some_user_ids(sample_data_dir, 30), UNKNOWN]
    reference = {
        r["entity"]: r for r in srv.post("/features", {"entities": good}).json()["results"]
    }

    for bad in BAD_IDS:
        assert_one_line_error(srv.get(f"/features/{bad}"), 400, "bad_entity")
    for edge in EDGE_IDS:
        response = srv.get(f"/features/{edge}")
        assert response.status_code == 200, (edge, response.text)
        assert response.json()["entity"] == int(edge)
        assert response.json()["cold_start"] is True
    # the same rules in JSON bodies: a float, a bool, a huge number, a non-canonical string
    for bad_json in [3.0, True, 1e20, "0003", "３", [3, 4], {"user_id": 3, "x": 1}, None]:
        response = srv.post("/features", {"entities": [good[0], bad_json]})
        assert_one_line_error(response, 400, "bad_entity")
    huge = b'{"entities": [' + b"9" * 5000 + b"]}"
    assert srv.post("/features", content=huge).status_code == 400

    # Many clients at once, bad and good ids interleaved, so that they share coalesced store
    # calls: every good request gets its own entity's answer.
    def client(seed: int) -> list[tuple[str, int, Any]]:
        out = []
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as http:
            for k in range(40):
                if (seed + k) % 3 == 0:
                    ident = BAD_IDS[(seed * 7 + k) % len(BAD_IDS)]
                else:
                    ident = str(good[(seed * 5 + k) % len(good)])
                response = http.get(f"/features/{ident}")
                out.append((ident, response.status_code, response.json()))
        return out

    with ThreadPoolExecutor(16) as pool:
        answers = [a for part in pool.map(client, range(16)) for a in part]
    good_answers = [a for a in answers if a[0] not in BAD_IDS]
    bad_answers = [a for a in answers if a[0] in BAD_IDS]
    assert len(good_answers) > 300
    assert len(bad_answers) > 150
    failed_good = [a for a in good_answers if a[1] != 200]
    assert failed_good == []
    for ident, _, doc in good_answers:
        expected = reference[int(ident)]
        assert doc["entity"] == int(ident)
        assert doc["features"] == dict(expected["features"], label_ts=doc["features"]["label_ts"])
    assert {(status, doc["error"]) for _, status, doc in bad_answers} == {(400, "bad_entity")}
    m = srv.metrics()
    assert m["mlpipe_serve_store_errors_total"] == 0  # bad input is not an outage
    if store == "redis":
        assert m["mlpipe_serve_coalesced_entities_total"] > m["mlpipe_serve_coalesced_calls_total"]
    assert srv.stop() == 0, srv.stderr


CANONICAL = re.compile(r"0|-?[1-9][0-9]*")


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.integers(min_value=-(1 << 70), max_value=1 << 70).map(str),
        st.text(alphabet="0123456789-+ ._e３٣x", max_size=24),
        st.text(max_size=24),
    )
)
def test_integer_key_text_parses_exactly_when_it_is_canonical_and_fits_64_bits(text: str) -> None:
    parser = KeyParser(["user_id"], ["int"])
    expected_ok = bool(CANONICAL.fullmatch(text)) and -(2**63) <= int(text) <= 2**64 - 1
    if expected_ok:
        assert parser.parse(text) == ([int(text)], f"[{int(text)}]")
        assert parser.parse(text, from_path=True)[0] == [int(text)]
    else:
        with pytest.raises(UsageError):
            parser.parse(text)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(1 << 80), max_value=1 << 80))
def test_integer_key_json_numbers_parse_exactly_when_they_fit_64_bits(number: int) -> None:
    parser = KeyParser(["user_id"], ["int"])
    if -(2**63) <= number <= 2**64 - 1:
        assert parser.parse(number)[0] == [number]
    else:
        with pytest.raises(UsageError):
            parser.parse(number)


def test_string_and_composite_keys_are_bounded_and_valid_unicode() -> None:
    parser = KeyParser(["country", "user_id"], ["str", "int"])
    assert parser.parse(["Zürich", "7"]) == (["Zürich", 7], '["Zürich",7]')
    assert parser.parse({"country": "日本", "user_id": 7})[0] == ["日本", 7]
    assert parser.parse(["", 0])[0] == ["", 0]  # empty strings are keys too
    longest = "é" * (MAX_KEY_BYTES // 2)  # 2 UTF-8 bytes each
    assert parser.parse([longest, 1])[0] == [longest, 1]
    refused = [
        ["é" * (MAX_KEY_BYTES // 2) + "x", 1],  # one byte over
        ["x" * 100_000, 1],
        ["\ud800", 1],  # a lone surrogate is not UTF-8
        [7, 1],  # an int for a string column
        ["DE", "07"],
        ["DE"],
        ["DE", 1, 2],
        {"country": "DE"},
        {"country": "DE", "user_id": 1, "extra": 2},
    ]
    for entity in refused:
        with pytest.raises(UsageError) as info:
            parser.parse(entity)
        assert "\n" not in str(info.value)
        assert len(str(info.value)) < 200
    # U+FFFD is what the HTTP server makes of non-UTF-8 bytes in a URL: refused there only
    with pytest.raises(UsageError):
        parser.parse(["a\ufffd", 1], from_path=True)
    assert parser.parse(["a\ufffd", 1])[0] == ["a\ufffd", 1]


# -- slow clients ----------------------------------------------------------------------------


def raw_request(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed."""
    start = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"connection still open after {timeout} s: {data!r}") from None
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


def test_a_slow_body_gets_408_and_its_connection_closed_while_others_are_served(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, servers: Any
) -> None:
    config = make_project(tmp_path, sample_data_dir, fitted_base, serving={"read_timeout": "1s"})
    srv = servers(config)
    user = some_user_ids(sample_data_dir, 1)[0]
    body = json.dumps({"entities": [user]}).encode()
    head = (
        b"POST /features HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    slow = [raw_request(srv.port, head + body[: len(body) // 2]) for _ in range(4)]
    # headers that never end (slowloris): dropped after read_timeout too
    loris = raw_request(srv.port, b"GET /features/1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    started = time.monotonic()
    # meanwhile the server answers everyone else at once
    for _ in range(20):
        assert srv.get(f"/features/{user}").status_code == 200
    assert time.monotonic() - started < 0.9
    for sock in slow:
        data, _ = read_until_closed(sock, 5)
        sock.close()
        assert data.startswith(b"HTTP/1.1 408 "), data
        payload = json.loads(data.split(b"\r\n\r\n", 1)[1])
        assert payload["error"] == "request_timeout"
        assert "read_timeout" in payload["message"]
    waited = time.monotonic() - started
    assert 0.9 < waited < 3.0
    _, closed_after = read_until_closed(loris, 5)
    loris.close()
    assert time.monotonic() - started < 4.0, closed_after
    # a complete body that arrives in pieces within the limit is fine
    sock = raw_request(srv.port, head + body[:5])
    time.sleep(0.3)
    sock.sendall(body[5:])
    sock.settimeout(5)
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert srv.get("/metrics").status_code == 200
    m = srv.metrics()
    assert m['mlpipe_serve_requests_total{endpoint="/features",code="408"}'] == 4
    assert srv.stop() == 0, srv.stderr


# -- SIGTERM: drain in-flight requests, lose no log row --------------------------------------


def test_sigterm_under_load_completes_in_flight_requests_and_logs_every_served_row(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, redis_server: Any
) -> None:
    config = redis_project(
        tmp_path, sample_data_dir, fitted_base, redis_server,
        serving={"logging": {"flush_interval": "1h"}, "read_timeout": "10s",
                 "shutdown_timeout": "20s"},
    )  # fmt: skip
    srv = Server(config).wait_up()
    ids = some_user_ids(sample_data_dir, 50)
    body = json.dumps({"entities": ids[:3]}).encode()
    # in flight when SIGTERM arrives: a POST whose body is half sent
    in_flight = raw_request(
        srv.port,
        b"POST /features HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:7],
    )
    stop = threading.Event()
    statuses: list[int] = []
    lock = threading.Lock()

    def load(seed: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as http:
            k = 0
            while not stop.is_set():
                try:
                    response = http.get(f"/features/{ids[(seed + k) % len(ids)]}")
                except httpx.TransportError:
                    # the listener closed (or closed this idle keep-alive connection): the
                    # request was never taken, so it was not served
                    return
                with lock:
                    statuses.append(response.status_code)
                k += 1

    threads = [threading.Thread(target=load, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    in_flight.sendall(body[7:])  # the rest of the body, after SIGTERM
    in_flight.settimeout(10)
    answer = in_flight.recv(65536)
    in_flight.close()
    stop.set()
    for thread in threads:
        thread.join()
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["count"] == 3
    assert srv.proc.wait(timeout=60) == 0
    stderr = srv.proc.stderr.read()
    assert set(statuses) == {200}, stderr
    log = read_log(tmp_path / "artifacts" / "churn" / "serving-logs")
    assert log.height == len(statuses) + 3  # every 200 GET, and the POST's three entities
    summary = [line for line in stderr.splitlines() if "stopped:" in line]
    assert len(summary) == 1, stderr
    assert f"{log.height} entities served" in summary[0]
    assert f"{log.height} rows written, 0 dropped (queue full), 0 failed" in summary[0]
    assert "requests in flight get up to 20 s" in stderr
    assert "were cut" not in stderr


def test_a_request_still_in_flight_at_the_drain_deadline_is_cut_and_reported(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path
) -> None:
    config = make_project(
        tmp_path, sample_data_dir, fitted_base,
        serving={"read_timeout": "30s", "shutdown_timeout": "1s"},
    )  # fmt: skip
    srv = Server(config).wait_up()
    stuck = raw_request(
        srv.port, b"POST /features HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
    )
    time.sleep(0.3)
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=30) == 0
    assert time.monotonic() - started < 5
    stuck.close()
    stderr = srv.proc.stderr.read()
    assert "1 requests were still in flight after 1 s" in stderr, stderr
    assert "stopped:" in stderr
    assert "Traceback" not in stderr


# -- the store: no internal address to clients, transitions in the server log ---------------


def test_503_and_readyz_never_show_the_store_address_and_the_log_has_the_transitions(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, servers: Any, redis_server: Any
) -> None:
    config = redis_project(tmp_path, sample_data_dir, fitted_base, redis_server)
    srv = servers(config)
    user = some_user_ids(sample_data_dir, 1)[0]
    assert srv.get(f"/features/{user}").status_code == 200
    redis_server.stop()
    port = str(redis_server.port)
    responses = [
        srv.get(f"/features/{user}"),
        srv.post("/features", {"entities": [user]}),
        srv.get("/readyz"),
    ]
    for response in responses:
        assert response.status_code == 503
        assert port not in response.text
        assert "127.0.0.1" not in response.text
        assert "redis" not in response.text.lower()
    assert responses[0].json() == {"error": "store_unavailable", "message": "store unavailable"}
    assert responses[2].json()["reason"] == "store unavailable"
    redis_server.start()
    from test_serve import materialize_store

    materialize_store(config)
    deadline = time.monotonic() + 10
    while srv.get(f"/features/{user}").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert srv.stop() == 0
    down = [line for line in srv.stderr.splitlines() if "online store down" in line]
    assert len(down) == 1, srv.stderr
    assert f"127.0.0.1:{port}" in down[0]  # the details are in the operator's log
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ mlpipe serve: online store down", down[0])
    assert len(re.findall(r"online store recovered after [\d.]+ s \(\d+ failed calls\)",
                          srv.stderr)) == 1  # fmt: skip


def test_a_frozen_redis_gives_503_within_the_timeout_and_the_server_stays_responsive(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, servers: Any, redis_server: Any
) -> None:
    timeout = 0.5
    config = redis_project(tmp_path, sample_data_dir, fitted_base, redis_server)
    srv = servers(config)
    ids = some_user_ids(sample_data_dir, 20)
    assert srv.get(f"/features/{ids[0]}").status_code == 200
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        for path in (f"/features/{ids[1]}", "/readyz"):
            started = time.monotonic()
            response = srv.get(path)
            took = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert took < timeout + 0.3, (path, took)
        started = time.monotonic()
        response = srv.post("/features", {"entities": ids[:5]})
        assert response.status_code == 503
        assert time.monotonic() - started < timeout + 0.3

        # many clients at once: each answered within its own deadline, and the event loop is
        # never blocked (/healthz answers at once throughout)
        def timed_get(path: str) -> tuple[int, float]:
            with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as http:
                begin = time.monotonic()
                status = http.get(path).status_code
                return status, time.monotonic() - begin

        paths = [f"/features/{ids[i % len(ids)]}" for i in range(24)]
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(timed_get, p) for p in paths]
            health = []
            for _ in range(5):
                health.append(timed_get("/healthz"))
                time.sleep(0.1)
            results = [f.result() for f in futures]
        assert {status for status, _ in results} == {503}
        assert max(took for _, took in results) < timeout + 0.3
        assert {status for status, _ in health} == {200}
        assert max(took for _, took in health) < 0.35  # a blocked loop would take ~0.5 s
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while srv.get(f"/features/{ids[0]}").status_code != 200:
        assert time.monotonic() < deadline, "did not recover after SIGCONT"
        time.sleep(0.05)
    assert srv.metrics()["mlpipe_serve_store_errors_total"] >= 3
    assert srv.stop() == 0, srv.stderr


def test_the_store_timeout_is_one_deadline_for_blocking_and_event_loop_reads(
    redis_server: Any,
) -> None:
    """In process: pointer refresh + fetch + reconnect together take one timeout."""
    import asyncio
    from datetime import UTC, datetime

    from mlpipe_cli.errors import ServiceUnavailable
    from mlpipe_cli.online.redis_store import RedisStore
    from mlpipe_cli.online.store import StoreMetadata

    client = redis_server.client()
    meta = StoreMetadata(
        version="0001-aa", as_of=datetime.now(UTC), finished_at=None, entity_count=1,
        features=["a"], feature_hash="x", entity_keys=["id"], key_types=["int"],
    )  # fmt: skip
    client.hset("t:versions", "0001-aa", meta.to_json())
    client.set("t:live", "0001-aa")
    client.set("t:d:0001-aa:[1]", b"[5]")
    store = RedisStore(redis_server.url, prefix="t", timeout=0.5, pointer_refresh=0.0)
    assert store.get_many([1])[0].values == {"a": 5}
    assert asyncio.run(store.get_many_async([1]))[0].values == {"a": 5}
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        for call in (
            lambda: store.get_many([1]),
            lambda: store.get(1),
            lambda: asyncio.run(store.get_many_async([1])),
            lambda: asyncio.run(store.ping_async()),
        ):
            for _ in range(2):  # the second call also has to reconnect
                started = time.monotonic()
                with pytest.raises(ServiceUnavailable, match="timed out"):
                    call()
                assert time.monotonic() - started < 0.5 + 0.15
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert store.get_many([1])[0].values == {"a": 5}
    assert asyncio.run(store.get_many_async([1]))[0].values == {"a": 5}
    store.close()


# -- authentication and TLS ------------------------------------------------------------------


def test_bearer_token_guards_every_route_but_healthz(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, servers: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    token = "t0k-" + "x" * 40
    monkeypatch.setenv("MLPIPE_TEST_SERVE_TOKEN", token)
    config = make_project(
        tmp_path, sample_data_dir, fitted_base,
        serving={"auth_token": "${MLPIPE_TEST_SERVE_TOKEN}"},
    )  # fmt: skip
    assert token not in config.read_text()
    srv = servers(config)
    user = some_user_ids(sample_data_dir, 1)[0]
    base = f"http://127.0.0.1:{srv.port}"
    assert httpx.get(f"{base}/healthz").status_code == 200  # probes need no token
    routes = [
        ("GET", f"/features/{user}"), ("POST", "/features"), ("POST", "/predict"),
        ("GET", "/readyz"), ("GET", "/info"), ("GET", "/metrics"), ("GET", "/openapi.json"),
        ("GET", "/nope"),
    ]  # fmt: skip
    for method, path in routes:
        missing = httpx.request(method, base + path, json={"entities": [user]})
        assert_one_line_error(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == 'Bearer realm="mlpipe"'
        for wrong in (f"Bearer {token[:-1]}", f"Bearer {token}x", "Bearer", f"Basic {token}",
                      token):  # fmt: skip
            refused = httpx.request(
                method, base + path, json={"entities": [user]}, headers={"authorization": wrong}
            )
            assert_one_line_error(refused, 401, "unauthorized")
            assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    good = {"authorization": f"Bearer {token}"}
    assert httpx.get(f"{base}/features/{user}", headers=good).json()["entity"] == user
    lower = {"authorization": f"bearer {token}"}  # the scheme is case-insensitive
    assert (
        httpx.post(f"{base}/features", json={"entities": [user]}, headers=lower).status_code == 200
    )
    assert httpx.get(f"{base}/metrics", headers=good).status_code == 200
    # an unauthorised POST is refused before its body is read: no 408 wait
    sock = raw_request(
        srv.port, b"POST /features HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"
    )
    sock.settimeout(2)
    assert sock.recv(65536).startswith(b"HTTP/1.1 401 ")
    sock.close()
    assert srv.stop() == 0
    assert token not in srv.stderr


def test_non_loopback_bind_without_a_token_warns(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path
) -> None:
    config = make_project(tmp_path, sample_data_dir, fitted_base)
    srv = Server(config, "--host", "0.0.0.0").wait_up()
    assert srv.stop() == 0
    warning = [line for line in srv.stderr.splitlines() if "warning:" in line]
    assert len(warning) == 1, srv.stderr
    assert "0.0.0.0 (not loopback) without serving.auth_token" in warning[0]
    # loopback (the default): no warning
    srv = Server(config).wait_up()
    assert srv.stop() == 0
    assert "warning:" not in srv.stderr


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:  # the cryptography package is the other way to make one
        from cryptography import x509  # noqa: F401  (fails the test loudly if neither exists)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_serves_https_with_the_given_certificate_and_refuses_bad_files(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("MLPIPE_TEST_SERVE_TOKEN", "secret-token-1")
    config = make_project(
        tmp_path, sample_data_dir, fitted_base,
        serving={"auth_token": "${MLPIPE_TEST_SERVE_TOKEN}"},
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_cli", "serve", "-c", str(config), "--port", str(port),
         "--tls-cert", str(cert), "--tls-key", str(key)],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = ""
        while "listening on" not in line:
            line = proc.stderr.readline()
            assert line, "serve exited before listening"
        assert f"listening on https://127.0.0.1:{port}" in line
        user = some_user_ids(sample_data_dir, 1)[0]
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context) as http:
            response = http.get(
                f"/features/{user}", headers={"authorization": "Bearer secret-token-1"}
            )
            assert response.status_code == 200
            assert response.json()["entity"] == user
            assert http.get("/healthz").status_code == 200
        with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the cert
            httpx.get(f"https://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

    # bad TLS files: one line, exit 2, before anything is bound
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    other_key = tmp_path / "other"
    other_key.mkdir()
    _, mismatched = self_signed(other_key)
    for args, needle in [
        (["--tls-cert", str(cert)], "both a certificate and a key"),
        (["--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(key)], "not a readable file"),
        (["--tls-cert", str(tmp_path / "garbage.pem"), "--tls-key", str(key)], "cannot be used"),
        (["--tls-cert", str(cert), "--tls-key", str(mismatched)], "cannot be used"),
    ]:
        result = run_mlpipe("serve", "-c", config, "--port", free_port(), *args, timeout=60)
        assert result.exit_code == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert needle in lines[0]
        assert "Traceback" not in result.stderr


# -- command line ------------------------------------------------------------------------------


def test_port_out_of_range_is_one_line_and_exit_2(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, cli: Any
) -> None:
    config = make_project(tmp_path, sample_data_dir, fitted_base, materialize=False)
    for port in ("70000", "-1", "65536"):
        result = cli("serve", "-c", config, "--port", port)
        assert result.exit_code == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "--port" in lines[0]
        assert "unexpected" not in lines[0]


# -- string and composite keys on a real server -------------------------------------------------


def string_key_project(tmp_path: Path, online: dict[str, Any]) -> tuple[Path, dict[str, float]]:
    """A pipeline keyed by (city: str, user_id: int), its store written directly: keys of
    different lengths, non-ASCII, one with a comma-free space and one at the byte bound."""
    from datetime import UTC, datetime

    import polars as pl
    import yaml

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import load_config
    from mlpipe_cli.online import open_store, pack_row
    from mlpipe_cli.online.writer import write_version
    from mlpipe_cli.serving.keys import MAX_KEY_BYTES as limit
    from mlpipe_cli.transforms import publish

    cities = ["Z", "Zürich", "東京", "São Paulo", "x" * limit, "Ål"]
    spend = {f"{city}|{user}": float(len(city) * 10 + user) for city in cities for user in (1, 2)}
    pl.DataFrame({"spend": list(spend.values())}).write_parquet(tmp_path / "train.parquet")
    doc = {
        "pipeline": "keys",
        "entity_keys": ["city", "user_id"],
        "artifact_dir": str(tmp_path / "artifacts"),
        "transforms": {
            "data": "train.parquet",
            "columns": {"spend": [{"type": "fill_null", "strategy": "mean"}, {"type": "standard"}]},
        },
        "online_store": online,
        "serving": {"logging": {"enabled": False}},
    }
    config_path = tmp_path / "keys.yaml"
    config_path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    config = load_config(config_path)
    publish(ArtifactStore(tmp_path / "artifacts", "keys"), config.transforms,
            tmp_path / "train.parquet")  # fmt: skip
    store = open_store(config, tmp_path / "artifacts")
    rows = [
        (json.dumps([key.split("|")[0], int(key.split("|")[1])], ensure_ascii=False,
                    separators=(",", ":")), pack_row([value]))
        for key, value in spend.items()
    ]  # fmt: skip
    write_version(
        store, features=["spend"], rows=[rows], as_of=datetime(2026, 7, 1, tzinfo=UTC),
        feature_hash="keys", entity_keys=["city", "user_id"], key_types=["str", "int"],
        expected=len(rows),
    )  # fmt: skip
    store.close()
    return config_path, spend


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_string_and_composite_keys_served_exactly_and_bad_ones_fail_alone(
    tmp_path: Path, servers: Any, request: Any, store: str
) -> None:
    from urllib.parse import quote

    if store == "redis":
        online = {"type": "redis", "url": request.getfixturevalue("redis_server").url}
    else:
        online = {"type": "sqlite", "path": str(tmp_path / "online.sqlite")}
    config, spend = string_key_project(tmp_path, online)
    srv = servers(config)
    good = list(spend)

    def path_of(key: str) -> str:
        city, user = key.split("|")
        return f"/features/{quote(city)},{user}"

    bad_paths = [
        "/features/" + "x" * (MAX_KEY_BYTES + 1) + ",1",  # one byte over the bound
        "/features/%FF,1",  # not UTF-8
        "/features/Z,01",  # not canonical
        "/features/Z",  # one key value of two
        "/features/Z,1,2",
        "/features/Z," + "9" * 5000,
    ]
    for path in bad_paths:
        assert_one_line_error(srv.get(path), 400, "bad_entity")
    for key in good:
        doc = srv.get(path_of(key)).json()
        assert doc["cold_start"] is False, key
        assert doc["features"]["spend"] == spend[key]
        assert doc["entity"] == [key.split("|")[0], int(key.split("|")[1])]
    assert srv.get(f"/features/{quote('Zürich')},3").json()["cold_start"] is True

    def client(seed: int) -> list[tuple[str, int, Any]]:
        out = []
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as http:
            for k in range(30):
                if (seed + k) % 3 == 0:
                    path, key = bad_paths[(seed + k) % len(bad_paths)], None
                else:
                    key = good[(seed * 5 + k) % len(good)]
                    path = path_of(key)
                response = http.get(path)
                out.append((key, response.status_code, response.json()))
        return out

    with ThreadPoolExecutor(12) as pool:
        answers = [a for part in pool.map(client, range(12)) for a in part]
    good_answers = [a for a in answers if a[0] is not None]
    assert len(good_answers) > 200
    assert [a for a in good_answers if a[1] != 200] == []
    for key, _, doc in good_answers:
        assert doc["features"]["spend"] == spend[key]
    assert {a[1] for a in answers if a[0] is None} == {400}
    assert srv.metrics()["mlpipe_serve_store_errors_total"] == 0
    assert srv.stop() == 0, srv.stderr
