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
    FIELDS = ["round", "client", "direction", "kind", "bytes"]

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.bytes_up = 0
        self.bytes_down = 0

    def record(self, round: int, client: int, direction: str, kind: str, message) -> int:
        """Count ``len(message)`` (bytes or an object with a byte length)."""
        n = len(message)
        self.entries.append(Entry(round, client, direction, kind, n))
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

    def rows_for_round(self, round: int) -> str:
        # Entries are appended in round order, so a round's rows sit in the trailing block of
        # entries with round >= ``round``: scan back to that block instead of over the whole
        # list, which made writing the ledger O(R^2) over a run of R rounds.
        start = len(self.entries)
        while start > 0 and self.entries[start - 1].round >= round:
            start -= 1
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for e in self.entries[start:]:
            if e.round == round:
                w.writerow([e.round, e.client, e.direction, e.kind, e.nbytes])
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path, before_round: int) -> "Ledger":
        """Rebuild from a ledger.csv, keeping only rounds < ``before_round``."""
        led = cls()
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
                led.entries.append(e)
                if e.direction == "up":
                    led.bytes_up += e.nbytes
                else:
                    led.bytes_down += e.nbytes
        return led

    def write(self, path: Path) -> None:
        from .io import atomic_write_text

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.FIELDS)
        for e in self.entries:
            w.writerow([e.round, e.client, e.direction, e.kind, e.nbytes])
        atomic_write_text(path, buf.getvalue())
