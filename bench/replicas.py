#!/usr/bin/env python3
"""bench/replicas.py: what the shared PostgreSQL store costs, and how fast changes travel (issue 17).

1. The PK lookup through a gateway on the embedded SQLite store and through one on a PostgreSQL
   store (a database on the local server, `sslmode=disable`), alternated in rounds at each client
   count: throughput, p50/p99 and the gateway's CPU per request (wrk, as bench/run.py runs it).
   Both audit every query and answer only after the record is committed.
2. Propagation: two replicas over one PostgreSQL store. BENCH_REPLICA_CHANGES times (default
   100), a token is revoked through replica A, and replica B is polled (`GET /v1/me` with that
   token, back to back) until it refuses it. The delay is from A's answer to B's first refusal.

Needs what bench/run needs (the release binary, the direct baseline for the fixture setup, wrk,
local PostgreSQL). Environment: as bench/run.py, plus BENCH_REPLICA_CLIENTS (default 1,64),
BENCH_REPLICA_ROUNDS (default 2), BENCH_REPLICA_CHANGES (default 100).
"""
import http.client
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402

CLIENTS = [int(c) for c in os.environ.get("BENCH_REPLICA_CLIENTS", "1,64").split(",")]
ROUNDS = int(os.environ.get("BENCH_REPLICA_ROUNDS", "2"))
CHANGES = int(os.environ.get("BENCH_REPLICA_CHANGES", "100"))
STORE_DB = "sluice_bench_store"
KEY = "5f0e3c2a1b4d6e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f"


def store_url():
    R.psql(f"DROP DATABASE IF EXISTS {STORE_DB} WITH (FORCE)")
    R.psql(f"CREATE DATABASE {STORE_DB}")
    u = R.urllib.parse.urlparse(R.PG_ADMIN)
    return (f"postgres://{u.username or 'postgres'}@{u.hostname or '127.0.0.1'}:"
            f"{u.port or 5432}/{STORE_DB}?sslmode=disable")


def lookup_app(gw):
    gw.enable("postgres")
    ds = gw.datasource("acme-postgres", "postgres", {"max_rows": 1000})
    return gw.app("bench-postgres", [ds])


def cost():
    # Pools close between runs (as bench/run does): two gateways' pools of 64 at once would
    # pass the local server's max_connections.
    env = {"SLUICE_POOLS__IDLE_TIMEOUT_SECS": "1", "SLUICE_MASTER_KEY": KEY}
    gws = {"sqlite": R.Gateway("sqlite-store", env),
           "postgres": R.Gateway("pg-store", env, store_url=store_url())}
    try:
        apps = {name: lookup_app(gw) for name, gw in gws.items()}
        sql, lo, hi = R.QUERIES["postgres"]["pk"]
        runs = {(name, c): [] for name in gws for c in CLIENTS}
        for rnd in range(ROUNDS):
            for c in CLIENTS:
                order = list(gws) if rnd % 2 == 0 else list(reversed(gws))
                for name in order:
                    R.wait_db_quiet("postgres")
                    r = R.gateway_run(gws[name], apps[name], "postgres", "pk", c)
                    if r["failed"]:
                        raise RuntimeError(f"{name} x{c}: {r['errors']}")
                    runs[(name, c)].append(r)
                    gws[name].wait_pools_closed()
                    R.log(f"  round {rnd} {name:8} c={c:<3} {r['rps']:8.0f} rps p50 "
                          f"{r['p50_ms']:.3f} p99 {r['p99_ms']:.3f} cpu {r['cpu_us']:.0f} us/req")
        return runs
    finally:
        for gw in gws.values():
            gw.stop()


def get_status(port, token, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"authorization": f"Bearer {token}"})
        res = conn.getresponse()
        res.read()
        return res.status
    finally:
        conn.close()


def propagation():
    url = store_url()
    env = {"SLUICE_MASTER_KEY": KEY}
    a = R.Gateway("replica-a", env, store_url=url)
    b = R.Gateway("replica-b", env, store_url=url, company=False)
    b.token = a.token
    try:
        me = a.ok("GET", "/v1/me")
        user = me["user"]["id"] if "user" in me else me["id"]
        delays = []
        for _ in range(CHANGES):
            minted = a.ok("POST", f"/v1/users/{user}/tokens")
            # B knows the new token before it is revoked.
            deadline = time.time() + 10
            while get_status(b.port, minted["token"], "/v1/me") != 200:
                if time.time() > deadline:
                    raise RuntimeError("replica B never saw the new token")
                time.sleep(0.005)
            a.ok("DELETE", f"/v1/tokens/{minted['id']}")
            t0 = time.perf_counter()
            while True:
                st = get_status(b.port, minted["token"], "/v1/me")
                if st == 401:
                    break
                if st != 200:
                    raise RuntimeError(f"replica B answered {st}")
                if time.perf_counter() - t0 > 10:
                    raise RuntimeError("replica B never refused the revoked token")
            delays.append((time.perf_counter() - t0) * 1000)
        return delays
    finally:
        a.stop()
        b.stop()


def main():
    if not R.DIRECT or not os.path.exists(R.DIRECT):
        sys.exit("SLUICE_BENCH_DIRECT must name the built direct baseline (bench/run builds it)")
    R.direct("setup", "--pg-url", R.PG_ADMIN, "--mysql-url", R.MY_ADMIN, "--database",
             R.DATABASE, "--account-prefix", R.PREFIX)
    R.log("== the PK lookup on each store")
    runs = cost()
    R.log("== propagation of a revoked token, replica A to replica B")
    delays = propagation()
    R.psql(f"DROP DATABASE IF EXISTS {STORE_DB} WITH (FORCE)")
    print()
    print(f"Machine: {R.machine()}")
    print(f"{ROUNDS} rounds of {R.SECS} s (after {R.WARMUP} s warm-up) per store and client count, "
          "alternated; medians of the rounds.")
    print()
    print("| clients | store | req/s | p50 ms | p99 ms | gateway CPU µs/req | PostgreSQL ÷ SQLite req/s |")
    print("|---|---|---|---|---|---|---|")
    for c in CLIENTS:
        med = {}
        for name in ("sqlite", "postgres"):
            rs = runs[(name, c)]
            med[name] = {k: statistics.median(r[k] for r in rs)
                         for k in ("rps", "p50_ms", "p99_ms", "cpu_us")}
        for name in ("sqlite", "postgres"):
            m = med[name]
            ratio = f"{med['postgres']['rps'] / med['sqlite']['rps']:.2f}" if name == "postgres" else ""
            print(f"| {c} | {name} | {m['rps']:.0f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | "
                  f"{m['cpu_us']:.0f} | {ratio} |")
    print()
    delays.sort()
    print(f"Propagation over {len(delays)} token revocations (A's answer to B's first refusal): "
          f"p50 {statistics.median(delays):.1f} ms, p90 {delays[int(len(delays) * 0.9) - 1]:.1f} ms, "
          f"max {delays[-1]:.1f} ms.")


if __name__ == "__main__":
    main()
