"""Cost of replaying a scalar-only history (export, a client's catch-up), against one forward.

At the OPT-125M shape (random init, fp32; no download; 125,239,296 parameters) it builds the LM
task and the method exactly as a run does (``hiso.runner.Run.build``), then times the optimiser's
``round_update`` (the one function the server, the clients' catch-up, resume and ``hiso
export`` call) on random averaged scalars, P = 5, tau = 1, for the chosen direction kinds. Each
kind replays ``--rounds`` rounds (one warm-up round first, not timed); the per-round median is
extrapolated to 1,000 rounds (every round costs the same: P direction tensors per parameter
tensor, the model step, and for HiSo the H update). One forward pass is the task's unperturbed
loss on a batch of 16 rows x 64 tokens (median of 3 after one warm-up), measured in the same
process, so ratio = (seconds per replayed round) / (seconds per forward) compares two numbers
taken under the same load.

    .venv/bin/python benchmarks/replay.py [--threads 2] [--rounds 3] [--method hiso]
        [--directions gaussian rademacher_bits] [--layers 12 --hidden 768] [--json out.json]

The machine's load average is printed with the results: on a shared machine only ratios taken
in one run compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def build(model: str, method: str, directions: str, P: int, seq: int):
    from hiso.config import resolve
    from hiso.runner import Run

    cfg = {"name": "bench", "seed": 0,
           "task": {"name": "lm", "model": model, "dataset": "synthetic", "n_train": 60,
                    "n_dev": 0, "n_eval": 10, "max_length": seq},
           "method": {"name": method, "lr": 1e-6, "mu": 1e-3, "perturbations": P,
                      "directions": directions},
           "federation": {"clients": 6, "sampled": 2, "local_steps": 1, "rounds": 1}}
    task, opt, fed = Run(resolve(cfg), Path(tempfile.mkdtemp()), progress=False).build()
    return task, opt, fed


def main() -> None:
    import numpy as np
    import torch

    from lm_step import bench_batch, build_model
    from hiso.protocol import round_seed, step_seeds

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model directory (built at the OPT-125M shape if missing)")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per direction kind")
    ap.add_argument("--P", type=int, default=5)
    ap.add_argument("--method", default="hiso")
    ap.add_argument("--directions", nargs="+", default=["gaussian", "rademacher_bits"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = None
    if args.model is None:
        tmp = tempfile.TemporaryDirectory()
        args.model = str(Path(tmp.name) / "opt-125m-shape")
    if not (Path(args.model) / "config.json").exists():
        build_model(Path(args.model), args.layers, args.hidden)
    seq = 64
    res = {"threads": args.threads, "P": args.P, "tau": 1, "method": args.method, "kinds": {}}
    for kind in args.directions:
        task, opt, fed = build(args.model, args.method, kind, args.P, seq)
        torch.set_num_threads(args.threads)  # the run config's threads key is unset: keep ours
        batch = bench_batch(16, seq, task.fm.module.config.vocab_size)
        task.loss(fed.params, batch, None)
        fwd = []
        for _ in range(3):
            t0 = time.perf_counter()
            task.loss(fed.params, batch, None)
            fwd.append(time.perf_counter() - t0)
        rng = np.random.default_rng(0)
        times = []
        for r in range(args.rounds + 1):
            scalars = rng.standard_normal((1, args.P)).astype(np.float32)
            seeds = step_seeds(round_seed(0, r), 1, args.P)
            t0 = time.perf_counter()
            opt.round_update(fed.params, fed.state, seeds, scalars)
            if r:  # the first round warms the allocator and caches
                times.append(time.perf_counter() - t0)
        per_round, forward = statistics.median(times), statistics.median(fwd)
        res["num_params"] = task.num_params()
        res["kinds"][kind] = {"round_s": times, "forward_s": fwd, "per_round_s": per_round,
                              "forward_median_s": forward, "ratio_round_to_forward": per_round / forward,
                              "extrapolated_1000_rounds_s": 1000 * per_round}
        print(f"{kind:>16}: {per_round:.3f} s per replayed round (median of {args.rounds}), "
              f"forward {forward:.3f} s, ratio {per_round / forward:.2f}; "
              f"1,000 rounds ~ {1000 * per_round:.0f} s", flush=True)
        del task, opt, fed
    res["load_average"] = os.getloadavg()
    print(f"{args.method}, {res['num_params']:,} parameters, P = {args.P}, tau = 1, "
          f"{args.threads} torch threads; load average {res['load_average']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
