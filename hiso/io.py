"""Atomic file writes and small JSON helpers."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``.

    The file is created with mode 0666 less the process umask, like any other output (a
    ``tempfile.mkstemp`` file would be 0600 whatever the umask, unreadable to collaborators).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_tmp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _create_tmp(path: Path) -> tuple[int, str]:
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: no free temporary name")


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_jsonl(path: Path | str) -> list[dict]:
    """Parse complete lines; a torn last line (from a killed writer) is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def dumps_line(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, allow_nan=True) + "\n"


def run_dir(path: Path | str) -> Path:
    """A run directory, given it or a file inside it (e.g. its summary.json)."""
    p = Path(path)
    return p if p.is_dir() else p.parent


def read_run(path: Path | str) -> tuple[Path, dict, dict, list[dict]]:
    """(directory, resolved config, summary, metrics records) of a finished run directory."""
    import yaml

    from .errors import UserError

    d = run_dir(path)
    for name in ("config.yaml", "summary.json", "metrics.jsonl"):
        if not (d / name).is_file():
            raise UserError(f"{d / name}: missing (not a finished run directory)")
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    return d, cfg, json.loads((d / "summary.json").read_text()), read_jsonl(d / "metrics.jsonl")


def atomic_write_tensors(path: Path | str, tensors: list, metadata: dict[str, str] | None = None) -> None:
    """A list of tensors as a safetensors file (keys ``00000``, ``00001`` ... in list order).

    Each tensor is copied first: the masters may be views sharing one storage (a chunked
    embedding), which safetensors refuses to write as they are.
    """
    from safetensors.torch import save

    data = {f"{i:05d}": t.detach().to("cpu").contiguous().clone() for i, t in enumerate(tensors)}
    atomic_write_bytes(path, save(data, metadata=metadata))


def read_tensors(path: Path | str) -> list:
    """The list written by :func:`atomic_write_tensors`, in its order."""
    from safetensors.torch import load

    data = load(Path(path).read_bytes())
    return [data[k] for k in sorted(data)]
