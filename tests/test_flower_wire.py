"""The counting relay: exact byte totals, charged to the endpoint asked for (no Flower needed)."""

from __future__ import annotations

import socket
import threading

from hiso.deploy.flower.wire import Relays


def _http_server(bodies: dict[str, bytes]):
    """A one-connection HTTP/1.1 server on 127.0.0.1 answering each POST with bodies[path]."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        buf = b""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    head, rest = buf.split(b"\r\n\r\n", 1)
                    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    if len(rest) < length:
                        break
                    buf = rest[length:]
                    path = head.split(b" ")[1].decode()
                    body = bodies[path]
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def test_relay_counts_every_byte_and_charges_it_to_its_endpoint():
    bodies = {"/v1/fleet/pull-messages": b"", "/v1/fleet/push-object": b"\x00" * 5000}
    srv, thread = _http_server(bodies)
    relays = Relays(srv.getsockname()[1])
    try:
        port = relays.open(7)
        assert relays.open(7) == port  # one relay per client, reused by a restarted node
        sent = received = 0
        with socket.create_connection(("127.0.0.1", port)) as s:
            for path, body in [("/v1/fleet/pull-messages", b"x" * 10),
                               ("/v1/fleet/push-object", bytes(range(256)) * 40),
                               ("/v1/fleet/pull-messages", b"y" * 10)]:
                req = b"POST %s HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(body)) + body
                s.sendall(req)
                sent += len(req)
                want = len(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(bodies[path])) + len(bodies[path])
                got = b""
                while len(got) < want:
                    got += s.recv(65536)
                received += len(got)
        thread.join(timeout=10)
        count = relays.snapshot()[7]
        assert (count.up, count.down, count.connections) == (sent, received, 1)
        push = count.endpoints["/v1/fleet/push-object"]
        pull = count.endpoints["/v1/fleet/pull-messages"]
        assert push[2] == 1 and pull[2] == 2
        assert push[0] == len(b"POST /v1/fleet/push-object HTTP/1.1\r\nContent-Length: 10240\r\n\r\n") + 10240
        assert push[1] == len(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n") + 5000
        assert push[0] + pull[0] == sent and push[1] + pull[1] == received
    finally:
        relays.close()
        srv.close()
