"""Binary encodings of every message the protocol exchanges.

The ledger counts ``len()`` of these encodings, so communication is measured on what is sent,
not computed from a formula. Seeds travel as uint64, scalars as float32, vectors as raw float32
buffers (zero-copy views of the tensors, so FedAvg on a large model costs no extra memory).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch

_UP = struct.Struct("<IIHH")          # round, client, tau, P
_DOWN = struct.Struct("<IQII")        # round, round seed, first missed round, rounds missed
_SEED = struct.Struct("<Q")
_VEC = struct.Struct("<IIQ")          # round, client, number of float32 values


@dataclass
class ScalarUpload:
    """Client -> server: the tau*P directional-derivative scalars of one round."""

    round: int
    client: int
    scalars: np.ndarray  # float32 [tau, P]

    def encode(self) -> bytes:
        tau, P = self.scalars.shape
        return _UP.pack(self.round, self.client, tau, P) + np.ascontiguousarray(
            self.scalars, dtype="<f4").tobytes()

    @classmethod
    def decode(cls, data: bytes) -> "ScalarUpload":
        r, c, tau, P = _UP.unpack_from(data)
        scalars = np.frombuffer(data, dtype="<f4", count=tau * P, offset=_UP.size).reshape(tau, P)
        if len(data) != _UP.size + 4 * tau * P:
            raise ValueError("malformed ScalarUpload")
        return cls(r, c, scalars.astype(np.float32))


@dataclass
class ZODownlink:
    """Server -> client at the start of a round: the round's seed, plus the (seed, averaged
    scalars) of every round the client missed since its last sync, for catch-up replay."""

    round: int
    round_seed: int
    first_missed: int
    missed: list[tuple[int, np.ndarray]]  # [(round seed, float32 [tau, P])]

    def encode(self) -> bytes:
        parts = [_DOWN.pack(self.round, self.round_seed, self.first_missed, len(self.missed))]
        for seed, scalars in self.missed:
            parts.append(_SEED.pack(seed))
            parts.append(np.ascontiguousarray(scalars, dtype="<f4").tobytes())
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes, tau: int, P: int) -> "ZODownlink":
        r, seed, first, n = _DOWN.unpack_from(data)
        off = _DOWN.size
        missed = []
        for _ in range(n):
            (s,) = _SEED.unpack_from(data, off)
            off += _SEED.size
            sc = np.frombuffer(data, dtype="<f4", count=tau * P, offset=off).reshape(tau, P)
            off += 4 * tau * P
            missed.append((s, sc.astype(np.float32)))
        if off != len(data):
            raise ValueError("malformed ZODownlink")
        return cls(r, seed, first, missed)


class VectorMessage:
    """A full parameter vector (model down, update up) for the first-order and FedZO baselines.

    Holds a header and zero-copy views of the float32 tensors; ``len`` is the byte length of the
    encoding as it would go on the wire.
    """

    def __init__(self, round: int, client: int, tensors: list[torch.Tensor]):
        self.round = round
        self.client = client
        self._views = [memoryview(t.detach().to("cpu", torch.float32).contiguous().numpy()).cast("B")
                       for t in tensors]
        numel = sum(v.nbytes // 4 for v in self._views)
        self.header = _VEC.pack(round, client, numel)

    def __len__(self) -> int:
        return len(self.header) + sum(v.nbytes for v in self._views)

    def decode(self, like: list[torch.Tensor]) -> list[torch.Tensor]:
        """Receiver side: float32 tensors shaped like ``like``, read from the encoded buffers."""
        _, _, numel = _VEC.unpack(self.header)
        if numel != sum(t.numel() for t in like):
            raise ValueError("VectorMessage size does not match the receiver's parameters")
        return [torch.frombuffer(view, dtype=torch.float32).reshape(t.shape).to(t.device)
                for view, t in zip(self._views, like)]
