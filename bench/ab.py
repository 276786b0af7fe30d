#!/usr/bin/env python3
"""Interleaved A/B throughput of two Portcullis binaries: the full pipeline
(session cookie, a per-user rate limit, JSON access log to a file) in front
of the same nginx upstream, A and B taking turns in random order each
round. See ab.sh, which builds the two binaries.

    python3 bench/ab.py BASE_BINARY NEW_BINARY

With NEW_BALANCED=1 the new side routes to a service of two targets (the
same upstream on two ports) instead of one URL: give the same binary twice
to measure what balancing and health tracking cost.
"""

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402

ROUNDS = int(compare.os.environ.get("ROUNDS", "6"))
CONNS = int(compare.os.environ.get("CONNS", "64"))
PATH = compare.os.environ.get("AB_PATH", "/small")


NEW_BALANCED = compare.os.environ.get("NEW_BALANCED") == "1"


def measure(binary, port, balanced=False):
    compare.BIN = Path(binary)
    proc, headers = compare.portcullis(port, full=True, balanced=balanced)
    try:
        compare.wrk(port, CONNS, headers, path=PATH)  # warm-up
        cpu_before = proc.cpu_seconds()
        result = compare.wrk(port, CONNS, headers, path=PATH)
        cpu = proc.cpu_seconds() - cpu_before
    finally:
        proc.stop()
        for data in compare.WORK.glob("portcullis-full*-data"):
            compare.shutil.rmtree(data, ignore_errors=True)
    if result["non_2xx"] or result["socket_errors"]:
        raise SystemExit(f"{binary}: {result}")
    result["cpu_us"] = cpu / result["requests"] * 1e6
    return result


def main():
    base, new = sys.argv[1], sys.argv[2]
    upstream = compare.start_upstream()
    runs = {"base": [], "new": []}
    try:
        for round_ in range(ROUNDS):
            order = [("base", base), ("new", new)]
            random.shuffle(order)
            for name, binary in order:
                result = measure(binary, 18106, balanced=NEW_BALANCED and name == "new")
                runs[name].append(result)
                print(f"round {round_ + 1} {name}: {result['rps']:.0f} req/s, "
                      f"{result['cpu_us']:.1f} µs CPU/request", flush=True)
                time.sleep(1)
    finally:
        upstream.stop()
    med = {k: statistics.median(r["rps"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r["cpu_us"] for r in v) for k, v in runs.items()}
    print(f"\nmedian of {ROUNDS} rounds, wrk -c{CONNS} -d{compare.DURATION}s {PATH}:")
    print(f"  base: {med['base']:.0f} req/s, {cpu['base']:.1f} µs CPU/request")
    print(f"  new:  {med['new']:.0f} req/s, {cpu['new']:.1f} µs CPU/request")
    print(f"  new/base throughput: {med['new'] / med['base']:.3f}, "
          f"CPU per request: {cpu['new'] / cpu['base']:.3f}")


if __name__ == "__main__":
    main()
