"""What travels in each Flower message, and how big it is.

The scalar-only methods put the protocol's own encodings (:mod:`hiso.messages`) in a
``ConfigRecord`` as bytes: the downlink (round, seed, catch-up history) one way, the
``ScalarUpload`` the other, the train loss in a ``MetricRecord``. No array travels after
set-up. The full-vector baselines send the model and the model change as an ``ArrayRecord``.

Readers raise ``ValueError`` on anything malformed, so that the server can reject a reply
without touching its history.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from ...messages import ScalarUpload

SETUP, ROUND = "query", "train"  # Flower message types: set-up and one round


def setup(config_yaml: str, run_token: str) -> RecordDict:
    return RecordDict({"setup": ConfigRecord({"config": config_yaml, "run": run_token})})


def read_setup(content: RecordDict) -> tuple[str, str]:
    rec = _record(content, "setup", ConfigRecord)
    return _field(rec, "config", str), _field(rec, "run", str)


def hello(client: int, synced: int) -> RecordDict:
    return RecordDict({"hello": ConfigRecord({"client": client, "synced": synced})})


def read_hello(msg: Message) -> tuple[int, int]:
    rec = _record(_content(msg), "hello", ConfigRecord)
    return _field(rec, "client", int), _field(rec, "synced", int)


def zo_round(down: bytes) -> RecordDict:
    return RecordDict({"zo": ConfigRecord({"down": down})})


def read_zo_round(content: RecordDict) -> bytes:
    return _field(_record(content, "zo", ConfigRecord), "down", bytes)


def zo_reply(up: bytes, loss: float) -> RecordDict:
    return RecordDict({"zo": ConfigRecord({"up": up}), "loss": MetricRecord({"train_loss": loss})})


def read_zo_reply(msg: Message, r: int, c: int, tau: int, P: int) -> tuple[bytes, np.ndarray, float]:
    """(upload bytes, float32 [tau, P] scalars, train loss) of client c's reply for round r
    (P: the scalars per step, perturbations x scalars per perturbation)."""
    content = _content(msg)
    up = _field(_record(content, "zo", ConfigRecord), "up", bytes)
    try:
        msg_up = ScalarUpload.decode(up)
    except Exception as exc:  # struct.error, a short buffer: all mean a malformed upload
        raise ValueError(f"malformed scalar upload ({len(up)} bytes)") from exc
    if (msg_up.round, msg_up.client) != (r, c):
        raise ValueError(f"upload is for round {msg_up.round}, client {msg_up.client}")
    if msg_up.scalars.shape != (tau, P):
        raise ValueError(f"upload holds {msg_up.scalars.shape} scalars, expected ({tau}, {P})")
    return up, msg_up.scalars, _loss(content)


def vector_round(r: int, c: int, params: list[torch.Tensor]) -> RecordDict:
    return RecordDict({"round": ConfigRecord({"round": r, "client": c}),
                       "model": _arrays(params)})


def read_vector_round(content: RecordDict) -> tuple[int, int, list[np.ndarray]]:
    rec = _record(content, "round", ConfigRecord)
    return (_field(rec, "round", int), _field(rec, "client", int),
            _record(content, "model", ArrayRecord).to_numpy_ndarrays())


def vector_reply(r: int, c: int, change: list[torch.Tensor], loss: float) -> RecordDict:
    return RecordDict({"round": ConfigRecord({"round": r, "client": c}), "change": _arrays(change),
                       "loss": MetricRecord({"train_loss": loss})})


def read_vector_reply(msg: Message, r: int, c: int, like: list[torch.Tensor]) -> tuple[list[torch.Tensor], float]:
    content = _content(msg)
    rec = _record(content, "round", ConfigRecord)
    if (_field(rec, "round", int), _field(rec, "client", int)) != (r, c):
        raise ValueError(f"reply is for round {rec['round']}, client {rec['client']}")
    arrays = _record(content, "change", ArrayRecord).to_numpy_ndarrays()
    if len(arrays) != len(like) or any(a.shape != tuple(t.shape) or a.dtype != np.float32
                                       for a, t in zip(arrays, like)):
        raise ValueError("model change does not match the model's tensors")
    return [torch.from_numpy(np.array(a)) for a in arrays], _loss(content)


def payload_bytes(content: RecordDict) -> int:
    """Bytes of a message's records as Flower serialises them for the wire (every record and
    array chunk, each with Flower's object header); the message's metadata is not counted."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return sum(len(obj.deflate()) for obj in get_all_nested_objects(content).values())


# -- helpers ---------------------------------------------------------------------------------
def _arrays(tensors: list[torch.Tensor]) -> ArrayRecord:
    return ArrayRecord([t.detach().to("cpu", torch.float32).numpy() for t in tensors])


def _content(msg: Message) -> RecordDict:
    if msg.has_error():
        raise ValueError(f"error reply: {msg.error.reason}")
    return msg.content


def _record(content: RecordDict, key: str, kind: type):
    rec = content.get(key) if isinstance(content, RecordDict) else None
    if not isinstance(rec, kind):
        raise ValueError(f"no {kind.__name__} {key!r} in the message")
    return rec


def _field(rec, key: str, kind: type):
    value = rec.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"field {key!r}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _loss(content: RecordDict) -> float:
    return float(_field(_record(content, "loss", MetricRecord), "train_loss", float))
