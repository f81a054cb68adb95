"""Start a graph from the wiring table without `ros2 launch` (the pip-installed rclpy has no
launch system): one process per node, with its parameter file, parameters and remappings exactly
as the launch files give them.

    python -m apo_ros.nodes.local_launch sim checkpoint:=runs/base/policy teleop_device:=joy bags_dir:=bags
    python -m apo_ros.nodes.local_launch train init_checkpoint:=runs/base/policy

Ctrl-C stops every node (each closes cleanly: the open episode bag is finalized). `LocalGraph` is
the same in Python (the graph tests and `apo-ros bench runtime` use it): an isolated ROS domain
per graph, logs per node, clean shutdown, and Fast DDS shared-memory files of killed nodes removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from apo_ros.nodes.wiring import GRAPHS, Graph, ResolvedNode, resolve

DOMAIN_IDS = range(1, 101)  # 0 is everyone's default domain; above ~101 ports can collide
SHM = "/dev/shm"


class DomainClaim:
    """A ROS_DOMAIN_ID no other LocalGraph on this machine uses while this one is held (a lock
    file per id in the temp dir), tried from a pid-derived start so concurrent runs (pytest-xdist
    workers, other checkouts) spread out."""

    def __init__(self) -> None:
        start = os.getpid() % len(DOMAIN_IDS)
        self._file: IO[str] | None = None
        for k in range(len(DOMAIN_IDS)):
            domain = DOMAIN_IDS[(start + k) % len(DOMAIN_IDS)]
            f = open(os.path.join(tempfile.gettempdir(), f"apo_ros_domain_{domain}.lock"), "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            self._file, self.domain_id = f, domain
            return
        raise RuntimeError(f"every ROS_DOMAIN_ID in {DOMAIN_IDS} is in use by another graph")

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def graph_env(domain_id: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a graph's processes: its own domain, discovery on this host only (or
    graphs on one machine answer each other's services)."""
    env = dict(os.environ if base is None else base)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)  # leaking in breaks the wheels' library path
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    return env


def _shm_files(pid: int) -> set[str]:
    """Fast DDS shared-memory files a process has mapped (segments, port queues, semaphores)."""
    out = set()
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(" ")[-1]
                if path.startswith(f"{SHM}/") and "fastrtps" in path:
                    out.add(path)
    return out


class LocalGraph:
    """The processes of a resolved graph. Use as a context manager; `stop()` always runs."""

    def __init__(self, nodes: list[ResolvedNode], workdir: str, env: dict[str, str] | None = None,
                 domain: DomainClaim | None = None, console: bool = False):
        self.nodes = {n.name: n for n in nodes}
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.domain = domain or DomainClaim()
        self.env = graph_env(self.domain.domain_id, env)
        self.procs: dict[str, subprocess.Popen] = {}
        self.shm: set[str] = set()  # Fast DDS files our processes mapped (removed at the end)
        self._logs: dict[str, IO[bytes]] = {}
        self.console = console  # node output to this terminal instead of <workdir>/<node>.log

    @property
    def domain_id(self) -> int:
        return self.domain.domain_id

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    def logs_tail(self, chars: int = 3000) -> str:
        """The last `chars` of every node's log, each under its name (for a failed check's message)."""
        return "\n".join(f"----- {n}\n{self.log(n)[-chars:]}" for n in self.procs)

    def start(self, name: str | None = None) -> None:
        """Start one node (again, after it died or was killed) or all of them."""
        for n in ([self.nodes[name]] if name else list(self.nodes.values())):
            overrides = self.workdir / f"{n.name}.params.yaml"
            overrides.write_text(n.overrides_yaml())
            log = open(self.log_path(n.name), "ab")
            self._logs[n.name] = log
            cmd = [sys.executable, "-m", f"apo_ros.nodes.{n.executable}", *n.ros_args(str(overrides))]
            out = None if self.console else log
            self.procs[n.name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                  env=self.env, cwd=self.workdir,
                                                  start_new_session=True)

    def dead(self) -> dict[str, int]:
        """Nodes that exited, with their exit codes."""
        return {name: rc for name, p in self.procs.items() if (rc := p.poll()) is not None}

    def note_shm(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                self.shm |= _shm_files(p.pid)

    def send(self, name: str, signum: int) -> None:
        self.note_shm()
        self.procs[name].send_signal(signum)

    def wait(self, name: str, timeout: float) -> int:
        return self.procs[name].wait(timeout)

    def stop(self, timeout: float = 15.0, signum: int = signal.SIGINT) -> dict[str, int | None]:
        """Signal every running node, wait, kill what is left; returns the exit codes."""
        self.note_shm()
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signum)
        deadline = time.monotonic() + timeout
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        codes = {name: p.returncode for name, p in self.procs.items()}
        self.cleanup()
        return codes

    def cleanup(self) -> None:
        """Remove the Fast DDS shared-memory files our (now ended) processes left behind: the
        segments they had mapped, and the port queues and their semaphores of our domain (its
        ports, 7400 + 250 * domain + 0..249, are used by nobody else while we hold the domain;
        ports shared by every domain stay)."""
        if any(p.poll() is None for p in self.procs.values()):
            return
        first = 7400 + 250 * self.domain_id
        ours = {p for p in self.shm if "fastrtps_port" not in p}  # a participant's own segments
        for path in glob.glob(f"{SHM}/*fastrtps_port*"):
            match = re.search(r"fastrtps_port(\d+)", path)
            if match and first <= int(match.group(1)) < first + 250:
                ours.add(path)
        for path in ours:
            with contextlib.suppress(OSError):
                os.unlink(path)
        for log in self._logs.values():
            log.close()

    def __enter__(self) -> LocalGraph:
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.stop()
        finally:
            self.domain.release()


def _parse(argv: list[str]) -> tuple[Graph, dict[str, str]]:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in GRAPHS:
        lines = [__doc__ or "", "graphs and their arguments:"]
        for key, g in GRAPHS.items():
            lines.append(f"  {key}: " + " ".join(f"{a.name}:={a.default!r}" if a.default is not None
                                                 else f"{a.name}:=(required)" for a in g.arguments))
        raise SystemExit("\n".join(lines))
    values = {}
    for item in argv[1:]:
        if ":=" not in item:
            raise SystemExit(f"arguments are name:=value, got {item!r}")
        key, value = item.split(":=", 1)
        values[key] = value
    return GRAPHS[argv[0]], values


def main(argv: list[str] | None = None) -> int:
    graph, values = _parse(sys.argv[1:] if argv is None else argv)
    try:
        nodes = resolve(graph, values)
    except KeyError as err:
        raise SystemExit(str(err.args[0])) from None
    skipped = [s.executable for s in graph.nodes if not s.runs_here]
    if skipped:
        print(f"not started (needs a ROS install): {', '.join(skipped)}", flush=True)
    workdir = tempfile.mkdtemp(prefix="apo-ros-graph-")
    with LocalGraph(nodes, workdir, console=True) as g:
        # the user's own domain and discovery range, so `ros2` tools and other nodes see the graph
        g.env["ROS_DOMAIN_ID"] = os.environ.get("ROS_DOMAIN_ID", "0")
        g.env.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
        if "ROS_AUTOMATIC_DISCOVERY_RANGE" in os.environ:
            g.env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"]
        g.start()
        print(f"started {', '.join(g.procs)} (domain {g.env['ROS_DOMAIN_ID']}); Ctrl-C stops",
              flush=True)
        try:
            while not g.dead():
                time.sleep(0.5)
            print(f"exited: {g.dead()}", flush=True)
        except KeyboardInterrupt:
            pass
        codes = g.stop()
    print(f"exit codes: {codes}")
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
