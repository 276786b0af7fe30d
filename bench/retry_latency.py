#!/usr/bin/env python3
"""What a retry adds to a request's latency: a service of two targets, one of
them a closed port that is never ejected, weighted so that round robin
sends every other request to it first and the gateway retries on the live
one. Requests are
made one at a time over a keep-alive connection; each is sorted by the
access line's `tries` and the latencies of the two kinds compared.

    python3 bench/retry_latency.py [BINARY]      # default target/release/portcullis
"""

import http.client
import json
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402

REQUESTS = int(compare.os.environ.get("REQUESTS", "2000"))
PORT = 18130


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    binary = Path(sys.argv[1]) if len(sys.argv) > 1 else compare.BIN
    upstream = compare.start_upstream()
    log = compare.WORK / "retry-access.log"
    proc = compare.one_route("retry", binary, PORT, "/*", "svc", sections=f"""
[upstreams.svc]
targets = ["http://127.0.0.1:{closed_port()}", {{ url = "http://127.0.0.1:{compare.UPSTREAM}", weight = 2 }}]
[upstreams.svc.passive]
consecutive_failures = 0
""")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", PORT)
        timings = {}
        for i in range(REQUESTS):
            started = time.perf_counter()
            conn.request("GET", "/small", headers={"X-Request-Id": f"r{i}"})
            response = conn.getresponse()
            response.read()
            timings[f"r{i}"] = (time.perf_counter() - started) * 1000
            assert response.status == 200, response.status
        time.sleep(1)
        by_tries = {1: [], 2: []}
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if record.get("msg") == "access" and record["request_id"] in timings:
                by_tries[record["tries"]].append(timings[record["request_id"]])
        for tries, samples in by_tries.items():
            samples.sort()
            print(f"tries={tries}: {len(samples)} requests, "
                  f"p50 {statistics.median(samples):.3f} ms, "
                  f"p99 {samples[int(len(samples) * 0.99) - 1]:.3f} ms")
        extra = statistics.median(by_tries[2]) - statistics.median(by_tries[1])
        print(f"a retry adds {extra:.3f} ms at the median")
    finally:
        proc.stop()
        upstream.stop()
        if compare.os.environ.get("KEEP") != "1":
            compare.shutil.rmtree(compare.WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
