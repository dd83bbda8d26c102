"""Cost of replaying a scalar-only history (export, a client's catch-up), against one forward.

At the OPT-125M shape (random init, fp32; no download; 125,239,296 parameters) it builds the LM
task and the method exactly as a run does (``hiso.runner.Run.build``), then times the optimiser's
``round_update`` (the one function the server, the clients' catch-up, resume and ``hiso
export`` call; for HiSo it includes the H update) on random averaged scalars, P = 5, tau = 1, for
each direction kind and each path: ``plain`` (the update before the fast path: each direction a
float32 tensor added in turn, tensors one after the other), ``fast`` (torch ops only: signs
folded byte by byte, tensors on threads, slices in cache) and ``fused`` (what replays run where
numba is installed: ``hiso.fused``'s one compiled pass per element, for ``rademacher_bits`` at
tau = 1; Gaussian directions have no fused path). All three give the same numbers bit for bit.
Each replays ``--rounds`` rounds after one untimed warm-up round; the per-round median is
extrapolated to 1,000 rounds (every round costs the same). One forward is the task's unperturbed
loss on a batch of 16 rows x 64 tokens, timed between the replays in the same process (median
over all of them), so ratio = (seconds per replayed round) / (seconds per
forward) compares numbers taken under the same load. CPU seconds (all threads) are printed
beside wall seconds: on a machine others are using, the CPU-time ratio is the steadier figure
(it counts the work, not the waiting; it does not show the threads' overlap).

    .venv/bin/python benchmarks/replay.py [--threads 2] [--rounds 3] [--method hiso]
        [--directions gaussian rademacher_bits] [--paths plain fast fused] [--layers 12 --hidden 768]
        [--json out.json]

The machine's load average is printed with the results: on a shared machine only ratios taken
in one run compare.
"""

from __future__ import annotations

import argparse
import contextlib
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


def build(model: str, method: str, P: int, seq: int):
    from hiso.config import resolve
    from hiso.runner import Run

    cfg = {"name": "bench", "seed": 0,
           "task": {"name": "lm", "model": model, "dataset": "synthetic", "n_train": 60,
                    "n_dev": 0, "n_eval": 10, "max_length": seq},
           "method": {"name": method, "lr": 1e-6, "mu": 1e-3, "perturbations": P},
           "federation": {"clients": 6, "sampled": 2, "local_steps": 1, "rounds": 1}}
    resolved = resolve(cfg)
    task, _, fed = Run(resolved, Path(tempfile.mkdtemp()), progress=False).build()
    return resolved, task, fed


@contextlib.contextmanager
def plain_update():
    """The update as it was before the fast path: every direction drawn as a float32 tensor and
    added in turn (zo.combine_loop), tensors one after the other (torch's threads inside each
    op), each step applied to whole tensors. Same numbers, bit for bit
    (tests/test_fast_replay.py)."""
    import hiso.optimizers.base as base
    from hiso import fused
    from hiso.zo import combine_loop

    saved = base.combine, base.each_tensor, base.UPDATE_SLICE
    base.combine = combine_loop
    base.each_tensor = lambda params, fn, sampler: [fn(i, sampler) for i in range(len(params))]
    base.UPDATE_SLICE = 1 << 62  # whole tensors after combine
    try:
        with fused.disabled():
            yield
    finally:
        base.combine, base.each_tensor, base.UPDATE_SLICE = saved


def main() -> None:
    import numpy as np
    import torch

    from lm_step import bench_batch, build_model
    from hiso.directions import DirectionSampler
    from hiso.protocol import round_seed, step_seeds

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model directory (built at the OPT-125M shape if missing)")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds per direction kind and path")
    ap.add_argument("--P", type=int, default=5)
    ap.add_argument("--method", default="hiso")
    ap.add_argument("--directions", nargs="+", default=["gaussian", "rademacher_bits"])
    ap.add_argument("--paths", nargs="+", default=["plain", "fast", "fused"],
                    choices=["plain", "fast", "fused"],
                    help="plain: the update before the fast path; fast: torch ops only; fused: "
                         "hiso.fused's compiled kernel (needs numba; rademacher_bits only)")
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
    resolved, task, fed = build(args.model, args.method, args.P, seq)
    torch.set_num_threads(args.threads)  # the run config's threads key is unset: keep ours
    batch = bench_batch(16, seq, task.fm.module.config.vocab_size)
    fwd: list[float] = []
    fwd_cpu: list[float] = []

    def forwards(k: int) -> None:
        for _ in range(k):
            t0, c0 = time.perf_counter(), time.process_time()
            task.loss(fed.params, batch, None)
            fwd.append(time.perf_counter() - t0)
            fwd_cpu.append(time.process_time() - c0)

    task.loss(fed.params, batch, None)  # warm-up
    forwards(2)
    res = {"threads": args.threads, "P": args.P, "tau": 1, "method": args.method,
           "num_params": task.num_params(), "tensors": len(fed.params), "runs": []}
    rng = np.random.default_rng(0)
    from hiso import fused

    with fused.replaying():
        fused_ok = fused.enabled()
    if "fused" in args.paths and not fused_ok:
        sys.exit("--paths fused: hiso.fused is off here (numba missing, HISO_FUSED=0, or its "
                 "self-check failed): pip install 'hiso[fast]'")
    contexts = {"plain": plain_update, "fast": fused.disabled, "fused": fused.replaying}
    for kind in args.directions:
        opt = resolved.method_cls(resolved.method_cfg, DirectionSampler(kind), task)
        for path in args.paths:
            if path == "fused" and kind != "rademacher_bits":
                continue  # Gaussian directions have no fused kernel: it would time `fast` again
            times, cpu = [], []
            with contexts[path]():
                for r in range(args.rounds + 1):
                    scalars = rng.standard_normal((1, args.P)).astype(np.float32)
                    seeds = step_seeds(round_seed(0, r), 1, args.P)
                    t0, c0 = time.perf_counter(), time.process_time()
                    opt.round_update(fed.params, fed.state, seeds, scalars)
                    if r:  # the first round warms the allocator and caches
                        times.append(time.perf_counter() - t0)
                        cpu.append(time.process_time() - c0)
            res["runs"].append({"directions": kind, "path": path, "round_s": times,
                                "round_cpu_s": cpu, "per_round_s": statistics.median(times),
                                "per_round_cpu_s": statistics.median(cpu)})
            print(f"{kind:>16} {path:>5}: {statistics.median(times):.3f} s per replayed round "
                  f"({statistics.median(cpu):.3f} CPU s; median of {args.rounds})", flush=True)
        forwards(1)
    forward, forward_cpu = statistics.median(fwd), statistics.median(fwd_cpu)
    res["forward_s"], res["forward_median_s"] = fwd, forward
    res["forward_cpu_s"], res["forward_median_cpu_s"] = fwd_cpu, forward_cpu
    res["load_average"] = os.getloadavg()
    print(f"one forward (16 x {seq} tokens): median {forward:.3f} s of {len(fwd)}")
    for run in res["runs"]:
        run["ratio_round_to_forward"] = run["per_round_s"] / forward
        run["ratio_round_to_forward_cpu"] = run["per_round_cpu_s"] / forward_cpu
        run["extrapolated_1000_rounds_s"] = 1000 * run["per_round_s"]
        print(f"{run['directions']:>16} {run['path']:>5}: round / forward = "
              f"{run['ratio_round_to_forward']:.2f} wall, {run['ratio_round_to_forward_cpu']:.2f} CPU; "
              f"1,000 rounds ~ {1000 * run['per_round_s']:.0f} s")
    print(f"{args.method}, {res['num_params']:,} parameters in {res['tensors']} tensors, P = {args.P}, "
          f"tau = 1, {args.threads} torch threads; load average {res['load_average']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
