"""One run: config -> run directory (config.yaml, metrics.jsonl, history.jsonl, ledger.csv,
summary.json).

For scalar-only methods ``history.jsonl`` (one line per completed round: seed, sampled clients,
averaged scalars, train loss) is the run's state: a killed run is resumed by replaying it, and
ends with the same parameter hash as an uninterrupted one. The first-order baselines checkpoint
their parameters at every evaluation instead, and keep their final parameters in
``final.safetensors`` when the run ends (``hiso export`` reads them). A finished run with the same config is left
alone; a directory holding another config is refused.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import io
from .config import Resolved, dump_yaml
from .device import resolve_device
from .directions import DirectionSampler
from .errors import UserError
from .ledger import Ledger
from .optimizers.base import ScalarOptimizer
from .progress import ProgressLog
from .protocol import VectorFederation, ZOFederation
from .rundir import RunLock, is_bookkeeping, remove_stale_tmp
from .zo import params_sha256

CONFIG, METRICS, HISTORY, LEDGER, SUMMARY, CHECKPOINT, FINAL = (
    "config.yaml", "metrics.jsonl", "history.jsonl", "ledger.csv", "summary.json", "checkpoint.pt",
    "final.safetensors")


def make_run_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the run directory ({exc.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"{out}: run directory is not writable")


DAMAGED_SUMMARY = "delete it and rerun to resume the run from its history"


def check_run_dir(out: Path, resolved: Resolved) -> str:
    """'new', 'resume' or 'done'; raises UserError when ``out`` holds another run."""
    if not out.exists():
        return "new"
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    cfg_path = out / CONFIG
    if not cfg_path.exists():
        if any(not is_bookkeeping(p.name) for p in out.iterdir()):
            raise UserError(f"{out}: not empty and holds no {CONFIG}; refusing to mix results")
        return "new"
    import yaml

    old = io.read_mapping(cfg_path, yaml.safe_load, "the YAML mapping a run writes",
                          "the run it belonged to cannot be identified: use another --out",
                          errors=(yaml.YAMLError,))
    new = resolved.to_dict()
    if old != new:
        diff = _first_difference(old, new)
        raise UserError(f"{out}: holds a run of another config (differs at {diff}); "
                        f"use another --out")
    summary = out / SUMMARY
    if summary.exists() and io.load_json(summary, DAMAGED_SUMMARY).get("status") in ("ok", "diverged"):
        return "done"
    return "resume"


def _first_difference(a, b, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k, object()) != b.get(k, object()):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
    return path or "<root>"


def build_task_and_method(r: Resolved):
    """The task and the method of a resolved config (sets the run's torch thread count)."""
    run = r.run
    if run.runtime.threads:
        torch.set_num_threads(run.runtime.threads)
    task = r.task_cls(r.task_cfg, run.federation.clients, run.seed, run.runtime)
    kind = getattr(r.method_cfg, "directions", "gaussian")
    method = r.method_cls(r.method_cfg, DirectionSampler(kind, device=run.runtime.device), task)
    method.check_task(task)
    return task, method


class Run:
    """``make_federation(task, method, ledger)``, when given, builds the federation that runs the
    rounds (e.g. one whose clients are reached over a network, ``hiso.deploy``); the run
    directory, evaluation and resume are the same whatever runs the rounds."""

    def __init__(self, resolved: Resolved, out: Path, progress: bool = True, make_federation=None):
        self.r = resolved
        self.out = Path(out)
        self.progress = progress
        self.make_federation = make_federation

    def build(self):
        run = self.r.run
        task, method = build_task_and_method(self.r)
        ledger = Ledger(keep_entries=False)  # rows go to ledger.csv; memory stays flat
        if self.make_federation is not None:
            fed = self.make_federation(task, method, ledger)
        elif isinstance(method, ScalarOptimizer):
            fed = ZOFederation(task, method, run.federation, run.seed, ledger)
        else:
            fed = VectorFederation(task, method, run.federation, run.seed, ledger)
        return task, method, fed

    # -- main --------------------------------------------------------------------------------
    def execute(self) -> dict:
        # runtime.threads is process-wide in torch: give the caller its own setting back
        threads = torch.get_num_threads()
        try:
            return self._execute()
        finally:
            torch.set_num_threads(threads)

    def _execute(self) -> dict:
        # the device a run uses is part of its identity: seeded directions differ across devices
        self.r.run.runtime.device = resolve_device(self.r.run.runtime.device)
        if str(self.out) in ("", "."):
            raise UserError("--out: give a run directory (refusing to write into the current directory)")
        status = check_run_dir(self.out, self.r)
        if status == "done":
            return self._done()
        task, method, fed = self.build()  # validation errors surface before anything is written
        make_run_dir(self.out)
        with RunLock(self.out):
            # checked again under the lock: another process may have written it meanwhile
            status = check_run_dir(self.out, self.r)
            if status == "done":
                return self._done()
            remove_stale_tmp(self.out)
            if status == "new":
                io.atomic_write_text(self.out / CONFIG, dump_yaml(self.r.to_dict()))
            task.write_artifacts(self.out)  # optional per-run files (a no-op for most tasks)
            try:
                return self._loop(task, method, fed, status == "resume")
            except UserError:
                raise
            except Exception as exc:  # a crash is recorded, then re-raised for the exit status
                self._record_failure(task, fed, exc)
                raise

    def _done(self) -> dict:
        print(f"{self.out}: finished run with this config; nothing to do", file=sys.stderr)
        return io.load_json(self.out / SUMMARY, DAMAGED_SUMMARY)

    def _record_failure(self, task, fed, exc: BaseException) -> None:
        import traceback

        err = f"{type(exc).__name__}: {exc}"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            last = getattr(self, "_last", None)
            self._write_summary(task, fed, "failed", last, last["round"] if last else 0,
                                error=err, traceback=tb)
        except OSError:
            pass  # e.g. the disk is full: the error itself still reaches the command line

    def _resume(self, fed) -> tuple[int, list[dict], float]:
        """Restore state from the run directory; returns (next round, kept metrics, wall)."""
        start = 0
        if isinstance(fed, ZOFederation):
            for rec in io.read_jsonl(self.out / HISTORY):
                if rec.get("round") != start:
                    break
                fed.replay(start, int(rec["seed"]), rec["clients"], np.asarray(rec["scalars"], np.float32))
                if rec["train_loss"] is not None:
                    fed.last_loss = rec["train_loss"]
                start += 1
            self._rewrite_jsonl(HISTORY, lambda rec: rec["round"] < start)
        elif (self.out / CHECKPOINT).exists():
            try:
                ck = torch.load(self.out / CHECKPOINT, weights_only=True)
                ck["params"], ck["state"], ck["round"]  # noqa: B018 (present?)
            except Exception:
                raise UserError(f"{self.out / CHECKPOINT}: damaged (not a checkpoint this program "
                                f"wrote); delete it to restart the run from round 0") from None
            for dst, src in zip(fed.params + fed.state, ck["params"] + ck["state"]):
                dst.copy_(src)
            start = int(ck["round"])
            fed.last_loss = ck.get("train_loss")
        else:
            self._rewrite_jsonl(HISTORY, lambda rec: False)
        kept = self._rewrite_jsonl(METRICS, lambda rec: rec["round"] < start)
        led = Ledger.load(self.out / LEDGER, start, keep_entries=False)
        fed.ledger = led
        led.start_file(self.out / LEDGER)
        wall = kept[-1]["wall_seconds"] if kept else 0.0
        return start, kept, wall

    def _rewrite_jsonl(self, name: str, keep) -> list[dict]:
        recs = [rec for rec in io.read_jsonl(self.out / name) if keep(rec)]
        io.atomic_write_text(self.out / name, "".join(io.dumps_line(rec) for rec in recs))
        return recs

    def _loop(self, task, method, fed, resume: bool) -> dict:
        run = self.r.run
        R, every = run.federation.rounds, run.eval.every
        fed.last_loss = None
        start, kept, wall0 = self._resume(fed) if resume else (0, [], 0.0)
        if not resume:
            for name in (METRICS, HISTORY):
                io.atomic_write_text(self.out / name, "")
            fed.ledger.start_file(self.out / LEDGER)
        self.best = _best([m[task.metric] for m in kept], task.metric_mode)
        self.initial = kept[0][task.metric] if kept else None
        t0 = time.perf_counter()
        bar = _progress(self.progress, R, start, f"{run.name}")
        plog = ProgressLog(self.out, R, start)  # with or without a bar: pipelines run without
        metrics_fh = (self.out / METRICS).open("a")
        history_fh = (self.out / HISTORY).open("a")
        ledger_fh = (self.out / LEDGER).open("a")
        status, last = "ok", kept[-1] if kept else None
        self._last = last
        try:
            for n in range(start, R + 1):
                if n % every == 0 or n == R:
                    last = self._last = self._evaluate(task, fed, n, wall0 + time.perf_counter() - t0)
                    metrics_fh.write(io.dumps_line(last))
                    metrics_fh.flush()
                    plog.evaluated(task.metric, last[task.metric], n)
                    if self._diverged(task, last):
                        status = "diverged"
                        break
                    if self._reached(task, last):
                        break
                    if isinstance(fed, VectorFederation) and n < R:
                        self._checkpoint(fed, n)
                    if bar is not None:
                        bar.set_postfix({task.metric: f"{last[task.metric]:.4g}"}, refresh=False)
                if n == R:
                    break
                res = fed.run_round(n)
                if res.train_loss is not None:  # a round nobody answered keeps the last loss
                    fed.last_loss = res.train_loss
                ledger_fh.write(fed.ledger.drain())
                ledger_fh.flush()
                if res.scalars is not None:
                    history_fh.write(io.dumps_line({
                        "round": n, "seed": res.round_seed, "clients": res.clients,
                        "scalars": [[float(v) for v in row] for row in res.scalars],
                        "train_loss": res.train_loss}))
                    history_fh.flush()  # the history line commits the round
                if bar is not None:
                    bar.update(1)
                plog.tick(n + 1)
        finally:
            for fh in (metrics_fh, history_fh, ledger_fh):
                fh.close()
            if bar is not None:
                bar.close()
        plog.tick(last["round"] if last else start, force=True)
        if isinstance(fed, VectorFederation):
            # a first-order run has no history to rebuild its model from: keep its final
            # parameters (before the checkpoint goes) so that `hiso export` can write them
            io.atomic_write_tensors(self.out / FINAL, fed.params)
        (self.out / CHECKPOINT).unlink(missing_ok=True)
        H = self._preconditioner(fed)
        if self.r.run.eval.save_h and H is not None:
            buf = _np_bytes(np.concatenate([h.detach().cpu().reshape(-1).numpy() for h in H]))
            io.atomic_write_bytes(self.out / "H.npy", buf)
        rounds_done = last["round"] if last else 0
        return self._write_summary(task, fed, status, last, rounds_done,
                                   wall=wall0 + time.perf_counter() - t0)

    def _preconditioner(self, fed):
        opt = getattr(fed, "opt", None)
        return opt.preconditioner(fed.state) if opt is not None else None

    def _evaluate(self, task, fed, n: int, wall: float) -> dict:
        metrics = task.evaluate(fed.params, H=self._preconditioner(fed))
        value = metrics[task.metric]
        if self.initial is None:
            self.initial = value
        if math.isfinite(value):
            self.best = value if self.best is None else (
                min(self.best, value) if task.metric_mode == "min" else max(self.best, value))
        return {"round": n, "train_loss": fed.last_loss, **metrics,
                "bytes_up": fed.ledger.bytes_up, "bytes_down": fed.ledger.bytes_down,
                **(self._zo_counts(fed, n) if isinstance(fed, ZOFederation) else {}),
                "wall_seconds": round(wall, 3)}

    def _zo_counts(self, fed, n: int) -> dict:
        """The optimiser's diagnostics and ``forwards``: loss evaluations by all answering
        clients in rounds 0..n-1 (the server's replay evaluates nothing; a straggler, which
        fails to answer, is counted as not having computed)."""
        f = fed.fed
        return {"forwards": self._replies(fed, n) * f.local_steps * fed.opt.forwards_per_step(),
                **fed.opt.diagnostics(fed.state)}

    def _replies(self, fed, n: int) -> int:
        """Client replies in rounds 0..n-1 (sampled clients that answered), counted once."""
        f = fed.fed
        if not getattr(f, "dropout", 0.0):
            return n * f.sampled
        from .protocol import answering, sample_clients

        done, total = getattr(self, "_replies_memo", (0, 0))
        if n < done:
            done, total = 0, 0
        for r in range(done, n):
            total += len(answering(fed.seed, r, sample_clients(fed.seed, r, f.clients, f.sampled),
                                   f.dropout))
        self._replies_memo = (n, total)
        return total

    def _diverged(self, task, rec: dict) -> bool:
        self.reason = self._divergence(task, rec)
        return self.reason is not None

    def _divergence(self, task, rec: dict) -> str | None:
        """Why the run is stopped as diverged at this evaluation (None: it is not)."""
        value = rec[task.metric]
        loss = rec["train_loss"]
        n = rec["round"]
        if not math.isfinite(value):
            return f"{task.metric} is {value} at round {n} (written as null)"
        if loss is not None and not math.isfinite(loss):
            return f"train_loss is {loss} at round {n} (written as null)"
        factor = self.r.run.eval.divergence_factor
        if (task.metric_mode == "min" and self.initial is not None and self.initial > 0
                and value > factor * self.initial):
            return f"{task.metric} {value:.6g} > divergence_factor {factor:g} x initial {self.initial:.6g} at round {n}"
        return None

    def _reached(self, task, rec: dict) -> bool:
        stop = self.r.run.eval.stop_below
        return (stop is not None and task.metric_mode == "min" and self.initial is not None
                and rec[task.metric] <= stop * self.initial)

    def _checkpoint(self, fed, n: int) -> None:
        import io as _io

        buf = _io.BytesIO()
        torch.save({"round": n, "params": fed.params, "state": fed.state, "train_loss": fed.last_loss}, buf)
        io.atomic_write_bytes(self.out / CHECKPOINT, buf.getvalue())

    def _write_summary(self, task, fed, status, last, rounds, wall: float = 0.0, error: str | None = None,
                       traceback: str | None = None) -> dict:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        summary = {
            "status": status,
            "name": self.r.run.name,
            "method": self.r.method_cls.name,
            "task": self.r.task_cls.name,
            "seed": self.r.run.seed,
            "rounds": rounds,
            "metric": task.metric,
            "metric_mode": task.metric_mode,
            "final_metric": last[task.metric] if last else None,
            "best_metric": getattr(self, "best", None),
            "final_metrics": {k: v for k, v in (last or {}).items()
                              if k not in ("round", "bytes_up", "bytes_down", "wall_seconds")},
            "bytes_up": fed.ledger.bytes_up,
            "bytes_down": fed.ledger.bytes_down,
            "num_params": sum(p.numel() for p in fed.params),
            "peak_memory_bytes": peak,
            "wall_seconds": round(wall, 3),
            "params_sha256": params_sha256(fed.params),
            "config_sha256": self.r.sha256(),
        }
        if torch.cuda.is_available():
            summary["peak_cuda_memory_bytes"] = torch.cuda.max_memory_allocated()
        if status == "diverged" and getattr(self, "reason", None):
            summary["reason"] = self.reason
        if error:
            summary["error"] = error
        if traceback:
            summary["traceback"] = traceback
        io.atomic_write_json(self.out / SUMMARY, summary)
        return summary


def _np_bytes(arr: np.ndarray) -> bytes:
    import io as _io

    buf = _io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _best(values, mode):
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None
    return min(vals) if mode == "min" else max(vals)


def _progress(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="round", file=sys.stderr,
                mininterval=1.0, dynamic_ncols=True)
