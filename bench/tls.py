#!/usr/bin/env python3
"""bench/tls.py: what TLS to the database costs (issue 16).

One gateway, two PostgreSQL datasources on the same local server and database: one with
`connection.tls.mode = disable`, one with `verify-full` (the server's certificate verified against
`BENCH_TLS_CA`, by default Debian's self-signed snakeoil certificate the local cluster serves, and
its name, `BENCH_TLS_HOST`, default `localhost`). Alternating the two, in rounds:
  * the PK lookup through the gateway at each client count (wrk, as bench/run.py runs it):
    throughput, p50/p99 and the gateway's CPU per request;
  * the first connection of a pool: `POST /v1/datasources/{id}/check` on a pool just closed
    (connect, TLS handshake, authentication, session setup, `SELECT version()`), against the same
    call on the warm pool.

Needs what bench/run needs (the release binary, the direct baseline for the fixture setup, wrk,
local PostgreSQL with ssl=on). Environment: as bench/run.py, plus BENCH_TLS_CLIENTS (default
1,64), BENCH_TLS_ROUNDS (default 2), BENCH_TLS_CHECKS (default 20), BENCH_TLS_CA, BENCH_TLS_HOST.
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402

CLIENTS = [int(c) for c in os.environ.get("BENCH_TLS_CLIENTS", "1,64").split(",")]
ROUNDS = int(os.environ.get("BENCH_TLS_ROUNDS", "2"))
CHECKS = int(os.environ.get("BENCH_TLS_CHECKS", "20"))
CA = os.environ.get("BENCH_TLS_CA", "/etc/ssl/certs/ssl-cert-snakeoil.pem")
HOST = os.environ.get("BENCH_TLS_HOST", "localhost")


def datasource(gw, name, host, tls):
    body = {"name": name, "kind": "postgres",
            "connection": {"host": host, "port": 5432, "database": R.DATABASE,
                           "user": R.ANALYST, "password": R.ANALYST_PW, "tls": tls},
            "policy": {"max_rows": 1000}, "pool": {"max_size": 64}}
    return gw.ok("POST", "/v1/datasources", body)["id"]


def check_ms(gw, ds):
    t0 = time.perf_counter()
    answer = gw.ok("POST", f"/v1/datasources/{ds}/check")
    return (time.perf_counter() - t0) * 1000, answer


def main():
    if not R.DIRECT or not os.path.exists(R.DIRECT):
        sys.exit("SLUICE_BENCH_DIRECT must name the built direct baseline (bench/run builds it)")
    with open(CA) as f:
        ca_pem = f.read()
    R.direct("setup", "--pg-url", R.PG_ADMIN, "--mysql-url", R.MY_ADMIN, "--database",
             R.DATABASE, "--account-prefix", R.PREFIX)
    try:
        gw = R.Gateway("tls", {"SLUICE_POOLS__IDLE_TIMEOUT_SECS": "1"})
        try:
            gw.enable("postgres")
            modes = {
                "disable": datasource(gw, "plain", "127.0.0.1", {"mode": "disable"}),
                "verify-full": datasource(gw, "tls", HOST,
                                          {"mode": "verify-full", "ca_pem": ca_pem}),
            }
            apps = {m: gw.app(f"bench-{m}", [ds]) for m, ds in modes.items()}
            for m, ds in modes.items():
                _, answer = check_ms(gw, ds)
                print(f"check {m}: tls = {answer.get('tls')}", flush=True)
            sql, lo, hi = R.QUERIES["postgres"]["pk"]
            rows = {}
            for rnd in range(ROUNDS):
                for c in CLIENTS:
                    for m in modes:
                        R.wrk(gw, apps[m], sql, lo, hi, c, R.WARMUP)
                        g = R.wrk(gw, apps[m], sql, lo, hi, c, R.SECS)
                        if g["failed"]:
                            raise RuntimeError(f"{m} x{c}: {g['errors']}")
                        rows.setdefault((c, m), []).append(g)
                        print(f"round {rnd + 1} c={c:<3} {m:11} {g['rps']:8.0f} rps p50 "
                              f"{g['p50_ms']:.3f} p99 {g['p99_ms']:.3f} cpu {g['cpu_us']:.0f} "
                              f"us/req", flush=True)
                        gw.wait_pools_closed()
            first = {m: [] for m in modes}
            warm = {m: [] for m in modes}
            for _ in range(CHECKS):
                for m, ds in modes.items():
                    if not gw.wait_pools_closed():
                        raise RuntimeError("the pools did not close")
                    first[m].append(check_ms(gw, ds)[0])
                    warm[m].append(check_ms(gw, ds)[0])
            print()
            print("| clients | mode | rps (per round) | p50 ms | p99 ms | gateway CPU µs/req |")
            print("|---|---|---|---|---|---|")
            for (c, m), gs in sorted(rows.items()):
                def col(key, fmt):
                    return " / ".join(format(g[key], fmt) for g in gs)
                print(f"| {c} | {m} | {col('rps', ',.0f')} | {col('p50_ms', '.3f')} | "
                      f"{col('p99_ms', '.2f')} | {col('cpu_us', '.0f')} |")
            print()
            print("| mode | check on a closed pool, ms (median / min / max) | on the warm pool |")
            print("|---|---|---|")
            for m in modes:
                f, w = first[m], warm[m]
                print(f"| {m} | {statistics.median(f):.2f} / {min(f):.2f} / {max(f):.2f} | "
                      f"{statistics.median(w):.2f} / {min(w):.2f} / {max(w):.2f} |")
        finally:
            gw.stop()
    finally:
        R.direct("teardown", "--pg-url", R.PG_ADMIN, "--mysql-url", R.MY_ADMIN, "--database",
                 R.DATABASE, "--account-prefix", R.PREFIX)


if __name__ == "__main__":
    main()
