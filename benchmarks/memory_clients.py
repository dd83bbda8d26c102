"""Peak memory of a simulation-mode run does not grow with the number of clients.

Default (``--task quadratic``): the same d = 10^6 quadratic with M = 6 and M = 10,000 clients
(2 sampled per round) in separate processes; prints both peaks (ru_maxrss, from summary.json)
and their ratio. Goal: within 5%.

``--task synthetic_clf``: the large-federation study's task (configs/large_federation_synthetic.yaml:
every client's data generated from (data_seed, client id) when it is sampled) with M = 100,
1,000 and 10,000 clients, ``--sampled`` per round; prints each peak and the ratio to M = 100.

    .venv/bin/python benchmarks/memory_clients.py [--dim 1000000] [--rounds 40]
    .venv/bin/python benchmarks/memory_clients.py --task synthetic_clf [--rounds 40] [--sampled 10]
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


def _run(cfg: dict, work: Path, tag: str) -> dict:
    """Write ``cfg``, run it in a fresh process (its peak RSS is the run's own), return its summary."""
    path = work / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = work / f"run-{tag}"
    subprocess.run([sys.executable, "-m", "hiso", "run", str(path), "--out", str(out), "--no-progress"],
                   check=True, cwd=ROOT)
    return json.loads((out / "summary.json").read_text())


def peak(clients: int, dim: int, rounds: int, method: str, work: Path) -> dict:
    cfg = {
        "name": f"mem-{clients}", "seed": 0,
        "task": {"name": "quadratic", "dim": dim, "spectrum": {"kind": "lognormal_condition", "condition": 10.0},
                 "heterogeneity": HET},
        "method": {"name": method, "lr": 1e-4, "mu": 1e-5, "perturbations": 5},
        "federation": {"clients": clients, "sampled": 2, "local_steps": 1, "rounds": rounds},
        "eval": {"every": rounds},
    }
    return _run(cfg, work, str(clients))


def peak_synthetic(clients: int, sampled: int, rounds: int, method: str, work: Path) -> dict:
    cfg = yaml.safe_load((ROOT / "configs" / "large_federation_synthetic.yaml").read_text())
    cfg["name"] = f"mem-syn-{clients}"
    cfg["method"].update(name=method, lr=0.08)
    cfg["federation"].update(clients=clients, sampled=sampled, rounds=rounds)
    cfg["eval"] = {"every": rounds}
    return _run(cfg, work, f"syn-{clients}")


def main_synthetic(args) -> None:
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for M in (100, 1_000, 10_000):
            peaks[M] = peak_synthetic(M, args.sampled, args.rounds, args.method, Path(tmp))["peak_memory_bytes"]
    print(f"task=synthetic_clf method={args.method} rounds={args.rounds} sampled={args.sampled} "
          f"(simulation mode)")
    for M, b in peaks.items():
        print(f"peak RSS, M={M:>6,}: {b / 2**20:9.1f} MiB   ratio to M=100: {b / peaks[100]:.4f}")
    worst = max(peaks.values()) / peaks[100]
    print(f"largest ratio: {worst:.4f} (goal: <= 1.05) -> {'MET' if worst <= 1.05 else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["quadratic", "synthetic_clf"], default="quadratic")
    ap.add_argument("--dim", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--sampled", type=int, default=10, help="synthetic_clf: clients per round")
    ap.add_argument("--method", default="hiso")
    args = ap.parse_args()
    if args.task == "synthetic_clf":
        return main_synthetic(args)
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
