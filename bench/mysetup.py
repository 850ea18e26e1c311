#!/usr/bin/env python3
"""bench/mysetup.py: what MariaDB's work after each answer costs the server (issue 20, item 3).

After a read-only answer the gateway sends one COM_QUERY (src/datasource/mysql/session.rs): the
leftover check, `ROLLBACK`, the `SET` of the pinned settings and `START TRANSACTION READ ONLY`.
This replays a lookup followed by each candidate for that step, from one client (PyMySQL, text
protocol, multi-statements on), against a throwaway database, one variant at a time, and reads
the server's CPU (utime + stime of mariadbd, /proc) over each run:

  lookup        the lookup alone, inside a read-only transaction (ROLLBACK AND CHAIN after it,
                the cheapest way to end one and start the next)
  today         the lookup, then the leftover check, ROLLBACK, SET, START TRANSACTION READ ONLY
  verify        the lookup, then the leftover check with the pinned settings read back in the
                same row (compared by the client), ROLLBACK AND CHAIN
  check only    the lookup, the leftover check, ROLLBACK AND CHAIN (what the check costs)
  pins only     the lookup, ROLLBACK, SET, START TRANSACTION READ ONLY (what the pins cost)

Rounds alternate the variants; medians are printed. Run with a Python that has PyMySQL:
`python3 -m venv /tmp/v && /tmp/v/bin/pip install pymysql && /tmp/v/bin/python bench/mysetup.py`.
Environment: MYSETUP_REQUESTS (default 20000), MYSETUP_ROUNDS (default 3).
"""
import os
import sys
import time

import pymysql
from pymysql.constants import CLIENT

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402

REQUESTS = int(os.environ.get("MYSETUP_REQUESTS", "20000"))
ROUNDS = int(os.environ.get("MYSETUP_ROUNDS", "3"))
DB = "sluice_bench_mysetup"

PINS = ("SET NAMES utf8mb4, SESSION sql_mode='STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,"
        "NO_ENGINE_SUBSTITUTION', SESSION time_zone='+00:00', SESSION session_track_state_change=ON")
DEFAULTS = ["tx_isolation", "sql_select_limit", "max_join_size", "sql_big_selects",
            "sql_auto_is_null", "div_precision_increment", "group_concat_max_len",
            "lc_time_names", "default_week_format", "timestamp", "max_recursive_iterations"]
SET = (PINS + ", " + ", ".join(f"SESSION {v}=DEFAULT" for v in DEFAULTS)
       + ", SESSION max_statement_time=30.000")
LEFTOVERS = "SELECT (SELECT COUNT(*) FROM information_schema.USER_VARIABLES), RELEASE_ALL_LOCKS()"
READ_BACK = ["character_set_client", "character_set_connection", "character_set_results",
             "collation_connection", "sql_mode", "time_zone", "session_track_state_change",
             *DEFAULTS, "max_statement_time"]
FINGERPRINT = "CONCAT_WS(0x1f, " + ", ".join(f"@@session.{v}" for v in READ_BACK) + ")"

AFTER = {
    "lookup": "ROLLBACK AND CHAIN",
    "today": f"{LEFTOVERS}; ROLLBACK; {SET}; START TRANSACTION READ ONLY",
    "verify": f"{LEFTOVERS}, {FINGERPRINT}; ROLLBACK AND CHAIN",
    "check only": f"{LEFTOVERS}; ROLLBACK AND CHAIN",
    "pins only": f"ROLLBACK; {SET}; START TRANSACTION READ ONLY",
}


def connect():
    return pymysql.connect(host="127.0.0.1", user="root", password="", database=DB,
                           client_flag=CLIENT.MULTI_STATEMENTS, autocommit=True)


def run(after):
    conn = connect()
    cur = conn.cursor()
    cur.execute(f"{SET}; START TRANSACTION READ ONLY")
    while cur.nextset():
        pass
    before = R.db_cpu_all_secs("mysql")
    start = time.perf_counter()
    for i in range(REQUESTS):
        cur.execute("SELECT balance FROM accounts WHERE id = %s", (i % 100000 + 1,))
        cur.fetchall()
        cur.execute(after)
        while cur.nextset():
            pass
    elapsed = time.perf_counter() - start
    cpu = R.db_cpu_all_secs("mysql") - before
    conn.close()
    return REQUESTS / elapsed, cpu / REQUESTS * 1e6


def main():
    admin = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    cur = admin.cursor()
    cur.execute(f"DROP DATABASE IF EXISTS {DB}")
    cur.execute(f"CREATE DATABASE {DB}")
    cur.execute(f"CREATE TABLE {DB}.accounts (id INT PRIMARY KEY, balance INT NOT NULL)")
    cur.execute(f"INSERT INTO {DB}.accounts SELECT seq, seq % 1000 FROM {DB}.seq_1_to_100000")
    try:
        print(f"MariaDB CPU per lookup and its after-answer step, one client, {REQUESTS} "
              f"requests per run, {ROUNDS} rounds alternated, medians")
        print("| variant | requests/s (one Python client) | server CPU µs/request | ÷ lookup |")
        print("|---|---|---|---|")
        med = R.alternated_medians(AFTER, ROUNDS, run)
        base = med["lookup"][1]
        for name, (rps, cpu) in med.items():
            print(f"| {name} | {rps:,.0f} | {cpu:.1f} | {cpu / base:.2f} |")
    finally:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")


if __name__ == "__main__":
    main()
