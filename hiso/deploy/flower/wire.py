"""Bytes on the wire: a counting TCP relay between each SuperNode and the SuperLink.

Each SuperNode is pointed at its own relay port; the relay forwards every connection to the
SuperLink and counts the bytes each way. What it counts is what the node's TCP sockets send
and receive (HTTP requests and responses, TLS off): the figure that ``ss -ti`` reports as
bytes_acked / bytes_received per connection, summed over every connection the node opened,
however short-lived. TCP/IP headers (about 52 bytes a segment on loopback) are not in it.
"""

from __future__ import annotations

import asyncio
import copy
import re
import threading
from dataclasses import dataclass, field

# TLS is off, so the relay can read where each HTTP request and response starts and charge
# the bytes to the Fleet API endpoint asked for (responses come back in request order). A
# request line split across two reads would be charged to the previous endpoint: rare, and it
# never changes the totals.
_REQUEST = re.compile(rb"(?:GET|POST|PUT|DELETE) (/\S*) HTTP/1\.[01]\r\n")
_RESPONSE = re.compile(rb"HTTP/1\.[01] \d{3} ")


@dataclass
class Count:
    up: int = 0          # node -> SuperLink
    down: int = 0        # SuperLink -> node
    connections: int = 0
    #: endpoint -> [bytes up, bytes down, requests]
    endpoints: dict[str, list[int]] = field(default_factory=dict)

    def minus(self, other: "Count") -> "Count":
        eps = {k: [a - b for a, b in zip(v, other.endpoints.get(k, [0, 0, 0]))]
               for k, v in self.endpoints.items()}
        return Count(self.up - other.up, self.down - other.down,
                     self.connections - other.connections, {k: v for k, v in eps.items() if any(v)})

    def add(self, direction: str, label: str, nbytes: int, request: bool = False) -> None:
        if direction == "up":
            self.up += nbytes
        else:
            self.down += nbytes
        ep = self.endpoints.setdefault(label, [0, 0, 0])
        ep[0 if direction == "up" else 1] += nbytes
        ep[2] += request


class _Stream:
    """Charges one connection's bytes to the endpoint of the request they belong to."""

    def __init__(self, count: Count):
        self.count, self.pending, self.label = count, [], {"up": "?", "down": "?"}

    def feed(self, direction: str, data: bytes) -> None:
        marker = _REQUEST if direction == "up" else _RESPONSE
        pos = 0
        for m in marker.finditer(data):
            if m.start() > pos:
                self.count.add(direction, self.label[direction], m.start() - pos)
            if direction == "up":
                self.label["up"] = m.group(1).decode(errors="replace").split("?")[0]
                self.pending.append(self.label["up"])
                self.count.add("up", self.label["up"], 0, request=True)
            else:
                self.label["down"] = self.pending.pop(0) if self.pending else "?"
            pos = m.start()
        self.count.add(direction, self.label[direction], len(data) - pos)


class Relays:
    """One relay per key (a client), on 127.0.0.1, in a background thread."""

    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.counts: dict[int, Count] = {}
        self.ports: dict[int, int] = {}
        self._loop = asyncio.new_event_loop()
        self._servers: dict[int, asyncio.base_events.Server] = {}
        self._thread = threading.Thread(target=self._loop.run_forever, name="hiso-relays", daemon=True)
        self._thread.start()

    def open(self, key: int) -> int:
        """Start (or keep) key's relay; returns its port."""
        if key not in self._servers:
            self.counts.setdefault(key, Count())
            server = asyncio.run_coroutine_threadsafe(self._serve(key), self._loop).result()
            self._servers[key] = server
            self.ports[key] = server.sockets[0].getsockname()[1]
        return self.ports[key]

    def snapshot(self) -> dict[int, Count]:
        return {k: copy.deepcopy(c) for k, c in self.counts.items()}

    def close(self) -> None:
        async def shut():
            for server in self._servers.values():
                server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _serve(self, key: int):
        async def handle(reader, writer):
            count = self.counts[key]
            count.connections += 1
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            except OSError:
                writer.close()
                return
            stream = _Stream(count)
            await asyncio.gather(_pump(reader, up_writer, stream, "up"),
                                 _pump(up_reader, writer, stream, "down"), return_exceptions=True)

        return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _pump(reader, writer, stream: _Stream, direction: str) -> None:
    try:
        while data := await reader.read(65536):
            stream.feed(direction, data)
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
