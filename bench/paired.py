#!/usr/bin/env python3
"""bench/paired.py: two builds of the gateway, side by side, on the same PK lookup.

Runs gateway A (PAIRED_A, a release binary) and gateway B (PAIRED_B) at once, each on its own
data directory with the same PostgreSQL (and MariaDB) datasource, and alternates them in rounds
(A then B, then B then A, ...) at each client count, so machine drift hits both alike. Reports the
medians of the rounds: throughput, p50/p99 and the gateway's CPU per request (wrk, as bench/run.py
runs it), and B ÷ A. Pools close between runs so the two never hold the database's connections
at once.

Needs what bench/run needs (the direct baseline for the fixture setup, wrk, local PostgreSQL and
MariaDB). Environment: as bench/run.py, plus PAIRED_A, PAIRED_B (binaries), PAIRED_A_ENV and
PAIRED_B_ENV (extra environment, `K=V,K=V`), PAIRED_CLIENTS
(default 1,64), PAIRED_ROUNDS (default 3), PAIRED_KINDS (default postgres), PAIRED_QUERY (`pk`,
default, or `refused`: `SELEC 1`, refused by the policy and audited, no database).
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402

CLIENTS = [int(c) for c in os.environ.get("PAIRED_CLIENTS", "1,64").split(",")]
ROUNDS = int(os.environ.get("PAIRED_ROUNDS", "3"))
KINDS = os.environ.get("PAIRED_KINDS", "postgres").split(",")
QUERY = os.environ.get("PAIRED_QUERY", "pk")
BINS = {"A": os.environ.get("PAIRED_A", ""), "B": os.environ.get("PAIRED_B", "")}
# Extra environment per side, `K=V,K=V` (e.g. the same binary with TOKIO_WORKER_THREADS=1).
ENVS = {n: dict(kv.split("=", 1) for kv in os.environ.get(f"PAIRED_{n}_ENV", "").split(",") if kv)
        for n in BINS}


def datasource(gw, kind):
    """The bench datasource; without `connection.tls` for builds older than TLS to databases
    (issue 16), which refuse the field (and connect in plain TCP, as `disable` does)."""
    try:
        return gw.datasource(f"acme-{kind}", kind, {"max_rows": 1000})
    except RuntimeError as e:
        if "tls" not in str(e):
            raise
    port = 5432 if kind == "postgres" else 3306
    admin = R.urllib.parse.urlparse(R.PG_ADMIN if kind == "postgres" else R.MY_ADMIN)
    body = {"name": f"acme-{kind}", "kind": kind,
            "connection": {"host": admin.hostname or "127.0.0.1", "port": admin.port or port,
                           "database": R.DATABASE, "user": R.ANALYST, "password": R.ANALYST_PW},
            "policy": {"max_rows": 1000}, "pool": {"max_size": 64}}
    return gw.ok("POST", "/v1/datasources", body)["id"]


def one_run(gw, app, kind, clients):
    """One measured wrk run of PAIRED_QUERY (after its warm-up), checked: every PK lookup
    answered 200, every refused statement 400."""
    if QUERY == "pk":
        r = R.gateway_run(gw, app, kind, "pk", clients)
        if r["failed"]:
            raise RuntimeError(f"{kind} x{clients}: {r['errors']}")
        return r
    _, lo, hi = R.QUERIES[kind]["pk"]
    if R.WARMUP:
        R.wrk(gw, app, "SELEC 1", lo, hi, clients, R.WARMUP)
    r = R.wrk(gw, app, "SELEC 1", lo, hi, clients, R.SECS)
    if r["failed"] != r["errors"]["status"] or r["errors"]["status"] < r["requests"]:
        raise RuntimeError(f"refused x{clients}: {r['errors']} of {r['requests']}")
    return r


def main():
    for name, path in BINS.items():
        if not path or not os.path.exists(path):
            sys.exit(f"PAIRED_{name} must name a built release binary")
    if not R.DIRECT or not os.path.exists(R.DIRECT):
        sys.exit("SLUICE_BENCH_DIRECT must name the built direct baseline (bench/run builds it)")
    R.direct("setup", "--pg-url", R.PG_ADMIN, "--mysql-url", R.MY_ADMIN, "--database",
             R.DATABASE, "--account-prefix", R.PREFIX)
    gws, apps = {}, {}
    try:
        for name, path in BINS.items():
            R.BIN = path
            gws[name] = R.Gateway(f"paired-{name}",
                                  {"SLUICE_POOLS__IDLE_TIMEOUT_SECS": "1", **ENVS[name]})
            for kind in KINDS:
                gws[name].enable(kind)
                ds = datasource(gws[name], kind)
                apps[(name, kind)] = gws[name].app(f"bench-{kind}", [ds])
        runs = {}
        for rnd in range(ROUNDS):
            for kind in KINDS:
                for c in CLIENTS:
                    order = ["A", "B"] if rnd % 2 == 0 else ["B", "A"]
                    for name in order:
                        R.wait_db_quiet(kind)
                        r = one_run(gws[name], apps[(name, kind)], kind, c)
                        gws[name].wait_pools_closed()
                        runs.setdefault((kind, c, name), []).append(r)
                        R.log(f"  round {rnd} {kind:8} c={c:<3} {name} {r['rps']:8.0f} rps p50 "
                              f"{r['p50_ms']:.3f} p99 {r['p99_ms']:.3f} cpu {r['cpu_us']:.0f} us/req")
    finally:
        for gw in gws.values():
            gw.stop()
    print()
    print(f"Machine: {R.machine()}")
    print(f"Query: {QUERY}. A = {BINS['A']} {ENVS['A'] or ''}, B = {BINS['B']} {ENVS['B'] or ''}; {ROUNDS} rounds of {R.SECS} s (after {R.WARMUP} s "
          "warm-up), alternated; medians of the rounds.")
    print()
    print("| kind | clients | build | req/s | p50 ms | p99 ms | CPU µs/req | B ÷ A req/s | B ÷ A CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in KINDS:
        for c in CLIENTS:
            med = {n: {k: statistics.median(r[k] for r in runs[(kind, c, n)])
                       for k in ("rps", "p50_ms", "p99_ms", "cpu_us")} for n in BINS}
            for n in BINS:
                m = med[n]
                ratio = (f"{med['B']['rps'] / med['A']['rps']:.2f} | "
                         f"{med['B']['cpu_us'] / med['A']['cpu_us']:.2f}") if n == "B" else " | "
                print(f"| {kind} | {c} | {n} | {m['rps']:.0f} | {m['p50_ms']:.3f} | "
                      f"{m['p99_ms']:.3f} | {m['cpu_us']:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
