"""The Flower apps, and the two ways of running them.

* ``server_app`` / ``client_app``: what a SuperLink and its SuperNodes load (the components of
  the Flower App that :func:`submit` builds). The ServerApp's main loop is
  :class:`hiso.runner.Run` with a Flower federation: same run directory, same resume.
* :func:`simulate`: Flower's simulation engine (``run_simulation``, Ray) in this process.
* :func:`submit`: ``flwr run`` against a running SuperLink (``federation.flower.superlink``);
  waits for the run directory's summary. The ServerApp runs where the SuperLink runs, so
  ``--out`` must be a path on that machine (:mod:`.local` runs everything on this one).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from ...config import dump_yaml, resolve
from ...errors import UserError
from . import client as client_side
from .server import federation_factory

CLIENT_DIR = "flower_clients"  # client state of a simulated run, inside its run directory
LOG = "flower.log"


def serve(grid: Grid, resolved, out: Path, progress: bool = False) -> dict:
    """The ServerApp's main loop: one hiso run whose clients are Flower nodes."""
    from ...runner import Run

    out = Path(out)
    handler = logging.FileHandler(out / LOG, delay=True)  # opened at the first line: in a round
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("hiso.flower")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return Run(resolved, out, progress, make_federation=federation_factory(grid, resolved, out)).execute()
    finally:
        logger.removeHandler(handler)
        handler.close()


def make_client_app(root: Path | None = None) -> ClientApp:
    """A ClientApp; ``root`` holds the clients' state where nodes have no ``state-dir``."""
    app = ClientApp()

    @app.query()
    def setup(msg: Message, context: Context) -> Message:
        return Message(client_side.on_setup(msg.content, context, root), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return Message(client_side.on_round(msg.content, context, root), reply_to=msg)

    return app


# -- the deployed app (components of the Flower App that `submit` builds) -----------------------
server_app = ServerApp()
client_app = make_client_app()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    resolved = resolve(yaml.safe_load(base64.b64decode(str(cfg["config-b64"])).decode()))
    serve(grid, resolved, Path(str(cfg["out"])))


# -- Flower's simulation engine ----------------------------------------------------------------
def simulate(resolved, out: Path, progress: bool = True) -> dict:
    """Run on Flower's simulation engine: one virtual SuperNode per client."""
    from flwr.simulation import run_simulation

    out = Path(out)
    root = out / CLIENT_DIR
    result: dict = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            result["summary"] = serve(grid, resolved, out, progress)
        except BaseException as exc:  # the engine logs and swallows it: hand it to our caller
            result["error"] = exc
            raise

    cpus = os.cpu_count() or 1
    run_simulation(server, make_client_app(root), num_supernodes=resolved.run.federation.clients,
                   backend_config={"client_resources": {"num_cpus": 1},
                                   "init_args": {"num_cpus": cpus, "include_dashboard": False,
                                                 "logging_level": "error", "log_to_driver": False}})
    if "error" in result:
        raise result["error"]
    if "summary" not in result:
        raise RuntimeError("Flower's simulation engine ended without running the ServerApp")
    if result["summary"]["status"] in ("ok", "diverged"):
        shutil.rmtree(root, ignore_errors=True)
    return result["summary"]


# -- a running SuperLink -------------------------------------------------------------------------
APP_TOML = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "hiso-flower"
version = "1.0.0"
description = "hiso's ServerApp and ClientApp (the package must be installed where they run)"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "hiso"

[tool.flwr.app.components]
serverapp = "hiso.deploy.flower.apps:server_app"
clientapp = "hiso.deploy.flower.apps:client_app"

[tool.flwr.app.config]
config-b64 = ""
out = ""
"""


def submit(resolved, out: Path, progress: bool = True, poll: float = 1.0) -> dict:
    """Start the run on the SuperLink at ``federation.flower.superlink``; wait for its summary."""
    out = Path(out).resolve()
    address = resolved.run.federation.flower.superlink
    work = Path(tempfile.mkdtemp(prefix="hiso-flwr-"))
    try:
        app = work / "app"
        app.mkdir()
        (app / "pyproject.toml").write_text(APP_TOML)
        home = work / "home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "hiso"\n\n[superlink.hiso]\naddress = "{address}"\ninsecure = true\n')
        env = {**os.environ, "FLWR_HOME": str(home)}
        conf = base64.b64encode(dump_yaml(resolved.to_dict()).encode()).decode()
        started = time.time()
        proc = subprocess.run([_flwr(), "run", str(app), "hiso", "--format", "json",
                               "--run-config", f'config-b64="{conf}" out="{out}"'],
                              env=env, capture_output=True, text=True)
        try:
            answer = json.loads(proc.stdout)
        except ValueError:
            answer = {}
        run_id = answer.get("run-id") if isinstance(answer, dict) else None
        if proc.returncode != 0 or run_id is None:
            reason = (answer.get("error-message") if isinstance(answer, dict) else None) or (
                proc.stdout + proc.stderr)
            lines = reason.strip().splitlines() or ["no answer"]
            raise UserError(f"federation.flower.superlink: could not start a run on {address}: {lines[-1]}")
        print(f"hiso: Flower run {run_id} on {address}; waiting for {out / 'summary.json'}",
              file=sys.stderr)
        return _wait(out / "summary.json", started, lambda: _run_finished(run_id, env), poll)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _wait(summary: Path, since: float, finished, poll: float, ask_every: int = 15) -> dict:
    """The summary the ServerApp writes once the run ends (newer than ``since``); asks Flower
    whether the run ended (a `flwr` process) every ``ask_every`` polls only."""
    def written():
        if summary.exists() and summary.stat().st_mtime >= since:
            data = json.loads(summary.read_text())
            if data.get("status") in ("ok", "diverged", "failed"):
                return data
        return None

    n = 0
    while (data := written()) is None:
        n += 1
        if n % ask_every == 0 and (status := finished()) is not None:
            if (data := written()) is not None:
                return data
            raise RuntimeError(f"the Flower run ended ({status}) without writing {summary}")
        time.sleep(poll)
    return data


def _run_finished(run_id, env) -> str | None:
    """The run's status once Flower says it finished, else None."""
    proc = subprocess.run([_flwr(), "ls", "hiso", "--run-id", str(run_id), "--format", "json"],
                          env=env, capture_output=True, text=True)
    try:
        runs = json.loads(proc.stdout)["runs"]
        status = runs[0]["status"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return status if str(status).startswith("finished") else None


def _flwr() -> str:
    here = Path(sys.executable).parent / "flwr"
    return str(here) if here.exists() else (shutil.which("flwr") or "flwr")
