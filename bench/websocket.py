#!/usr/bin/env python3
"""What a WebSocket tunnel through the gateway adds: round-trip latency of
small messages and throughput of large ones, directly to a WebSocket echo
and through a tunnel to the same echo, plus the gateway's memory for idle
tunnels.

The echo is a raw-socket server here: after its handshake it sends back
every byte it reads, so the client reads back its own (masked) frames; the
gateway, which never reads frames, is measured copying bytes both ways.

    python3 bench/websocket.py [BINARY]      # default target/release/portcullis
"""

import base64
import hashlib
import multiprocessing
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402

ROUND_TRIPS = int(os.environ.get("ROUND_TRIPS", "5000"))
BULK_MIB = int(os.environ.get("BULK_MIB", "256"))
IDLE_TUNNELS = int(os.environ.get("IDLE_TUNNELS", "1000"))
PORT = 18140
ECHO = 18145
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def echo_server():
    """Runs the echo in a process of its own, so that it never competes with
    the measuring client for Python's interpreter lock."""
    multiprocessing.Process(target=serve_echo, daemon=True).start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", ECHO)).close()
            return
        except OSError:
            time.sleep(0.05)


def serve_echo():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", ECHO))
    listener.listen(4096)

    def serve(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key"))
        accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while True:
            data = conn.recv(1 << 16)
            if not data:
                break
            conn.sendall(data)
        conn.close()

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def open_ws(port, path="/ws/bench"):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def frame(payload):
    """A masked binary frame (mask of zeros, so the bytes read back match)."""
    n = len(payload)
    if n < 126:
        header = bytes([0x82, 0x80 | n])
    elif n < 65536:
        header = bytes([0x82, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x82, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


def read_exactly(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


def round_trips(port):
    s = open_ws(port)
    message = frame(b"x" * 32)
    samples = []
    for _ in range(ROUND_TRIPS):
        started = time.perf_counter()
        s.sendall(message)
        read_exactly(s, len(message))
        samples.append((time.perf_counter() - started) * 1e6)
    s.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def bulk(port):
    s = open_ws(port)
    message = frame(os.urandom(1 << 20))
    reader_done = threading.Event()

    def drain():
        read_exactly(s, len(message) * BULK_MIB)
        reader_done.set()

    started = time.perf_counter()
    threading.Thread(target=drain, daemon=True).start()
    for _ in range(BULK_MIB):
        s.sendall(message)
    reader_done.wait()
    elapsed = time.perf_counter() - started
    s.close()
    return BULK_MIB / elapsed


def main():
    binary = Path(sys.argv[1]) if len(sys.argv) > 1 else compare.BIN
    echo_server()
    proc = compare.one_route("ws", binary, PORT, "/ws/*", f"http://127.0.0.1:{ECHO}",
                             server=f"max_connections = {IDLE_TUNNELS + 100}")
    try:
        direct = round_trips(ECHO)
        tunnelled = round_trips(PORT)
        print(f"round trip, 32-byte message, {ROUND_TRIPS} in a row:")
        print(f"  direct      p50 {direct[0]:.1f} µs  p99 {direct[1]:.1f} µs")
        print(f"  tunnelled   p50 {tunnelled[0]:.1f} µs  p99 {tunnelled[1]:.1f} µs"
              f"  (+{tunnelled[0] - direct[0]:.1f} µs at the median)")
        print(f"bulk, {BULK_MIB} × 1 MiB messages echoed:")
        print(f"  direct      {bulk(ECHO):.0f} MiB/s")
        print(f"  tunnelled   {bulk(PORT):.0f} MiB/s")
        before = proc.rss_kib()
        held = [open_ws(PORT) for _ in range(IDLE_TUNNELS)]
        time.sleep(1)
        after = proc.rss_kib()
        print(f"{IDLE_TUNNELS} idle tunnels: +{(after - before) / 1024:.1f} MiB resident "
              f"({(after - before) * 1024 // IDLE_TUNNELS} bytes each)")
        for s in held:
            s.close()
    finally:
        proc.stop()
        if os.environ.get("KEEP") != "1":
            compare.shutil.rmtree(compare.WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
