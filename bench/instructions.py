#!/usr/bin/env python3
"""Instructions per request of two Portcullis binaries on the full pipeline
(session cookie, a per-user rate limit, JSON access log to a file), counted
by callgrind: unlike throughput, the count hardly moves when other work
shares the machine, so it can tell a 1 % change apart on a busy box.

    python3 bench/instructions.py BASE_BINARY NEW_BINARY

Each binary serves under valgrind; after a warm-up the counters are zeroed,
REQUESTS requests are made over keep-alive connections, and the total of
every thread is divided by the number of requests.
"""

import glob
import http.client
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402

REQUESTS = int(os.environ.get("REQUESTS", "4000"))
CONNS = 4
PORT = 18126


def callgrind_wrapper(binary, out_dir):
    """A stand-in for the binary that runs only `serve` under callgrind."""
    wrapper = out_dir / "portcullis"
    wrapper.write_text(f"""#!/bin/sh
if [ "$1" = serve ]; then
  exec valgrind --tool=callgrind --callgrind-out-file={out_dir}/callgrind.%p "{binary}" "$@"
fi
exec "{binary}" "$@"
""")
    wrapper.chmod(0o755)
    return wrapper


def hammer(headers, count):
    def one_connection(n):
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
        for _ in range(n):
            conn.request("GET", "/small", headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"status {response.status}")
        conn.close()

    threads = [threading.Thread(target=one_connection, args=(count // CONNS,)) for _ in range(CONNS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count // CONNS * CONNS


def total_instructions(out_dir, pid):
    """The `summary:` (every thread) of the latest numbered dump."""
    dumps = glob.glob(f"{out_dir}/callgrind.{pid}.*")
    last = max(dumps, key=lambda d: int(d.rsplit(".", 1)[1]))
    return int(re.search(r"^summary:\s+(\d+)", Path(last).read_text(errors="replace"), re.M).group(1))


# As in ab.py: the new side routes to a two-target service instead of one URL.
NEW_BALANCED = os.environ.get("NEW_BALANCED") == "1"


def measure(binary, balanced=False):
    out_dir = compare.WORK / f"callgrind-{Path(binary).parent.parent.name}-{time.time_ns()}"
    out_dir.mkdir()
    compare.BIN = callgrind_wrapper(Path(binary).resolve(), out_dir)
    proc, headers = compare.portcullis(PORT, full=True, balanced=balanced)
    try:
        hammer(headers, 400)  # warm-up: connections, caches, the upstream pool
        pid = next(p for p in proc.pids() if b"--tool=callgrind" in Path(f"/proc/{p}/cmdline").read_bytes())
        # Valgrind takes a command when the server next runs: an idle server
        # takes "zero" with the first measured request, and "dump" with one
        # request more (a fraction of one request in thousands).
        zero = subprocess.Popen(["callgrind_control", "--zero", str(pid)], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        made = hammer(headers, REQUESTS)
        zero.wait(timeout=60)
        time.sleep(0.5)  # the access-log writer's next round
        dump = subprocess.Popen(["callgrind_control", "--dump", str(pid)], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        hammer(headers, 1 * CONNS)
        dump.wait(timeout=60)
        return total_instructions(out_dir, pid) / made
    finally:
        proc.stop()
        for data in compare.WORK.glob("portcullis-full*-data"):
            compare.shutil.rmtree(data, ignore_errors=True)


def main():
    base, new = sys.argv[1], sys.argv[2]
    upstream = compare.start_upstream()
    try:
        result = {
            name: measure(binary, balanced=NEW_BALANCED and name == "new")
            for name, binary in (("base", base), ("new", new))
        }
    finally:
        upstream.stop()
    print(f"instructions per request, {REQUESTS} requests over {CONNS} connections:")
    print(f"  base: {result['base'] / 1000:.1f} K")
    print(f"  new:  {result['new'] / 1000:.1f} K")
    print(f"  new/base: {result['new'] / result['base']:.3f}")


if __name__ == "__main__":
    main()
