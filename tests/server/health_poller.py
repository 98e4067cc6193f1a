"""`python health_poller.py PORT`: GET /v2/health/live over one keep-alive connection every 5 ms until
stdin closes (at most 60 s), then print each answer's latency in milliseconds as a JSON list.

A process of its own, so that the client that sends a large request does not delay it (the GIL)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

REQUEST = b"GET /v2/health/live HTTP/1.1\r\nhost: modelpod\r\n\r\n"


def main() -> None:
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    latencies: list[float] = []
    deadline = time.monotonic() + 60
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as sock:
        print("connected", flush=True)
        while not stop.is_set() and time.monotonic() < deadline:
            started = time.perf_counter()
            sock.sendall(REQUEST)
            answer = b""
            while not answer.endswith(b'{"live":true}'):
                data = sock.recv(4096)
                if not data:
                    raise SystemExit(f"the server closed the connection after {answer!r}")
                answer += data
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.005)
    print(json.dumps(latencies), flush=True)


if __name__ == "__main__":
    main()
