"""A real Flower deployment on this machine: one SuperLink and N SuperNodes on 127.0.0.1.

``hiso flower local CONFIG --out DIR`` starts the SuperLink (at ``federation.flower.superlink``)
and one SuperNode per client, each behind a counting relay (:mod:`.wire`), submits the run,
waits for it, writes ``transport.json`` (bytes each node's sockets sent and received) into the
run directory, and stops every process it started. ``hiso flower up`` starts the same
deployment and keeps it until interrupted, for ``hiso run --set federation.backend=flower``.

Processes run in their own sessions (the SuperLink starts a ServerApp process per run, a
SuperNode a ClientApp process per message): stopping one stops its whole process group.
TLS is off (``--insecure``): everything stays on the loopback interface.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ... import io
from ...errors import UserError

TRANSPORT = "transport.json"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} is not listening on port {port} after {seconds:.0f} s")


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every process below ``pid`` (Flower detaches some: the SuperLink
    starts its SuperExec in a new session, which starts the ServerApps)."""
    parent, cmd = {}, {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = {}, [pid]
    while frontier:
        p = frontier.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in found:
                found[child] = cmd[child]
                frontier.append(child)
    return found


class LocalDeployment:
    """SuperLink + one SuperNode per client on loopback; a context manager that stops them."""

    def __init__(self, clients: int, work: Path, port: int):
        self.clients, self.work, self.port = clients, Path(work), port
        self.procs: dict[str, subprocess.Popen] = {}
        self.relays = None
        self.env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0",
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def __enter__(self) -> "LocalDeployment":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        from .wire import Relays

        self.work.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", self.port)) == 0:
                raise UserError(f"federation.flower.superlink: port {self.port} is already in use")
        self._spawn("superlink", [_bin("flower-superlink"), "--insecure", "--host", "127.0.0.1",
                                  "--port", str(self.port)])
        _wait_port(self.port, self.procs["superlink"], 120, "flower-superlink")
        self.relays = Relays(self.port)
        for c in range(self.clients):
            self.start_node(c)

    def start_node(self, c: int) -> None:
        """Start (or restart) the SuperNode of client c; its state directory is kept."""
        state = self.work / f"node-{c}"
        state.mkdir(parents=True, exist_ok=True)
        relay = self.relays.open(c)
        self._spawn(f"node-{c}", [
            _bin("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{relay}",
            "--host", "127.0.0.1", "--port", str(_free_port()),
            "--node-config", f'partition-id={c} num-partitions={self.clients} state-dir="{state}"'])

    def wait_connected(self, seconds: float) -> None:
        """Until every node has registered (sent its first requests through its relay)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            counts = self.relays.snapshot()
            if all(any(ep.startswith("/v1/fleet/activate") for ep in counts[c].endpoints)
                   for c in range(self.clients)):
                return
            time.sleep(0.5)
        raise RuntimeError(f"SuperNodes not connected after {seconds:.0f} s; logs in {self.work}")

    def kill_node(self, c: int) -> None:
        """SIGKILL client c's SuperNode and its ClientApp processes (a crash, not a shutdown)."""
        self._signal(f"node-{c}", signal.SIGKILL, 10)

    def stop(self) -> None:
        for name in [n for n in self.procs if n.startswith("node-")] + ["superlink"]:
            self._signal(name, signal.SIGTERM, 20)
        if self.relays is not None:
            self.relays.close()
            self.relays = None

    def transport(self) -> dict:
        return {c: asdict(n) for c, n in self.relays.snapshot().items()}

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = (self.work / f"{name}.log").open("ab")
        env = {**self.env, "FLWR_HOME": str(self.work / "flwr-home" / name)}
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            cwd=self.work, start_new_session=True)
        log.close()

    def _signal(self, name: str, sig: int, wait: float) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        below = descendants(proc.pid)
        try:
            os.killpg(proc.pid, sig)  # the session we started for it: it and its app processes
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
        for pid in below:  # those it started in sessions of their own, if still there
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def superlink_port(resolved) -> int:
    address = resolved.run.federation.flower.superlink
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        raise UserError(f"federation.flower.superlink: {address!r}; a local deployment listens "
                        f"on 127.0.0.1:PORT")
    return int(port)


def run_local(resolved, out: Path, idle: float = 10.0, progress: bool = False) -> dict:
    """Deploy on loopback, run, count each node's bytes, stop everything; the run's summary."""
    from . import apps

    out = Path(out).resolve()
    work = out.parent / f".{out.name}.flower"
    fed = resolved.run.federation
    with LocalDeployment(fed.clients, work, superlink_port(resolved)) as dep:
        dep.wait_connected(300)
        before = dep.relays.snapshot()
        time.sleep(idle)  # what a connected node exchanges while no run is going on
        start = dep.relays.snapshot()
        t0 = time.monotonic()
        summary = apps.submit(resolved, out, progress)
        seconds = time.monotonic() - t0
        end = dep.relays.snapshot()
    record = {
        "counted": "TCP payload bytes each SuperNode's sockets sent (up) and received (down), "
                   "through a counting relay to the SuperLink, by Fleet API endpoint; HTTP/1.1, "
                   "TLS off, loopback",
        "seconds": round(seconds, 3),
        "idle_seconds": idle,
        "nodes": {str(c): asdict(end[c].minus(start[c])) for c in sorted(end)},
        "idle": {str(c): asdict(start[c].minus(before[c])) for c in sorted(start)},
    }
    io.atomic_write_json(out / TRANSPORT, record)
    return summary


# -- command line ------------------------------------------------------------------------------
def add_commands(sub) -> None:
    p = sub.add_parser("flower", help="run on a local Flower deployment (SuperLink + SuperNodes)",
                       description="Flower on this machine (needs the flower extra).")
    fsub = p.add_subparsers(dest="flower_command", required=True)
    lo = fsub.add_parser("local", help="start a SuperLink and one SuperNode per client on "
                         "127.0.0.1, run CONFIG on them, count bytes on the wire, stop them")
    lo.add_argument("config")
    lo.add_argument("--out", required=True, help="run directory (transport.json is added)")
    lo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    lo.add_argument("--idle", type=float, default=10.0,
                    help="seconds of idle traffic measured before the run (default 10)")
    lo.set_defaults(handler=_cmd_local)
    up = fsub.add_parser("up", help="start a SuperLink and N SuperNodes on 127.0.0.1 and keep "
                         "them until interrupted (then stop them)")
    up.add_argument("--nodes", type=int, required=True, help="SuperNodes (partition-id 0..N-1)")
    up.add_argument("--port", type=int, default=9093, help="SuperLink port (default 9093)")
    up.add_argument("--dir", required=True, help="logs and the nodes' state directories")
    up.set_defaults(handler=_cmd_up)
    from .table import add_commands as add_table

    add_table(fsub)


def _cmd_local(args) -> int:
    from ...config import load

    resolved = load(args.config, args.overrides + ["federation.backend=flower"])
    summary = run_local(resolved, Path(args.out), args.idle)
    print(f"{args.out}: {summary['status']} after {summary['rounds']} rounds, "
          f"{summary['metric']} = {summary['final_metric']}", file=sys.stderr)
    return 0 if summary["status"] in ("ok", "diverged") else 1


def _cmd_up(args) -> int:
    if args.nodes < 1:
        raise UserError(f"--nodes: {args.nodes} < 1")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with LocalDeployment(args.nodes, Path(args.dir), args.port):
        print(f"SuperLink on 127.0.0.1:{args.port}, {args.nodes} SuperNodes; Ctrl-C stops them",
              file=sys.stderr)
        try:
            while not stop:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0
