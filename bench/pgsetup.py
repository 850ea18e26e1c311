#!/usr/bin/env python3
"""bench/pgsetup.py: what the PostgreSQL setup statement costs the server, and what its
alternatives would (issue 20, item 3).

The gateway sends `SETUP_SQL` (src/datasource/postgres/session.rs) before every statement, in the
same flush but with its own Sync, so PostgreSQL runs two statements and two implicit transactions
per lookup. This replays the same messages with pgbench (`-M prepared`, the same extended
protocol) in a throwaway database, one variant at a time, and reads the server's CPU (utime +
stime of every postgres process, /proc) over each run:

  lookup        the lookup alone (what pgbench -S and the direct pool send)
  setup+lookup  the gateway today: the setup, then the lookup, each its own transaction
  verify+lookup the setup's reads only (nothing assigned), then the lookup
  ifchanged     each setting assigned only when it reads differently, then the lookup
  explicit-tx   BEGIN READ ONLY, the setup with transaction-local settings, the lookup, COMMIT:
                one transaction, four statements, each with its own Sync (as tokio-postgres
                would send them, pipelined)
  one-tx        the setup and the lookup in one pipeline without a Sync between: one
                implicit transaction (not reachable through tokio-postgres' API; the floor)

Rounds alternate the variants; medians are printed. Environment: PGSETUP_CLIENTS (default 1,16),
PGSETUP_SECS (default 6), PGSETUP_ROUNDS (default 3).
"""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402

CLIENTS = [int(c) for c in os.environ.get("PGSETUP_CLIENTS", "1,16").split(",")]
SECS = int(os.environ.get("PGSETUP_SECS", "6"))
ROUNDS = int(os.environ.get("PGSETUP_ROUNDS", "3"))
DB = "sluice_bench_pgsetup"
PG = ["-h", "127.0.0.1", "-U", "postgres"]

LOOKUP = "SELECT abalance FROM public.pgbench_accounts WHERE aid = :aid;"
# SETUP_SQL with the values a read-only statement with a 30 s timeout sends.
SET = [("search_path", "pg_catalog, pg_temp"), ("role", "none"),
       ("statement_timeout", "30000"), ("lock_timeout", "30000"),
       ("idle_in_transaction_session_timeout", "30000"),
       ("standard_conforming_strings", "on"), ("default_transaction_read_only", "on")]
READS = ["transaction_read_only", "client_encoding", "DateStyle", "TimeZone", "IntervalStyle"]


def setup_sql():
    sets = [f"pg_catalog.set_config('{k}', '{v}', false)" for k, v in SET]
    reads = [f"pg_catalog.current_setting('{k}')" for k in READS]
    return "SELECT " + ", ".join(sets + reads) + ";"


def verify_sql():
    reads = [f"pg_catalog.current_setting('{k}')" for k, _ in SET]
    reads += [f"pg_catalog.current_setting('{k}')" for k in READS]
    return "SELECT " + ", ".join(reads) + ";"


def ifchanged_sql():
    sets = [f"CASE WHEN pg_catalog.current_setting('{k}') = '{v}' THEN '{v}' "
            f"ELSE pg_catalog.set_config('{k}', '{v}', false) END" for k, v in SET]
    reads = [f"pg_catalog.current_setting('{k}')" for k in READS]
    return "SELECT " + ", ".join(sets + reads) + ";"


AID = "\\set aid random(1, 100000)\n"
VARIANTS = {
    "lookup": AID + LOOKUP + "\n",
    "setup+lookup": AID + setup_sql() + "\n" + LOOKUP + "\n",
    "verify+lookup": AID + verify_sql() + "\n" + LOOKUP + "\n",
    "ifchanged": AID + ifchanged_sql() + "\n" + LOOKUP + "\n",
    "explicit-tx": AID + "BEGIN READ ONLY;\n" + setup_sql().replace("false)", "true)") + "\n"
    + LOOKUP + "\nCOMMIT;\n",
    "one-tx": AID + "\\startpipeline\n" + setup_sql() + "\n" + LOOKUP + "\n\\endpipeline\n",
}


def run(script, clients):
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
        path = f.name
    time.sleep(0.5)
    before = R.db_cpu_all_secs("postgres")
    out = subprocess.run(["pgbench", *PG, "-n", "-M", "prepared", "-c", str(clients),
                          "-j", str(min(clients, 2)), "-T", str(SECS), "-f", path, DB],
                         check=True, capture_output=True, text=True).stdout
    # The backends exit when pgbench disconnects; their time counts once the postmaster reaped
    # them.
    time.sleep(0.5)
    after = R.db_cpu_all_secs("postgres")
    os.unlink(path)
    tx = int(next(line for line in out.splitlines()
                  if line.startswith("number of transactions actually processed"))
             .split(":")[1].split("/")[0])
    return tx / SECS, (after - before) / tx * 1e6


def main():
    subprocess.run(["dropdb", *PG, "--if-exists", DB], check=True)
    subprocess.run(["createdb", *PG, DB], check=True)
    subprocess.run(["pgbench", *PG, "-i", "-q", "-s", "1", DB], check=True, capture_output=True)
    try:
        print(f"PostgreSQL CPU per pgbench transaction (one lookup each), {SECS} s per run, "
              f"{ROUNDS} rounds alternated, medians")
        print("| clients | variant | tx/s | server CPU µs/tx | ÷ lookup alone |")
        print("|---|---|---|---|---|")
        for clients in CLIENTS:
            med = R.alternated_medians(VARIANTS, ROUNDS, lambda v: run(v, clients))
            base = med["lookup"][1]
            for name, (tps, cpu) in med.items():
                print(f"| {clients} | {name} | {tps:,.0f} | {cpu:.1f} | {cpu / base:.2f} |")
    finally:
        subprocess.run(["dropdb", *PG, "--if-exists", DB], check=True)


if __name__ == "__main__":
    main()
