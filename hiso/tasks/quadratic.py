"""Synthetic quadratic f(x) = 1/2 (x - x*)^T A (x - x*), the task of the theory checks.

* Spectrum: any of :mod:`hiso.theory`'s spectra; A is diagonal, or Q diag(lambda) Q^T with a
  random orthogonal Q (``rotate: true``, dense, so keep d in the thousands).
* Heterogeneity: client c optimises around x*_c = x* + s_c h w_{c//2}, with antithetic signs
  s = +1/-1 for the two clients of a pair (an unpaired last client has no shift). The clients'
  mean objective is then exactly 1/2 (x - x*)^T A (x - x*) + const, so f - f* is known in closed
  form without touching M client vectors (M can be 10,000 at d = 10^6).
* Noise (per batch, i.e. per (client, round, step)):
  ``function``: an independent N(0, sigma^2) added to every evaluation;
  ``gradient_isotropic``: + sigma xi^T (x - x*_c), gradient noise with covariance sigma^2 I;
  ``gradient_aligned``: + sigma xi^T A^{1/2} (x - x*_c), covariance sigma^2 A.
* The initial error is Gaussian with norm ``init_scale`` restricted to the first
  ``init_dims`` coordinates (all when null), drawn from the run seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from .. import theory
from ..directions import derive
from ..errors import UserError
from ..zo import Params, Perturbation
from .base import Task


@dataclass
class SpectrumConfig:
    """Eigenvalues of A. ``kind`` selects the generator; unused keys are ignored."""

    kind: Literal["lognormal", "lognormal_condition", "powerlaw", "logspaced", "dsweep",
                  "head_tail", "explicit", "constant", "blocks"] = "lognormal"
    log_mean: float = 0.0
    log_sd: float = 1.0
    condition: float = field(default=100.0, metadata={"ge": 1})
    lo: float = field(default=1.0, metadata={"gt": 0})
    hi: float = field(default=100.0, metadata={"gt": 0})
    head: list[float] | None = None
    head_size: int | None = None       # logspaced head of this size in [lo, hi] (head_tail)
    tail_total: float = field(default=1e-5, metadata={"ge": 0})
    values: list[float] | None = None
    value: float = field(default=1.0, metadata={"gt": 0})
    #: ``blocks``: this many contiguous blocks, levels log-spaced in [lo, hi], within-block
    #: log-normal spread ``log_sd`` (block means kept exact)
    blocks: int = field(default=10, metadata={"ge": 1})


@dataclass
class NoiseConfig:
    kind: Literal["none", "function", "gradient_isotropic", "gradient_aligned"] = "none"
    sigma: float = field(default=0.0, metadata={"ge": 0})


@dataclass
class QuadraticConfig:
    dim: int = field(default=1000, metadata={"ge": 1})
    spectrum: SpectrumConfig = field(default_factory=SpectrumConfig)
    rotate: bool = False
    structure_seed: int = field(default=0, metadata={"ge": 0})
    heterogeneity: float = field(default=0.0, metadata={"ge": 0})
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    init_scale: float = field(default=1.0, metadata={"gt": 0})
    init_dims: int | None = field(default=None, metadata={"ge": 1})

    def check(self, path: str) -> None:
        if self.rotate and self.dim > 8192:
            raise UserError(f"{path}.rotate: a rotated A is dense; dim {self.dim} > 8192 is too large")
        if self.init_dims is not None and self.init_dims > self.dim:
            raise UserError(f"{path}.init_dims: {self.init_dims} > dim {self.dim}")
        s = self.spectrum
        if s.kind == "blocks" and s.blocks > self.dim:
            raise UserError(f"{path}.spectrum.blocks: {s.blocks} blocks > dim {self.dim}")
        if s.kind == "explicit" and (not s.values or len(s.values) != self.dim):
            raise UserError(f"{path}.spectrum.values: need exactly dim={self.dim} values")
        if s.kind == "head_tail" and s.head is None and s.head_size is None:
            raise UserError(f"{path}.spectrum.head: head_tail needs head or head_size")
        if s.kind in ("head_tail", "dsweep"):
            head_len = len(s.head) if s.head is not None else (s.head_size or 10)
            if head_len >= self.dim:
                raise UserError(f"{path}.dim: {self.dim} leaves no tail after a head of {head_len}")


def make_spectrum(cfg: QuadraticConfig) -> np.ndarray:
    s, d = cfg.spectrum, cfg.dim
    if s.kind == "lognormal":
        return theory.lognormal_spectrum(d, s.log_mean, s.log_sd, cfg.structure_seed)
    if s.kind == "lognormal_condition":
        return theory.lognormal_with_condition(d, s.condition, cfg.structure_seed)
    if s.kind == "powerlaw":
        return theory.powerlaw_spectrum(d, s.condition)
    if s.kind == "logspaced":
        return theory.logspaced(d, s.lo, s.hi)
    if s.kind == "dsweep":
        return theory.head_tail_spectrum(d, theory.dsweep_head(d), s.tail_total)
    if s.kind == "head_tail":
        head = np.asarray(s.head, float) if s.head is not None else theory.logspaced(s.head_size, s.lo, s.hi)
        return theory.head_tail_spectrum(d, head, s.tail_total)
    if s.kind == "explicit":
        return np.asarray(s.values, dtype=np.float64)
    if s.kind == "constant":
        return np.full(d, s.value)
    if s.kind == "blocks":
        return theory.block_spectrum(d, s.blocks, s.lo, s.hi, s.log_sd, cfg.structure_seed)
    raise AssertionError(s.kind)


@dataclass
class QuadBatch:
    client: int
    key: int
    xi: torch.Tensor | None = None
    calls: int = 0


class QuadraticTask(Task):
    name = "quadratic"
    metric = "f_gap"
    metric_mode = "min"
    Config = QuadraticConfig

    def __init__(self, cfg: QuadraticConfig, num_clients: int, seed: int, runtime=None):
        super().__init__(cfg, num_clients, seed, runtime)
        d = cfg.dim
        self.eigs = make_spectrum(cfg)
        if np.any(self.eigs <= 0) or not np.all(np.isfinite(self.eigs)):
            raise UserError("task.spectrum: eigenvalues must be finite and positive")
        self.lam = torch.tensor(self.eigs, dtype=torch.float32)
        self.lam64 = torch.tensor(self.eigs, dtype=torch.float64)
        self.Q = None
        if cfg.rotate:
            self.Q = torch.tensor(theory.random_orthogonal(d, derive(cfg.structure_seed, 7)), dtype=torch.float32)
        g = torch.Generator().manual_seed(derive(cfg.structure_seed, 1))
        self.x_star = torch.randn(d, generator=g)
        self.x_star64 = self.x_star.double()
        g.manual_seed(derive(seed, 2))
        k = cfg.init_dims or d
        e0 = torch.zeros(d)
        head = torch.randn(k, generator=g)
        e0[:k] = head * (cfg.init_scale / head.norm().clamp_min(1e-30))
        self.x0 = self.x_star + e0
        self.f_gap0 = self._quad(e0)

    # -- helpers -----------------------------------------------------------------------------
    def _quad(self, e: torch.Tensor) -> float:
        """1/2 e^T A e, accumulated in float64 for a faithful gap near the optimum."""
        return float(self._aquad(e.double()))

    def _aquad(self, e: torch.Tensor) -> torch.Tensor:
        lam = self.lam64 if e.dtype == torch.float64 else self.lam.to(e.dtype)
        if self.Q is not None:
            e = self.Q.to(e.dtype).T @ e
        return 0.5 * torch.dot(lam * e, e)

    def _apply_A(self, e: torch.Tensor, power: float = 1.0) -> torch.Tensor:
        lam = (self.lam if power == 1.0 else self.lam.pow(power)).to(e.dtype)
        if self.Q is None:
            return lam * e
        Q = self.Q.to(e.dtype)
        return Q @ (lam * (Q.T @ e))

    def client_shift(self, client: int) -> torch.Tensor | None:
        if self.cfg.heterogeneity == 0.0 or client < 0:
            return None
        pair, sign = divmod(client, 2)
        if sign == 0 and client == self.num_clients - 1:
            return None  # unpaired last client
        g = torch.Generator().manual_seed(derive(self.cfg.structure_seed, 3, pair))
        w = torch.randn(self.cfg.dim, generator=g).mul_(self.cfg.heterogeneity)
        return w if sign == 0 else w.neg_()

    # -- Task interface ----------------------------------------------------------------------
    def init_params(self) -> Params:
        return [self.x0.clone()]

    def batch(self, client: int, round: int, step: int) -> QuadBatch:
        return QuadBatch(client, derive(self.seed, 4, client, round, step))

    def _xi(self, batch: QuadBatch) -> torch.Tensor:
        if batch.xi is None:
            g = torch.Generator().manual_seed(batch.key)
            batch.xi = torch.randn(self.cfg.dim, generator=g)
        return batch.xi

    def _error(self, x: torch.Tensor, client: int, inplace: bool = False) -> torch.Tensor:
        """x - x*_c; with ``inplace`` x is a scratch tensor and is overwritten."""
        star = self.x_star64 if x.dtype == torch.float64 else self.x_star.to(x.dtype)
        e = x.sub_(star) if inplace else x - star
        shift = self.client_shift(client)
        return e if shift is None else e.sub_(shift)

    def _loss_at(self, x: torch.Tensor, batch: QuadBatch) -> float:
        e = self._error(x, batch.client, inplace=True)
        val = float(self._aquad(e))
        noise = self.cfg.noise
        if noise.kind == "none" or noise.sigma == 0.0:
            return val
        if noise.kind == "function":
            g = torch.Generator().manual_seed(derive(batch.key, 5, batch.calls))
            batch.calls += 1
            return val + noise.sigma * float(torch.randn(1, generator=g))
        xi = self._xi(batch)
        if noise.kind == "gradient_aligned":
            xi = self._apply_A(xi, 0.5)
        return val + noise.sigma * float(torch.dot(xi.to(e.dtype), e))

    def loss(self, params: Params, batch: QuadBatch, pert: Perturbation | None = None) -> float:
        # Evaluated in float64: a finite difference of a float32 quadratic near its optimum
        # would measure rounding, not curvature. Master weights are never touched.
        x = params[0].double()  # a fresh scratch copy
        if pert is not None:
            x.add_(pert.delta(0, params[0]))
        with torch.no_grad():
            return self._loss_at(x, batch)

    def batch_loss(self, params: Params, batch: QuadBatch) -> torch.Tensor:
        e = self._error(params[0], batch.client)
        val = self._aquad(e)
        if self.cfg.noise.kind in ("gradient_isotropic", "gradient_aligned") and self.cfg.noise.sigma:
            xi = self._xi(batch)
            if self.cfg.noise.kind == "gradient_aligned":
                xi = self._apply_A(xi, 0.5)
            val = val + self.cfg.noise.sigma * torch.dot(xi, e)
        return val

    def loss_and_grad(self, params: Params, batch: QuadBatch) -> tuple[float, Params]:
        with torch.no_grad():
            e = self._error(params[0], batch.client)
            grad = self._apply_A(e)
            val = float(self._aquad(e))
            if self.cfg.noise.kind in ("gradient_isotropic", "gradient_aligned") and self.cfg.noise.sigma:
                xi = self._xi(batch)
                if self.cfg.noise.kind == "gradient_aligned":
                    xi = self._apply_A(xi, 0.5)
                grad = grad + self.cfg.noise.sigma * xi
                val += self.cfg.noise.sigma * float(torch.dot(xi, e))
        return val, [grad]

    def evaluate(self, params: Params, H: Params | None = None, split: str = "eval") -> dict[str, float]:
        gap = self._quad(params[0].double().sub_(self.x_star64))
        out = {"f_gap": gap, "rel_gap": gap / self.f_gap0 if self.f_gap0 > 0 else 0.0}
        if H is not None:
            # the whitening rank of the current H and how well it ranks the true curvature
            diag = self.oracle_h()[0].double().numpy()
            h = H[0].double().numpy()
            out["zeta_H"] = theory.whitening_rank(diag, h)
            # undefined for a constant H (e.g. H = 1 at round 0)
            out["h_spearman"] = theory.spearman(h, diag) if np.ptp(h) > 0 and np.ptp(diag) > 0 else float("nan")
        return out

    def oracle_h(self) -> Params:
        if self.Q is None:
            diag = self.lam.clone()
        else:
            diag = (self.Q.square() * self.lam).sum(dim=1)
        return [diag]

    def describe(self) -> dict[str, Any]:
        return {"L": float(self.eigs.max()), "trace": float(self.eigs.sum()), "f_gap0": self.f_gap0}
