#!/usr/bin/env python3
"""Soak: the full pipeline at about 70 % of its saturation for SOAK_MINUTES,
with logins, logouts and hostile traffic beside it, watching that memory,
descriptors and throughput stay flat. See soak.sh, which builds the release
binary.

It first measures saturation (wrk, 10 s), then holds SOAK_LOAD (default
0.7) of it: wrk with a 10 ms pause per connection between requests and
enough connections for the rate. Every minute it prints the minute's
proxied requests/s and p99 latency, the gateway's RSS, its open
descriptors, its live sessions and the log lines it dropped. It fails when
a proxied request fails, when a login or logout misbehaves, when
descriptors keep growing, or when RSS at the end is more than
SOAK_RSS_GROWTH (default 1.25) times RSS after the first minute plus
16 MiB: a leak shows as a climb, not a step.

    SOAK_MINUTES=30 python3 bench/soak.py target/release/portcullis
"""

import json
import os
import random
import re
import string
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402

MINUTES = int(os.environ.get("SOAK_MINUTES", "30"))
GROWTH = float(os.environ.get("SOAK_RSS_GROWTH", "1.25"))
LOAD = float(os.environ.get("SOAK_LOAD", "0.7"))
PAUSE_MS = 10
PORT = 18106
PASSWORD = "bench-password-1"


def call(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


class Churn(threading.Thread):
    """Logins and logouts of the real user, wrong passwords and huge random
    usernames, requests with ever-new header values: the traffic that grows
    maps and session stores if anything is unbounded."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.counts = {"logins": 0, "logouts": 0, "hostile": 0}
        self.failures = []

    def run(self):
        base = f"http://127.0.0.1:{PORT}"
        while not self.stop.is_set():
            status, headers, body = call("POST", f"{base}/auth/login",
                                         {"username": "alice", "password": PASSWORD})
            if status != 200:
                self.failures.append(f"login: {status} {body[:200]!r}")
                continue
            self.counts["logins"] += 1
            cookie = headers["Set-Cookie"].split(";")[0]
            status, _, body = call("POST", f"{base}/auth/logout", headers={"Cookie": cookie})
            if status != 200:
                self.failures.append(f"logout: {status} {body[:200]!r}")
            self.counts["logouts"] += 1
            for _ in range(20):
                name = "".join(random.choices(string.ascii_letters, k=random.choice([8, 64, 15000])))
                status, _, _ = call("POST", f"{base}/auth/login", {"username": name, "password": "x"})
                if status not in (401, 413, 429):
                    self.failures.append(f"hostile login answered {status}")
                call("GET", f"{base}/small", headers={"X-Probe": name[:64],
                                                       "Cookie": f"portcullis_session={name[:64]}"})
                self.counts["hostile"] += 1
            time.sleep(0.05)


def paced_wrk(conns, headers, seconds):
    """wrk with a pause between each connection's requests: a steady rate."""
    script = compare.WORK / "paced.lua"
    script.write_text(f"function delay()\n  return {PAUSE_MS}\nend\n")
    hdr = " ".join(f"-H '{k}: {v}'" for k, v in headers.items())
    out = compare.sh(compare.pinned(compare.LOAD_CPUS,
                                    f"wrk -t{compare.THREADS} -c{conns} -d{seconds}s --latency -s {script} "
                                    f"{hdr} http://127.0.0.1:{PORT}/small"))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1, "s": 1000}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else -1,
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0}


def metric(metrics_url, name):
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name):
                return int(float(line.split()[-1]))
    return 0


def descriptors(proc):
    """Open descriptors of the gateway itself (not its launching shell)."""
    for pid in proc.pids():
        if Path(f"/proc/{pid}/comm").read_text().strip() == "portcullis":
            return len(os.listdir(f"/proc/{pid}/fd"))
    return -1


def main():
    compare.BIN = Path(sys.argv[1])
    compare.DURATION = 10
    upstream = compare.start_upstream()
    # Wrong passwords from one address would soon lock the real user out.
    proc, headers = compare.portcullis(PORT, full=True,
                                       extra="[login]\nmax_failures_per_ip = 1000000000")
    saturation = compare.wrk(PORT, 64, headers, path="/small")["rps"]
    conns = max(1, round(saturation * LOAD * PAUSE_MS / 1000))
    print(f"saturation {saturation:.0f} req/s; holding {LOAD:.0%} with {conns} paced connections",
          flush=True)
    churn = Churn()
    churn.start()
    rows, failures = [], []
    try:
        for minute in range(1, MINUTES + 1):
            result = paced_wrk(conns, headers, 60)
            if result["non_2xx"] or result["socket_errors"]:
                failures.append(f"minute {minute}: {result}")
            row = {"minute": minute, "rps": result["rps"], "p99_ms": result["p99_ms"],
                   "rss_mib": proc.rss_kib() / 1024, "fds": descriptors(proc),
                   "sessions": metric(proc.metrics_url, "portcullis_sessions_active"),
                   "dropped": metric(proc.metrics_url, "portcullis_log_dropped_total"),
                   **churn.counts}
            rows.append(row)
            print(f"minute {minute:3}: {row['rps']:8.0f} req/s, p99 {row['p99_ms']:6.1f} ms, "
                  f"RSS {row['rss_mib']:6.1f} MiB, {row['fds']:4} fds, {row['sessions']:3} live sessions, "
                  f"{row['dropped']} log lines dropped, "
                  f"{row['logins']} logins, {row['hostile']} hostile requests", flush=True)
    finally:
        churn.stop.set()
        churn.join(timeout=15)
        proc.stop()
        upstream.stop()
    failures += churn.failures[:20]
    first, last = rows[0], rows[-1]
    allowed = first["rss_mib"] * GROWTH + 16
    print(f"\n{MINUTES} minutes: RSS {first['rss_mib']:.1f} → {last['rss_mib']:.1f} MiB "
          f"(allowed {allowed:.1f}), fds {first['fds']} → {last['fds']}, "
          f"req/s {first['rps']:.0f} → {last['rps']:.0f} (saturation {saturation:.0f}), "
          f"{last['dropped']} log lines dropped, "
          f"{last['logins']} logins and logouts, {last['hostile']} hostile requests")
    if last["rss_mib"] > allowed:
        failures.append(f"RSS grew from {first['rss_mib']:.1f} to {last['rss_mib']:.1f} MiB")
    if last["fds"] > first["fds"] + 16:
        failures.append(f"descriptors grew from {first['fds']} to {last['fds']}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
