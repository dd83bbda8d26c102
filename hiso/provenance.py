"""Where a result came from: code version, installed packages and the machine.

Read without importing torch or any other heavy package (package versions come from the
installed distributions' metadata), so that reporting stays light.
"""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

# Printed first in a manifest: the packages that decide our numbers.
KEY_PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "numpy", "snakemake",
                "flwr", "gguf", "accelerate", "hiso")


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(cwd: Path | str = ".") -> str:
    """``<commit>`` or ``<commit> (dirty)``, or ``unknown`` outside a git checkout."""
    commit = _git("rev-parse", "HEAD", cwd=Path(cwd))
    if not commit:
        return "unknown"
    # Untracked files count: a new module that is not committed changes results as much as an edit.
    dirty = _git("status", "--porcelain", "--untracked-files=normal", cwd=Path(cwd))
    return f"{commit} (dirty)" if dirty else commit


def installed_packages() -> dict[str, str]:
    """Every installed distribution, normalised name -> version."""
    out = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name:
            out[name] = dist.version
    return dict(sorted(out.items()))


def device_name() -> str:
    """The GPU's name where ``nvidia-smi`` lists one, else the CPU model, with the core count."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        gpus = [g.strip() for g in out.stdout.splitlines() if g.strip()] if out.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        gpus = []
    if gpus:
        return f"GPU: {len(gpus)} x {gpus[0]}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {model}, {os.cpu_count()} logical cores"


def provenance(tier: str | None = None, cwd: Path | str = ".") -> list[tuple[str, str]]:
    """(key, value) lines: tier, commit, python, device, key packages, then every package."""
    pkgs = installed_packages()
    rows = []
    if tier is not None:
        rows.append(("tier", tier))
    rows += [("git", git_state(cwd)),
             ("python", platform.python_version()),
             ("platform", platform.platform()),
             ("device", device_name())]
    rows += [(name, pkgs.get(name, "not installed")) for name in KEY_PACKAGES]
    rows.append(("all packages", " ".join(f"{k}=={v}" for k, v in pkgs.items())))
    return rows
