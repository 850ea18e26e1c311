#!/usr/bin/env python3
"""bench/syscalls.py: system calls the gateway makes per request (issue 20, "count before changing").

Loads the acme fixture with bench/run.py's own setup, starts the release gateway on a fresh data
directory with one PostgreSQL datasource and app, warms up, then attaches `strace -c -f` to the
gateway while wrk sends the PostgreSQL PK lookup for a fixed time at each client count, and
prints the calls per answered request, by call. strace slows the gateway down, so the request
rate under it means nothing; the counts per request are what this measures.

Needs what bench/run needs (wrk, the direct baseline for the fixture setup, local PostgreSQL and
MariaDB) plus strace. Environment: as bench/run.py (SLUICE_BENCH_BIN, SLUICE_BENCH_DIRECT, ...),
and SYSCALL_CLIENTS (default 1,64), SYSCALL_SECS (default 5).
"""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402
import paired  # noqa: E402

CLIENTS = [int(c) for c in os.environ.get("SYSCALL_CLIENTS", "1,64").split(",")]
SECS = int(os.environ.get("SYSCALL_SECS", "5"))


def counts(path):
    """strace -c's table as {call: calls}."""
    out = {}
    for line in open(path):
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if m and m[2] != "total":
            out[m[2]] = int(m[1])
    return out


def main():
    if not R.DIRECT or not os.path.exists(R.DIRECT):
        sys.exit("SLUICE_BENCH_DIRECT must name the built direct baseline (bench/run builds it)")
    R.direct("setup", "--pg-url", R.PG_ADMIN, "--mysql-url", R.MY_ADMIN, "--database",
             R.DATABASE, "--account-prefix", R.PREFIX)
    try:
        gw = R.Gateway("syscalls", {"SLUICE_POOLS__IDLE_TIMEOUT_SECS": "600"})
        try:
            gw.enable("postgres")
            # Also registers on builds from before TLS to databases (paired.datasource).
            ds = paired.datasource(gw, "postgres")
            app = gw.app("bench-postgres", [ds])
            sql, lo, hi = R.QUERIES["postgres"]["pk"]
            print("| clients | requests | syscalls per request | by call (per request) |")
            print("|---|---|---|---|")
            for c in CLIENTS:
                R.wrk(gw, app, sql, lo, hi, c, 2)
                out = f"/tmp/sluice-syscalls-{os.getpid()}-{c}.txt"
                st = subprocess.Popen(["strace", "-c", "-f", "-q", "-o", out, "-p", str(gw.pid)])
                time.sleep(1)
                res = R.wrk(gw, app, sql, lo, hi, c, SECS)
                st.terminate()
                st.wait()
                calls = counts(out)
                os.unlink(out)
                n = res["requests"]
                top = sorted(calls.items(), key=lambda x: -x[1])
                by = ", ".join(f"{k} {v / n:.2f}" for k, v in top if v / n >= 0.05)
                print(f"| {c} | {n} | {sum(calls.values()) / n:.1f} | {by} |", flush=True)
        finally:
            gw.stop()
    finally:
        R.direct("teardown", "--pg-url", R.PG_ADMIN, "--mysql-url", R.MY_ADMIN, "--database",
                 R.DATABASE, "--account-prefix", R.PREFIX)


if __name__ == "__main__":
    main()
