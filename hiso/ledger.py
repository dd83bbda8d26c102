"""The communication ledger: bytes of every message, per client, per round, up and down."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    round: int
    client: int
    direction: str  # "up" | "down"
    kind: str       # message type
    nbytes: int


class Ledger:
    """Totals in memory, every entry since the last ``drain`` pending for the run's ledger.csv.

    ``keep_entries`` also keeps every entry in memory (for analysis and tests); a long run
    leaves it off so memory does not grow with the rounds.
    """

    FIELDS = ["round", "client", "direction", "kind", "bytes"]

    def __init__(self, keep_entries: bool = True) -> None:
        self.keep_entries = keep_entries
        self.entries: list[Entry] = []
        self.pending: list[Entry] = []
        self.bytes_up = 0
        self.bytes_down = 0

    def record(self, round: int, client: int, direction: str, kind: str, message) -> int:
        """Count ``len(message)`` (bytes or an object with a byte length)."""
        n = len(message)
        e = Entry(round, client, direction, kind, n)
        self.pending.append(e)
        if self.keep_entries:
            self.entries.append(e)
        if direction == "up":
            self.bytes_up += n
        elif direction == "down":
            self.bytes_down += n
        else:
            raise ValueError(direction)
        return n

    def per_client_round(self, direction: str) -> dict[tuple[int, int], int]:
        out: dict[tuple[int, int], int] = defaultdict(int)
        for e in self.entries:
            if e.direction == direction:
                out[(e.round, e.client)] += e.nbytes
        return dict(out)

    def drain(self) -> str:
        """CSV rows of the entries recorded since the last drain (appended to ledger.csv)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for e in self.pending:
            w.writerow([e.round, e.client, e.direction, e.kind, e.nbytes])
        self.pending = []
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path, before_round: int, keep_entries: bool = True) -> "Ledger":
        """Rebuild from a ledger.csv, keeping only rounds < ``before_round``."""
        led = cls(keep_entries)
        if not path.exists():
            return led
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    r = int(row["round"])
                    if r >= before_round:
                        continue
                    e = Entry(r, int(row["client"]), row["direction"], row["kind"], int(row["bytes"]))
                except (TypeError, ValueError, KeyError):
                    continue  # a torn last line from a killed run
                led.pending.append(e)
                if keep_entries:
                    led.entries.append(e)
                if e.direction == "up":
                    led.bytes_up += e.nbytes
                else:
                    led.bytes_down += e.nbytes
        return led

    def start_file(self, path: Path) -> None:
        """(Re)write ``path`` atomically: the header and every pending entry."""
        from .io import atomic_write_text

        atomic_write_text(path, ",".join(self.FIELDS) + "\n" + self.drain())
