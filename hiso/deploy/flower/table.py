"""``hiso flower table RUN_DIR ... --out T.md --csv T.csv``: bytes per client-round, three ways.

For each run directory of a Flower run (reads files only): our ledger's encoded messages, the
payload of the Flower records that carried them (``wire.csv``), and, for a local deployment
(``transport.json``), the bytes the SuperNodes' sockets really sent and received: those of the
message exchange alone, and all of them (the nodes' polling and heartbeats during the run
included).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import yaml

from ... import io
from ...errors import UserError

# Fleet API endpoints that move a message's records (the rest: polling for messages,
# heartbeats, registration, the run's details and the app bundle)
EXCHANGE = ("/v1/fleet/push-messages", "/v1/fleet/push-object", "/v1/fleet/pull-object",
            "/v1/fleet/confirm-message-received")


def row(run: Path) -> dict:
    for name in ("config.yaml", "ledger.csv", "wire.csv"):
        if not (run / name).is_file():
            raise UserError(f"{run / name}: missing (not a Flower run directory)")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    ledger = _sums(run / "ledger.csv", "bytes")
    wire = _sums(run / "wire.csv", "payload_bytes")
    n_up, n_down = ledger["up"][1], ledger["down"][1]
    if not n_up:
        raise UserError(f"{run}: no client answered any round")
    fed, method = cfg["federation"], cfg["method"]
    out = {"run": run.name, "method": method["name"], "tau": fed["local_steps"],
           "P": method.get("perturbations", ""), "clients": f'{fed["sampled"]}/{fed["clients"]}',
           "client_rounds": n_up,
           "ledger_up": ledger["up"][0] / n_up, "ledger_down": ledger["down"][0] / n_down,
           "payload_up": wire["up"][0] / n_up, "payload_down": wire["down"][0] / n_down}
    if (run / "transport.json").is_file():
        nodes = json.loads((run / "transport.json").read_text())["nodes"].values()
        ex = [sum(ep[i] for n in nodes for k, ep in n["endpoints"].items() if k in EXCHANGE) for i in (0, 1)]
        out.update({"exchange_up": ex[0] / n_up, "exchange_down": ex[1] / n_down,
                    "socket_up": sum(n["up"] for n in nodes) / n_up,
                    "socket_down": sum(n["down"] for n in nodes) / n_down})
    return out


def _sums(path: Path, column: str) -> dict[str, list[int]]:
    """direction -> [bytes, number of (round, client) pairs]."""
    acc = {"up": [0, set()], "down": [0, set()]}
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            acc[rec["direction"]][0] += int(rec[column])
            acc[rec["direction"]][1].add((rec["round"], rec["client"]))
    return {k: [v[0], len(v[1])] for k, v in acc.items()}


def add_commands(fsub) -> None:
    t = fsub.add_parser("table", help="bytes per client-round: ledger, Flower payload, sockets")
    t.add_argument("runs", nargs="+", help="run directories of Flower runs")
    t.add_argument("--out", required=True, help="markdown table")
    t.add_argument("--csv", help="the same as CSV")
    t.set_defaults(handler=_cmd_table)


def _cmd_table(args) -> int:
    from ...report import markdown_table

    df = pd.DataFrame([row(io.run_dir(r)) for r in args.runs])
    head = ["# Bytes per client-round on Flower", "",
            "Mean bytes per sampled client and round. `ledger`: our encoded messages (what "
            "`ledger.csv` counts); `payload`: the Flower records that carried them, as Flower "
            "serialises them; `exchange`: what the SuperNode's sockets sent and received on the "
            "Fleet API endpoints that move messages (HTTP/1.1, TLS off); `socket`: all the "
            "node's traffic during the run, its polling for messages and heartbeats included.",
            "", markdown_table(df), ""]
    io.atomic_write_text(args.out, "\n".join(head))
    if args.csv:
        io.atomic_write_text(args.csv, df.to_csv(index=False))
    print("\n".join(head))
    return 0
