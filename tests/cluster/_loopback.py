"""A real multi-node Ray cluster on this machine's loopback, started with ``ray start``.

Each node is one ``ray start --block`` in a session of its own, so a node is stopped (or
killed, to simulate the loss of a machine) by signalling the processes of that session,
and nothing else on the machine is touched. ``ray stop`` would end every Ray on the host, other test
sessions' included, so it is not used here.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
STAGETUNE = str(Path(sys.executable).with_name("stagetune"))


# Each node gets an address of its own in 127.0.0.0/8 (all of it is loopback on Linux).
# Ray replaces 127.0.0.1 itself by the host's outward address, so it is not used.
HEAD_IP = "127.0.0.2"


def node_ip(index: int) -> str:
    return f"127.0.0.{2 + index}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RayNode:
    name: str
    process: subprocess.Popen
    log: Path
    temp_dir: Path
    node_id: str = ""

    @property
    def sid(self) -> int:
        return self.process.pid  # started with start_new_session: its own session

    def pids(self) -> list[int]:
        """Live processes of this node: its session, and any that left it but name
        this node's temp dir on their command line."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            # fields after the command name: state, ppid, pgrp, session; a zombie is dead
            state, _, _, sid = stat.rsplit(")", 1)[1].split()[:4]
            if state == "Z":
                continue
            # Ray's workers get process groups of their own but stay in the node's session
            if int(sid) == self.sid or str(self.temp_dir) in cmd:
                found.append(int(entry.name))
        return found

    def signal_all(self, sig: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM ``ray start --block``, which shuts its node down as ``ray stop`` does,
        then SIGKILL whatever is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            self.process.poll()  # reap it, or its zombie would count as alive
            time.sleep(0.2)
        self.signal_all(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def kill(self) -> None:
        """Lose the node at once, as a machine that dies: SIGKILL every process."""
        self.signal_all(signal.SIGKILL)
        self.process.wait(timeout=10)


@dataclass
class LoopbackCluster:
    """A head and worker nodes on 127.0.0.1, each with its own CPUs and resources."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="st-ray-",
                                                                     dir="/tmp")))
    nodes: dict[str, RayNode] = field(default_factory=dict)
    port: int = 0
    dashboard_port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(32))

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{HEAD_IP}:{self.dashboard_port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for every process that talks to this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            RAY_USAGE_STATS_ENABLED="0",
            RAY_AUTH_MODE="token",  # the default in this Ray; a token of this cluster's own
            RAY_AUTH_TOKEN=self.token,
            # A node that dies is noticed in a few seconds, not the default half minute.
            RAY_health_check_initial_delay_ms="1000",
            RAY_health_check_period_ms="1000",
            RAY_health_check_timeout_ms="1000",
            RAY_health_check_failure_threshold="3",
        )
        env.update(extra)
        return env

    @staticmethod
    def _ports() -> list[str]:
        """Ports of one node's own servers: free ones, so two nodes share a host."""
        return ["--node-manager-port", str(free_port()),
                "--object-manager-port", str(free_port()),
                "--dashboard-agent-listen-port", str(free_port()),
                "--dashboard-agent-grpc-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port()),
                "--metrics-export-port", str(free_port()),
                "--min-worker-port", "0", "--max-worker-port", "0"]  # 0: any free port

    def _start(self, name: str, args: list[str], env: dict[str, str],
               timeout: float = 90.0) -> RayNode:
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([RAY, "start", *args, "--temp-dir", str(temp_dir),
                                     "--disable-usage-stats", "--block"],
                                    stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, cwd=self.root)
        node = RayNode(name, proc, log, temp_dir)
        self.nodes[name] = node
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start of {name} failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        return node

    def start_head(self, *, num_cpus: int = 1, resources: dict[str, float] | None = None,
                   dashboard: bool = False) -> RayNode:
        self.port = self.port or free_port()
        self.dashboard_port = self.dashboard_port or free_port()
        args = ["--head", "--node-ip-address", HEAD_IP, "--port", str(self.port),
                "--num-cpus", str(num_cpus), "--num-gpus", "0",
                "--resources", json.dumps(resources or {"head_slot": 1}),
                "--ray-client-server-port", str(free_port()),
                "--include-dashboard", "true" if dashboard else "false",
                "--dashboard-host", HEAD_IP, "--dashboard-port", str(self.dashboard_port),
                *self._ports()]
        node = self._start("head", args, self.env())
        node.node_id = self._wait_nodes(1)[-1]
        return node

    def add_node(self, name: str, *, num_cpus: int = 1,
                 resources: dict[str, float] | None = None) -> RayNode:
        before = set(self.alive_node_ids())
        args = ["--address", self.address, "--node-ip-address", node_ip(len(self.nodes)),
                "--num-cpus", str(num_cpus), "--num-gpus", "0",
                "--resources", json.dumps(resources or {f"{name}_slot": 1}), *self._ports()]
        node = self._start(name, args, self.env())
        ids = self._wait_nodes(len(before) + 1)
        node.node_id = next(i for i in ids if i not in before)
        return node

    def alive_node_ids(self) -> list[str]:
        """Node ids the head's GCS counts alive, oldest first (``ray list nodes``)."""
        out = subprocess.run([RAY, "list", "nodes", "--address", self.address, "--format",
                              "json", "--filter", "state=ALIVE", "--limit", "100"],
                             env=self.env(), capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            return []
        rows = json.loads(out.stdout)
        rows.sort(key=lambda r: r.get("start_time_ms") or 0)
        return [r["node_id"] for r in rows]

    def _wait_nodes(self, n: int, timeout: float = 60.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = self.alive_node_ids()
            if len(ids) == n:
                return ids
            time.sleep(0.5)
        raise RuntimeError(f"cluster did not reach {n} alive nodes")

    def stop(self) -> None:
        """Stop every node (workers first), then check that none of its processes live."""
        for name in [n for n in self.nodes if n != "head"] + ["head"]:
            if name in self.nodes:
                self.nodes[name].stop()
        left = [pid for node in self.nodes.values() for pid in node.pids()]
        self.nodes.clear()
        if left:
            raise RuntimeError(f"processes of the loopback cluster survived: {left}")

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
