#!/usr/bin/env python3
"""Runs the proxy comparison; see compare.sh. Writes bench/results/."""

import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "portcullis"
BARE_BIN = ROOT / "target" / "release" / "examples" / "bare_proxy"
RESULTS = ROOT / "bench" / "results"
QUICK = os.environ.get("QUICK") == "1"
DURATION = int(os.environ.get("DURATION", "3" if QUICK else "8"))
ROUNDS = int(os.environ.get("ROUNDS", "1" if QUICK else "3"))
CONNECTIONS = [64] if QUICK else [16, 64, 256]
CPUS = os.cpu_count() or 1
# Half the cores for the proxy under test, the rest for the load generator and
# the upstream, so they never compete for the proxy's CPU.
PROXY_CPUS = ",".join(str(c) for c in range(max(1, CPUS // 2)))
LOAD_CPUS = ",".join(str(c) for c in range(max(1, CPUS // 2), CPUS)) or "0"
THREADS = max(1, CPUS // 2)
UPSTREAM = 18100
# The same upstream on a second port: the balanced contender's second target.
UPSTREAM_2 = 18110
WORK = Path(tempfile.mkdtemp(prefix="portcullis-bench-"))
WORK.chmod(0o755)  # nginx workers run unprivileged and serve /big from here


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, text=True, capture_output=True, **kw).stdout


def pinned(cpus, cmd):
    return f"taskset -c {cpus} {cmd}"


def wait_port(port, path="/", headers=None, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
            urllib.request.urlopen(req, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port}{path}")


class Proc:
    """A server process started in its own process group."""

    def __init__(self, name, cmd, env=None, stdout=None):
        self.name = name
        out = open(stdout, "ab") if stdout else subprocess.DEVNULL
        self.p = subprocess.Popen(cmd, shell=True, env={**os.environ, **(env or {})},
                                  stdout=out, stderr=subprocess.STDOUT, preexec_fn=os.setsid)

    def pids(self):
        """Every process of the server (nginx forks workers)."""
        out = subprocess.run(f"pgrep -g {self.p.pid}", shell=True, text=True, capture_output=True).stdout
        return [int(p) for p in out.split()] or [self.p.pid]

    def cpu_seconds(self):
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime, all threads
            except (FileNotFoundError, IndexError):
                pass
        return total / tick

    def rss_kib(self):
        total = 0
        for pid in self.pids():
            try:
                m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
                total += int(m.group(1)) if m else 0
            except FileNotFoundError:
                pass
        return total

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(timeout=10)
        except Exception:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except Exception:
                pass


def start_upstream():
    (WORK / "www").mkdir()
    (WORK / "www" / "big").write_bytes(b"x" * 65536)
    conf = WORK / "upstream.conf"
    conf.write_text(f"""
worker_processes {THREADS};
pid {WORK}/upstream.pid;
error_log {WORK}/upstream-error.log;
daemon off;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{UPSTREAM} backlog=4096;
    listen 127.0.0.1:{UPSTREAM_2} backlog=4096;
    location = /small {{ return 200 "hello world\\n"; }}
    location = /big {{ root {WORK}/www; }}
  }}
}}
""")
    proc = Proc("upstream", pinned(LOAD_CPUS, f"nginx -c {conf} -p {WORK}"))
    wait_port(UPSTREAM, "/small")
    return proc


def nginx(port):
    conf = WORK / "nginx.conf"
    conf.write_text(f"""
worker_processes {THREADS};
pid {WORK}/nginx.pid;
error_log {WORK}/nginx-error.log;
daemon off;
events {{ worker_connections 8192; }}
http {{
  log_format json escape=json '{{"time":"$time_iso8601","method":"$request_method","uri":"$request_uri","status":$status,"duration":$request_time,"upstream_time":"$upstream_response_time","bytes":$body_bytes_sent,"client":"$remote_addr","ua":"$http_user_agent"}}';
  access_log {WORK}/nginx-access.log json buffer=64k flush=1s;
  keepalive_requests 1000000;
  upstream backend {{ server 127.0.0.1:{UPSTREAM}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
""")
    return Proc("nginx", pinned(PROXY_CPUS, f"nginx -c {conf} -p {WORK}")), {}


def haproxy(port, matched=False):
    name = "haproxy-matched" if matched else "haproxy"
    extra = ""
    if matched:
        # The closest HAProxy gets to the full pipeline: a request-rate limit
        # in a stick table and a session-cookie check against a map.
        (WORK / "sessions.map").write_text("benchtoken0123456789abcdefghijklmnopqrstuvwx alice\n")
        extra = f"""
  stick-table type ip size 100k expire 60s store http_req_rate(60s)
  http-request track-sc0 src
  http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt 1000000000 }}
  http-request deny deny_status 401 unless {{ req.cook(portcullis_session),map({WORK}/sessions.map) -m found }}
  http-request set-header X-User-Id %[req.cook(portcullis_session),map({WORK}/sessions.map)]
"""
    conf = WORK / f"{name}.cfg"
    conf.write_text(f"""
global
  nbthread {THREADS}
  maxconn 8000
  log stdout format raw local0
defaults
  mode http
  log global
  log-format '{{"time":"%tr","method":"%HM","uri":"%HU","status":%ST,"duration_ms":%Ta,"bytes":%B,"client":"%ci"}}'
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
{extra}
  default_backend be
backend be
  server up 127.0.0.1:{UPSTREAM} maxconn 1000
""")
    headers = {"Cookie": "portcullis_session=benchtoken0123456789abcdefghijklmnopqrstuvwx"} if matched else {}
    return Proc(name, pinned(PROXY_CPUS, f"haproxy -db -f {conf}"), stdout=WORK / f"{name}-access.log"), headers


def caddy(port):
    conf = WORK / "Caddyfile"
    conf.write_text(f"""
{{
  admin off
  auto_https off
}}
http://127.0.0.1:{port} {{
  log {{
    output file {WORK}/caddy-access.log
    format json
  }}
  reverse_proxy 127.0.0.1:{UPSTREAM}
}}
""")
    env = {"GOMAXPROCS": str(THREADS), "HOME": str(WORK), "XDG_DATA_HOME": str(WORK), "XDG_CONFIG_HOME": str(WORK)}
    return Proc("caddy", pinned(PROXY_CPUS, f"caddy run --config {conf} --adapter caddyfile"), env=env), {}


def one_route(name, binary, port, path, upstream, sections="", server=""):
    """A Portcullis of one worker serving one public route, its admin on
    port + 1 and its JSON access log in WORK/<name>-access.log; started and
    ready. `sections`: more TOML (services, say); `server`: more [server] keys."""
    conf = WORK / f"{name}.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
workers = 1
{server}
[admin]
listen = "127.0.0.1:{port + 1}"
[storage]
path = "{WORK / (name + '-data')}"
[log]
format = "json"
output = "{WORK / (name + '-access.log')}"
{sections}
[[routes]]
id = "{name}"
path = "{path}"
upstream = "{upstream}"
auth = "public"
""")
    proc = Proc(name, f"{binary} serve --config {conf}")
    wait_port(port + 1, "/healthz")
    return proc


def portcullis(port, full=False, extra="", balanced=False, redis=None):
    """Portcullis on one route to the upstream; `full`: with a session and a
    rate limit; `balanced`: to a service of two targets (the upstream on
    two ports) with passive health tracking, instead of one URL; `redis`: a
    Redis URL to keep its state in (storage.backend = "redis")."""
    name = (("portcullis-full" if full else "portcullis") + ("-balanced" if balanced else "")
            + ("-redis" if redis else ""))
    shared = (f'backend = "redis"\n[storage.redis]\nurl = "{redis}"\n'
              f'key_prefix = "{name}:"\n') if redis else ""
    upstream = "svc" if balanced else f"http://127.0.0.1:{UPSTREAM}"
    service = (f'[upstreams.svc]\ntargets = ["http://127.0.0.1:{UPSTREAM}", '
               f'"http://127.0.0.1:{UPSTREAM_2}"]\n') if balanced else ""
    admin = port + 1000
    data = WORK / f"{name}-data"
    route_policy = 'rate_limit = "bench"' if full else 'auth = "public"'
    conf = WORK / f"{name}.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
workers = {THREADS}
[admin]
listen = "127.0.0.1:{admin}"
token = "bench-admin-token-0123456789"
[storage]
path = "{data}"
{shared}
[log]
format = "json"
output = "{WORK}/{name}-access.log"
[session]
secure = false
rotate_after = "1h"
idle_timeout = "1h"
[rate_limits.bench]
key = ["user"]
limit = 1000000000
window = "1m"
{service}
[[routes]]
id = "all"
path = "/*"
upstream = "{upstream}"
{route_policy}
{extra}
""")
    headers = {}
    if full:
        sh(f"printf 'bench-password-1\\n' | {BIN} user add alice --password-stdin --config {conf}")
    proc = Proc(name, pinned(PROXY_CPUS, f"{BIN} serve --config {conf}"), stdout=WORK / f"{name}.out")
    wait_port(admin, "/healthz")
    if full:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/auth/login",
            data=json.dumps({"username": "alice", "password": "bench-password-1"}).encode(),
            headers={"Content-Type": "application/json"})
        # The proxy listener may answer a moment after the admin one
        # (under valgrind, seconds): try the login until it does.
        for attempt in range(100):
            try:
                cookie = urllib.request.urlopen(req).headers["Set-Cookie"].split(";")[0]
                break
            except urllib.error.URLError:
                if attempt == 99:
                    raise
                time.sleep(0.2)
        headers = {"Cookie": cookie}
    proc.metrics_url = f"http://127.0.0.1:{admin}/metrics"
    return proc, headers


def bare(port):
    """actix-web + awc with nothing else: the HTTP stack Portcullis is built on."""
    return Proc("actix-awc-bare", pinned(PROXY_CPUS, f"{BARE_BIN} {port} {UPSTREAM}")), {}


CONTENDERS = {
    "direct": None,
    "nginx": lambda: nginx(18101),
    "haproxy": lambda: haproxy(18102),
    "haproxy-matched": lambda: haproxy(18103, matched=True),
    "caddy": lambda: caddy(18104),
    "portcullis": lambda: portcullis(18105),
    "actix-awc-bare": lambda: bare(18107),
    "portcullis-full": lambda: portcullis(18106, full=True),
    "portcullis-full-balanced": lambda: portcullis(18108, full=True, balanced=True),
}
PORTS = {"direct": UPSTREAM, "nginx": 18101, "haproxy": 18102, "haproxy-matched": 18103,
         "caddy": 18104, "portcullis": 18105, "actix-awc-bare": 18107, "portcullis-full": 18106,
         "portcullis-full-balanced": 18108}


def wrk(port, conns, headers, path="/small", keepalive=True):
    hdr = " ".join(f"-H '{k}: {v}'" for k, v in headers.items())
    if not keepalive:
        hdr += " -H 'Connection: close'"
    out = sh(pinned(LOAD_CPUS, f"wrk -t{THREADS} -c{conns} -d{DURATION}s {hdr} http://127.0.0.1:{port}{path}"))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    err_count = sum(int(x) for x in errors.groups()) if errors else 0
    return {"rps": rps, "requests": total, "non_2xx": int(bad.group(1)) if bad else 0, "socket_errors": err_count}


def oha(port, rate, headers, seconds=10, conns=64):
    hdr = " ".join(f"-H '{k}: {v}'" for k, v in headers.items())
    out = sh(pinned(LOAD_CPUS, f"oha --no-tui --output-format json -z {seconds}s -q {rate} -c {conns} "
                               f"--latency-correction {hdr} http://127.0.0.1:{port}/small"))
    data = json.loads(out)
    pct = data["latencyPercentiles"]
    codes = data.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    return {"p50": pct["p50"] * 1000, "p99": pct["p99"] * 1000, "p99.9": pct["p99.9"] * 1000,
            "requests": sum(codes.values()), "ok": ok}


def main():
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpu": re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1),
        "cores": CPUS,
        "kernel": os.uname().release,
        "proxy_cpus": PROXY_CPUS,
        "load_cpus": LOAD_CPUS,
        "threads_per_proxy": THREADS,
        "duration_s": DURATION,
        "rounds": ROUNDS,
        "versions": {
            "nginx": sh("nginx -v 2>&1").strip(),
            "haproxy": sh("haproxy -v | head -1").strip(),
            "caddy": sh("caddy version").strip(),
            "portcullis": sh(f"{BIN} --version").strip(),
        },
    }
    upstream = start_upstream()
    running, headers = {}, {"direct": {}}
    try:
        for name, start in CONTENDERS.items():
            if start:
                running[name], headers[name] = start()
                wait_port(PORTS[name], "/small", headers[name])
        names = list(PORTS)
        print(f"warming up {', '.join(names)}", flush=True)
        for name in names:
            wrk(PORTS[name], 16, headers[name])
        throughput = {}
        cases = [(c, True, "/small") for c in CONNECTIONS] + [(64, False, "/small"), (64, True, "/big")]
        for conns, keepalive, path in cases:
            case = f"c{conns}{'' if keepalive else '-close'}{'' if path == '/small' else '-64KiB'}"
            samples = {n: [] for n in names}
            for r in range(ROUNDS):
                order = names[:]
                random.shuffle(order)
                for name in order:
                    res = wrk(PORTS[name], conns, headers[name], path, keepalive)
                    samples[name].append(res)
                    print(f"{case} round {r + 1} {name}: {res['rps']:.0f} req/s"
                          f"{' NON-2XX ' + str(res['non_2xx']) if res['non_2xx'] else ''}"
                          f"{' ERRORS ' + str(res['socket_errors']) if res['socket_errors'] else ''}", flush=True)
            throughput[case] = {
                n: {"median_rps": statistics.median(s["rps"] for s in samples[n]),
                    "non_2xx": sum(s["non_2xx"] for s in samples[n]),
                    "socket_errors": sum(s["socket_errors"] for s in samples[n])}
                for n in names}
        # Open-loop latency at the same fixed rates for everyone.
        slowest = min(v["median_rps"] for n, v in throughput["c64"].items() if n != "direct")
        latency = {}
        for share in (25, 50, 75):
            rate = int(slowest * share / 100)
            latency[share] = {"rate": rate}
            for name in names:
                proc = running.get(name)
                cpu0 = proc.cpu_seconds() if proc else 0
                res = oha(PORTS[name], rate, headers[name], seconds=5 if QUICK else 10)
                if proc:
                    res["cpu_us_per_request"] = (proc.cpu_seconds() - cpu0) * 1e6 / max(1, res["requests"])
                    res["rss_mib"] = proc.rss_kib() / 1024
                latency[share][name] = res
                print(f"latency {share}% ({rate}/s) {name}: p50 {res['p50']:.3f} ms p99 {res['p99']:.3f} ms"
                      + (f" cpu {res['cpu_us_per_request']:.1f} us/req rss {res['rss_mib']:.1f} MiB" if proc else ""),
                      flush=True)
        dropped = {}
        for name in ("portcullis", "portcullis-full"):
            metrics = urllib.request.urlopen(running[name].metrics_url).read().decode()
            m = re.search(r"^portcullis_log_dropped_total (\d+)", metrics, re.M)
            dropped[name] = int(m.group(1)) if m else None
        report = {"machine": machine, "throughput": throughput, "latency": latency, "log_dropped": dropped}
        (RESULTS / "latest.json").write_text(json.dumps(report, indent=2))
        (RESULTS / "latest.md").write_text(render(report))
        print(render(report))
    finally:
        for proc in running.values():
            proc.stop()
        upstream.stop()
        shutil.rmtree(WORK, ignore_errors=True)


def render(report):
    lines = ["## Throughput (median requests/s; ratio to nginx, to direct)", ""]
    cases = list(report["throughput"])
    lines.append("| contender | " + " | ".join(cases) + " |")
    lines.append("|---|" + "---|" * len(cases))
    for name in PORTS:
        cells = []
        for case in cases:
            row = report["throughput"][case]
            v = row[name]["median_rps"]
            flag = " ⚠" if row[name]["non_2xx"] or row[name]["socket_errors"] else ""
            cells.append(f"{v:,.0f} ({v / row['nginx']['median_rps']:.2f}×, {v / row['direct']['median_rps']:.2f}×){flag}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Open-loop latency added over direct (ms), CPU per request and RSS", ""]
    for share, row in report["latency"].items():
        lines.append(f"**{share}% of the slowest proxy's maximum: {row['rate']} req/s**")
        lines.append("")
        lines.append("| contender | p50 | p99 | p99.9 | CPU µs/req | RSS MiB |")
        lines.append("|---|---|---|---|---|---|")
        base = row["direct"]
        for name in PORTS:
            if name == "direct":
                continue
            r = row[name]
            lines.append(f"| {name} | +{r['p50'] - base['p50']:.3f} | +{r['p99'] - base['p99']:.3f} | "
                         f"+{r['p99.9'] - base['p99.9']:.3f} | {r.get('cpu_us_per_request', 0):.1f} | {r.get('rss_mib', 0):.1f} |")
        lines.append("")
    lines.append(f"Access-log lines dropped: {report['log_dropped']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    # Turn SIGTERM into an exception so the servers are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
