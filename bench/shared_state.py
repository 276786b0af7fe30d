#!/usr/bin/env python3
"""What sharing state through Redis costs and how well it holds, on this
machine (storage.backend = "redis"):

1. Throughput of the full pipeline (session + rate limit) with its state in
   sled and in Redis, against nginx, in interleaved wrk rounds; latency at
   a fixed rate for both, and the Redis round trips' own p50/p99 from the
   gateway's histogram.
2. Accuracy: three nodes share one limit; wrk drives all three well over
   it for several whole windows; admitted requests against the limit.
3. Revocation: a session held in memory by three nodes, logged out on one;
   how long until the other two refuse it, over many rounds.

    bash bench/shared_state.sh        # installs what it needs, then runs this
"""

import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402
from compare import WORK, Proc, pinned, sh, wait_port, wrk, oha  # noqa: E402

REDIS_PORT = 18160
ROUNDS = int(os.environ.get("ROUNDS", "3"))
ACCURACY_WINDOWS = int(os.environ.get("ACCURACY_WINDOWS", "6"))
WINDOW_S = 10
LIMIT = 3000
REVOCATIONS = int(os.environ.get("REVOCATIONS", "50"))
TOKEN = "bench-admin-token-0123456789"


def start_redis():
    proc = Proc("redis", pinned(compare.LOAD_CPUS,
                                f"redis-server --port {REDIS_PORT} --bind 127.0.0.1 --save '' "
                                f"--appendonly no --dir {WORK}"))
    for _ in range(100):
        if sh(f"redis-cli -p {REDIS_PORT} ping || true").strip() == "PONG":
            return proc
        time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def node(name, port, sections, route):
    """A Portcullis node on the shared Redis, its admin on port + 1."""
    conf = WORK / f"{name}.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
workers = 1
[admin]
listen = "127.0.0.1:{port + 1}"
token = "{TOKEN}"
[storage]
path = "{WORK / (name + '-data')}"
backend = "redis"
[storage.redis]
url = "redis://127.0.0.1:{REDIS_PORT}"
key_prefix = "nodes:"
[log]
format = "json"
output = "{WORK / (name + '-access.log')}"
[session]
secure = false
{sections}
{route}
""")
    proc = Proc(name, pinned(compare.PROXY_CPUS, f"{compare.BIN} serve --config {conf}"))
    wait_port(port + 1, "/healthz")
    proc.metrics_url = f"http://127.0.0.1:{port + 1}/metrics"
    return proc


def scrape(metrics_url):
    return urllib.request.urlopen(metrics_url).read().decode()


def cpu_seconds(metrics_url):
    return float(re.search(r"^portcullis_process_cpu_seconds_total (\S+)", scrape(metrics_url), re.M).group(1))


def round_trip_buckets(metrics_url, call):
    """The cumulative histogram of one call's Redis round trips: [(le, count)]."""
    return [(float(le), int(v)) for le, v in re.findall(
        rf'portcullis_redis_call_duration_seconds_bucket{{call="{call}",le="([^"]+)"}} (\d+)',
        scrape(metrics_url))]


def quantiles(before, after):
    """p50 and p99 (ms, as bucket upper bounds) of the round trips between two scrapes."""
    delta = [(le, a - b) for (le, a), (_, b) in zip(after, before)]
    count = delta[-1][1]

    def quantile(q):
        for le, seen in delta:
            if seen >= q * count:
                return le * 1000
        return float("inf")
    return {"calls": count, "p50_ms_at_most": quantile(0.5), "p99_ms_at_most": quantile(0.99)}


def throughput():
    nginx, _ = compare.nginx(18101)
    sled, sled_headers = compare.portcullis(18106, full=True)
    redis, redis_headers = compare.portcullis(18109, full=True, redis=f"redis://127.0.0.1:{REDIS_PORT}")
    contenders = {"nginx": (18101, {}, None), "portcullis-full": (18106, sled_headers, sled),
                  "portcullis-full-redis": (18109, redis_headers, redis)}
    try:
        for name, (port, headers, _) in contenders.items():
            wait_port(port, "/small", headers)
            wrk(port, 16, headers)
        samples = {name: [] for name in contenders}
        for r in range(ROUNDS):
            for name, (port, headers, _) in contenders.items():
                res = wrk(port, 64, headers)
                samples[name].append(res["rps"])
                print(f"round {r + 1} {name}: {res['rps']:.0f} req/s non-2xx {res['non_2xx']}", flush=True)
        rps = {name: statistics.median(s) for name, s in samples.items()}
        rate = int(min(rps.values()) / 2)
        latency = {}
        before = round_trip_buckets(redis.metrics_url, "rate_limit")
        for name, (port, headers, proc) in contenders.items():
            cpu0 = cpu_seconds(proc.metrics_url) if proc else 0
            res = oha(port, rate, headers)
            if proc:
                res["cpu_us_per_request"] = (cpu_seconds(proc.metrics_url) - cpu0) * 1e6 / max(1, res["requests"])
            latency[name] = res
            print(f"latency at {rate}/s {name}: p50 {res['p50']:.3f} ms p99 {res['p99']:.3f} ms"
                  + (f" cpu {res['cpu_us_per_request']:.1f} us/req" if proc else ""), flush=True)
        # The round trips of the fixed-rate run only (under saturation they
        # also count the wait for a busy worker).
        round_trips = quantiles(before, round_trip_buckets(redis.metrics_url, "rate_limit"))
        print(f"Redis round trips at {rate}/s: {round_trips}", flush=True)
        return {"median_rps": rps, "ratio_to_nginx": {n: v / rps["nginx"] for n, v in rps.items()},
                "latency_rate": rate, "latency": latency, "redis_round_trips": round_trips}
    finally:
        for proc in (nginx, sled, redis):
            proc.stop()


def admitted(metrics_urls):
    total = 0
    for url in metrics_urls:
        text = urllib.request.urlopen(url).read().decode()
        m = re.findall(r'portcullis_rate_limit_decisions_total{[^}]*outcome="allowed"[^}]*} (\d+)', text)
        total += sum(int(v) for v in m)
    return total


def accuracy():
    route = (f'[rate_limits.shared]\nkey = ["route"]\nlimit = {LIMIT}\nwindow = "{WINDOW_S}s"\n'
             f'[[routes]]\nid = "limited"\npath = "/*"\nupstream = "http://127.0.0.1:{compare.UPSTREAM}"\n'
             f'auth = "public"\nrate_limit = "shared"\n')
    nodes = [node(f"node{i}", 18170 + 2 * i, "", route) for i in range(3)]
    try:
        seconds = WINDOW_S * (ACCURACY_WINDOWS + 2)
        load = [subprocess.Popen(pinned(compare.LOAD_CPUS, f"wrk -t1 -c8 -d{seconds}s "
                                        f"http://127.0.0.1:{18170 + 2 * i}/small"),
                                 shell=True, stdout=subprocess.DEVNULL)
                for i in range(3)]
        # Count whole windows only: from one boundary to another, after the first.
        time.sleep(WINDOW_S - time.time() % WINDOW_S + WINDOW_S)
        urls = [n.metrics_url for n in nodes]
        start = admitted(urls)
        time.sleep(WINDOW_S * ACCURACY_WINDOWS)
        end = admitted(urls)
        for p in load:
            p.wait()
        expected = LIMIT * ACCURACY_WINDOWS
        got = end - start
        print(f"accuracy: {got} admitted over {ACCURACY_WINDOWS} windows of {LIMIT}: "
              f"{100 * (got / expected - 1):+.2f} %", flush=True)
        return {"limit": LIMIT, "window_s": WINDOW_S, "windows": ACCURACY_WINDOWS,
                "admitted": got, "expected": expected, "error_percent": 100 * (got / expected - 1)}
    finally:
        for n in nodes:
            n.stop()


def request(port, method, path, headers=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def revocation():
    route = (f'[[routes]]\nid = "private"\npath = "/*"\nupstream = "http://127.0.0.1:{compare.UPSTREAM}"\n')
    ports = [18180 + 2 * i for i in range(3)]
    nodes = [node(f"rev{i}", port, "", route) for i, port in enumerate(ports)]
    try:
        response, _ = request(ports[0] + 1, "POST", "/admin/api/users", {
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            json.dumps({"username": "alice", "password": "bench-password-1"}))
        assert response.status == 201, response.status
        delays = []
        for _ in range(REVOCATIONS):
            response, _ = request(ports[0], "POST", "/auth/login", {"Content-Type": "application/json"},
                                  json.dumps({"username": "alice", "password": "bench-password-1"}))
            cookie = {"Cookie": response.getheader("Set-Cookie").split(";")[0]}
            for port in ports:
                assert request(port, "GET", "/small", cookie)[0].status == 200
            watchers = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for port in ports[1:]]
            started = time.perf_counter()
            request(ports[0], "POST", "/auth/logout", cookie)
            refused = []
            for conn in watchers:
                while True:
                    conn.request("GET", "/small", headers=cookie)
                    r = conn.getresponse()
                    r.read()
                    if r.status == 401:
                        refused.append(time.perf_counter() - started)
                        break
            delays.append(max(refused) * 1000)
        delays.sort()
        result = {"rounds": len(delays), "p50_ms": statistics.median(delays),
                  "p99_ms": delays[min(len(delays) - 1, int(len(delays) * 0.99))], "max_ms": delays[-1]}
        print(f"revocation: refused by both other nodes after p50 {result['p50_ms']:.2f} ms, "
              f"p99 {result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms "
              "(from sending the logout)", flush=True)
        return result
    finally:
        for n in nodes:
            n.stop()


def main():
    compare.RESULTS.mkdir(parents=True, exist_ok=True)
    upstream = compare.start_upstream()
    redis = start_redis()
    try:
        report = {"throughput": throughput(), "accuracy": accuracy(), "revocation": revocation()}
        (compare.RESULTS / "shared_state.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
    finally:
        redis.stop()
        upstream.stop()
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
