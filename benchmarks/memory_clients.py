"""Peak memory of a simulation-mode run does not grow with the number of clients.

Runs the same d = 10^6 quadratic with M = 6 and M = 10,000 clients (2 sampled per round) in
separate processes and prints both peaks (ru_maxrss, from summary.json) and their ratio.
Goal: within 5%.

    .venv/bin/python benchmarks/memory_clients.py [--dim 1000000] [--rounds 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


HET = 0.1


def peak(clients: int, dim: int, rounds: int, method: str, work: Path) -> dict:
    cfg = {
        "name": f"mem-{clients}", "seed": 0,
        "task": {"name": "quadratic", "dim": dim, "spectrum": {"kind": "lognormal_condition", "condition": 10.0},
                 "heterogeneity": HET},
        "method": {"name": method, "lr": 1e-4, "mu": 1e-5, "perturbations": 5},
        "federation": {"clients": clients, "sampled": 2, "local_steps": 1, "rounds": rounds},
        "eval": {"every": rounds},
    }
    path = work / f"{clients}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = work / f"run-{clients}"
    subprocess.run([sys.executable, "-m", "hiso", "run", str(path), "--out", str(out), "--no-progress"],
                   check=True, cwd=ROOT)
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--method", default="hiso")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = peak(6, args.dim, args.rounds, args.method, Path(tmp))
        large = peak(10_000, args.dim, args.rounds, args.method, Path(tmp))
    a, b = small["peak_memory_bytes"], large["peak_memory_bytes"]
    print(f"method={args.method} d={args.dim} rounds={args.rounds} sampled=2 (simulation mode)")
    print(f"peak RSS, M=6:      {a / 2**20:9.1f} MiB")
    print(f"peak RSS, M=10,000: {b / 2**20:9.1f} MiB")
    print(f"ratio M=10,000 / M=6: {b / a:.4f}  (goal: within 5%, i.e. <= 1.05) -> "
          f"{'MET' if b / a <= 1.05 else 'MISSED'}")


if __name__ == "__main__":
    main()
