#!/usr/bin/env python3
"""bench/run: what the gateway costs against talking to the database directly.

Started by bench/run (which builds the release binary and the direct baseline first). Python 3
standard library only. On the local PostgreSQL and MariaDB it loads the acme fixture, starts
gateways on fresh data directories and runs, side by side in one run:
  * overhead: PK lookup and 100-row range query at 1/16/64 clients, direct (bench/direct.rs, an
    in-process pool as large as the client count) against the gateway over HTTP (wrk + Lua), plus
    pgbench -S as a reference line; throughput, p50, p99, ratios, gateway CPU per request;
  * audit: PK lookups at 64 clients with audit.wait_for_commit true against false;
  * streaming: 1,000,000 rows x 8 columns as NDJSON and JSON; rows/s, MB/s, gateway RSS;
  * many datasources: 1,000 registered, 100 in use; RSS, cold first-query latency, idle close;
  * policy: the criterion micro-benchmarks of bench/policy.rs (`cargo bench --bench policy`),
    first, while nothing else runs.
Then prints every figure beside its target and rewrites the generated part of BENCHMARKS.md
(between the bench/run markers).

Environment: SLUICE_BENCH_BIN, SLUICE_BENCH_DIRECT (binaries), SLUICE_BENCH_PG_URL,
SLUICE_BENCH_MYSQL_URL (admin URLs), BENCH_SECS (measured seconds per step, default 8),
BENCH_WARMUP (default 2), BENCH_CLIENTS (default 1,16,64), BENCH_STREAM_ROWS (default 1000000),
BENCH_DATASOURCES / BENCH_ACTIVE (default 1000 / 100), BENCH_ONLY (comma list of sections:
policy,overhead,audit,stream,many), BENCH_WRITE=0 (do not touch BENCHMARKS.md).
Datasources say `"tls": {"mode": "disable"}`: the local servers speak plain TCP or show a
self-signed certificate, which the API's default, verify-full, refuses.
"""
import http.client
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SLUICE_BENCH_BIN", os.path.join(ROOT, "target/release/sluice"))
DIRECT = os.environ.get("SLUICE_BENCH_DIRECT", "")
PG_ADMIN = os.environ.get("SLUICE_BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
MY_ADMIN = os.environ.get("SLUICE_BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306")
SECS = int(os.environ.get("BENCH_SECS", "8"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
CLIENTS = [int(c) for c in os.environ.get("BENCH_CLIENTS", "1,16,64").split(",")]
STREAM_ROWS = int(os.environ.get("BENCH_STREAM_ROWS", "1000000"))
N_DATASOURCES = int(os.environ.get("BENCH_DATASOURCES", "1000"))
N_ACTIVE = int(os.environ.get("BENCH_ACTIVE", "100"))
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "policy,overhead,audit,stream,many").split(",")))
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
WRITE = os.environ.get("BENCH_WRITE", "1") != "0"
DATABASE = "sluice_bench_acme"
PGBENCH_DB = "sluice_bench_pgbench"
PREFIX = "sluice_bench"
ANALYST = f"{PREFIX}_analyst"
ANALYST_PW = "analyst_pw"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

# The statements, identical for the direct baseline and the gateway. Parameters are drawn
# uniformly from the range (customers 1..500; orders 1..5000, so the range start leaves 100 rows).
QUERIES = {
    "postgres": {
        "pk": ("SELECT * FROM customers WHERE id = $1", 1, 500),
        "range": ("SELECT * FROM orders WHERE id > $1 ORDER BY id LIMIT 100", 0, 4900),
    },
    "mysql": {
        "pk": ("SELECT * FROM customers WHERE id = ?", 1, 500),
        "range": ("SELECT * FROM orders WHERE id > ? ORDER BY id LIMIT 100", 0, 4900),
    },
}
QUERY_NAMES = {"pk": "PK lookup", "range": "100-row range"}
KIND_NAMES = {"postgres": "PostgreSQL", "mysql": "MariaDB"}

# 8 mixed-type columns generated on the server: int8, text, float8, numeric, bool, date,
# timestamptz, int4. Cheap to generate on purpose: a uuid column made with md5() tripled
# PostgreSQL's own work (2.9 s against 1.1 s per million rows as binary COPY), which shares the
# cores with the gateway and would measure the database instead.
STREAM_SQL = (
    "SELECT g AS id, 'row-' || g AS label, g * 0.25::float8 AS amount, "
    "(g % 100000)::numeric(12, 2) AS price, g % 3 = 0 AS flag, "
    "date '2024-01-01' + (g % 366)::int4 AS day, "
    "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' AS at, "
    "(g % 1000)::int4 AS bucket "
    "FROM generate_series(1, $1::int8) AS g"
)

TARGETS = {
    "pk64_ratio": 0.6,
    "p50_added_ms": 0.25,
    "cpu_us": 50.0,
    "stream_rss_mib": 64.0,
    "ndjson_rows_s": 300_000,
    "many_rss_mib": 256.0,
    "policy_pk_us": 15.0,
    "policy_analytic_us": 150.0,
}
POLICY_BENCHES = [
    ("pk_lookup", "primary-key lookup"),
    ("pk_lookup_lower_case", "primary-key lookup in lower case (prints differently: the re-parse runs)"),
    ("analytic_60_lines", "64-line analytic query"),
    ("200_tables", "SELECT joining 200 tables"),
    ("pk_lookup_sqlparser_parse_only", "primary-key lookup, one plain sqlparser parse (the floor)"),
    ("analytic_60_lines_sqlparser_parse_only", "64-line analytic query, one plain sqlparser parse"),
    ("200_tables_sqlparser_parse_only", "200-table SELECT, one plain sqlparser parse"),
    ("pk_lookup_cached", "primary-key lookup, from the decision cache"),
    ("analytic_60_lines_cached", "64-line analytic query, from the decision cache"),
]


def log(msg):
    print(msg, flush=True)


def verdict(ok):
    return "met" if ok else "**missed**"


# ---------------------------------------------------------------------------------------------
# Processes and /proc


def proc_cpu_secs(pid):
    """utime + stime of a process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem_kib(pid):
    """(VmRSS, VmHWM) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        text = f.read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1))
    hwm = int(re.search(r"VmHWM:\s+(\d+)", text).group(1))
    return rss, hwm


class RssSampler:
    """Samples a process's VmRSS every `period` seconds in a thread; `max_kib` is the peak."""

    def __init__(self, pid, period=0.02):
        self.pid, self.period = pid, period
        self.max_kib = proc_mem_kib(pid)[0]
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_flag.is_set():
            try:
                self.max_kib = max(self.max_kib, proc_mem_kib(self.pid)[0])
            except (OSError, AttributeError):
                return
            time.sleep(self.period)

    def stop(self):
        self.stop_flag.set()
        self.thread.join()
        return self.max_kib


def db_stat_fields(kind):
    """`(pid, /proc/PID/stat fields after the name)` of every database server process: every
    postgres process (backends included), or the one mariadbd."""
    names = ("postgres",) if kind == "postgres" else ("mariadbd", "mysqld")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() not in names:
                    continue
            with open(f"/proc/{pid}/stat") as f:
                yield pid, f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue


def db_cpu_secs(kind):
    """CPU time of the database server so far, per process. Subtract two samples with
    `db_cpu_delta`."""
    return {pid: (int(f[11]) + int(f[12])) / CLK_TCK for pid, f in db_stat_fields(kind)}


def alternated_medians(variants, rounds, run_one):
    """Runs `run_one(variant)` (which returns (rate, CPU per request)) for every variant in
    every round, the order reversed every other round so drift hits all alike; returns
    {name: (median rate, median CPU)} in the variants' order."""
    got = {name: [] for name in variants}
    for r in range(rounds):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in names:
            got[name].append(run_one(variants[name]))
    return {name: (statistics.median(t for t, _ in runs), statistics.median(c for _, c in runs))
            for name, runs in got.items()}


def db_cpu_all_secs(kind):
    """CPU time of the database server so far, in one sum that also keeps what processes that
    have exited spent: every server process's own time plus its reaped children's (a PostgreSQL
    backend's, once it exits, is in the postmaster's). For a load whose connections close at its
    end (pgbench); read it once the backends are gone."""
    return sum(sum(int(x) for x in f[11:15]) for _, f in db_stat_fields(kind)) / CLK_TCK


def db_cpu_delta(before, after):
    """The database CPU spent between two `db_cpu_secs` samples. A backend that exited in
    between (say a pool closing its idle connections) is left out rather than subtracted, which
    made some figures negative when they were plain sums."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def fuzzer_running():
    for pattern in ("fuzz_targets", "cargo fuzz", "cargo-fuzz"):
        r = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        pids = [p for p in r.stdout.split() if int(p) != os.getpid()]
        if pids:
            return True
    return False


def sh(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def psql(sql, db="postgres"):
    u = urllib.parse.urlparse(PG_ADMIN)
    r = sh(["psql", "-X", "-At", "-h", u.hostname or "127.0.0.1", "-p", str(u.port or 5432),
            "-U", u.username or "postgres", "-d", db, "-c", sql])
    if r.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {r.stderr.strip()}")
    return r.stdout.strip()


def mysql(sql):
    u = urllib.parse.urlparse(MY_ADMIN)
    args = ["mysql", "-N", "-B", "-h", u.hostname or "127.0.0.1", "-P", str(u.port or 3306),
            "-u", u.username or "root"]
    if u.password:
        args.append(f"-p{u.password}")
    r = sh(args + ["-e", sql])
    if r.returncode != 0:
        raise RuntimeError(f"mysql {sql!r}: {r.stderr.strip()}")
    return r.stdout.strip()


def db_connections(kind):
    """Open server connections of the bench account (the gateway's and the baseline's)."""
    if kind == "postgres":
        return int(psql(f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{ANALYST}'"))
    return int(mysql("SELECT count(*) FROM information_schema.processlist "
                     f"WHERE user = '{ANALYST}'"))


def wait_db_quiet(kind, timeout=15):
    """PostgreSQL allows 100 connections here: let one step's connections go before the next."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if db_connections(kind) == 0:
            return
        time.sleep(0.2)
    log(f"  note: {kind} still has connections of {ANALYST} open")


# ---------------------------------------------------------------------------------------------
# A gateway process


class Gateway:
    """The release binary on a fresh data directory, with the owner's token and an HTTP client."""

    def __init__(self, name, env=None, store_url=None, company=True):
        """`store_url`: serve from that PostgreSQL store (with `env` giving SLUICE_MASTER_KEY)
        instead of the embedded one; `company=False` when another replica already made it."""
        self.name = name
        self.work = tempfile.mkdtemp(prefix=f"sluice-bench-{name}-")
        self.data = os.path.join(self.work, "data")
        store_env = {"SLUICE_STORE__URL": store_url} if store_url else {}
        self.token = None
        if company:
            out = subprocess.run(
                [BIN, "company", "create", "Bench", "--owner-email", "bench@example.com",
                 "--data-dir", self.data], capture_output=True, text=True,
                env={**os.environ, **(env or {}), **store_env})
            if out.returncode != 0:
                sys.exit("company create failed: " + out.stderr)
            self.token = out.stdout.strip().splitlines()[-1].strip()
        full_env = {
            **os.environ,
            **store_env,
            "SLUICE_LOG": "warn,sluice::app=info",
            # One token and one app carry all the load: let every client run instead of 429.
            "SLUICE_LIMITS__MAX_CONCURRENT_PER_TOKEN": "256",
            "SLUICE_LIMITS__MAX_CONCURRENT_PER_APP": "256",
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data,
             "--allow-networks", "127.0.0.0/8"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=full_env)
        self.port = None
        self.tail = []
        for line in self.proc.stderr:
            self.tail.append(line)
            if '"sluice listening"' in line:
                self.port = int(json.loads(line)["addr"].rsplit(":", 1)[1])
                break
        if self.port is None:
            sys.exit(f"gateway {name} did not start:\n" + "".join(self.tail[-20:]))
        threading.Thread(target=self._drain, daemon=True).start()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def _drain(self):
        for line in self.proc.stderr:
            self.tail = (self.tail + [line])[-50:]

    @property
    def pid(self):
        return self.proc.pid

    def call(self, method, path, body=None, conn=None):
        headers = {"authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["content-type"] = "application/json"
            body = json.dumps(body)
        if conn is not None:
            conn.request(method, path, body, headers)
            res = conn.getresponse()
            return res.status, res.read()
        try:
            self.conn.request(method, path, body, headers)
            res = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            # The server closes keep-alive connections idle past limits.header_read_timeout_ms
            # (10 s), as between two steps; nothing was processed, so send again once.
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self.conn.request(method, path, body, headers)
            res = self.conn.getresponse()
        return res.status, res.read()

    def ok(self, method, path, body=None):
        st, data = self.call(method, path, body)
        if not 200 <= st < 300:
            raise RuntimeError(f"{method} {path} -> {st} {data[:300]!r}")
        return json.loads(data) if data else None

    def enable(self, kind):
        self.ok("PATCH", f"/v1/integrations/{kind}", {"enabled": True})

    def datasource(self, name, kind, policy=None, pool_size=64):
        port = 5432 if kind == "postgres" else 3306
        admin = urllib.parse.urlparse(PG_ADMIN if kind == "postgres" else MY_ADMIN)
        body = {
            "name": name, "kind": kind,
            "connection": {"host": admin.hostname or "127.0.0.1", "port": admin.port or port,
                           "database": DATABASE, "user": ANALYST, "password": ANALYST_PW,
                           "tls": {"mode": "disable"}},
            "policy": policy or {},
            "pool": {"max_size": pool_size},
        }
        return self.ok("POST", "/v1/datasources", body)["id"]

    def app(self, name, datasource_ids):
        return self.ok("POST", "/v1/apps", {"name": name, "datasource_ids": datasource_ids})["id"]

    def metric(self, name):
        st, data = self.call("GET", "/metrics")
        for line in data.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def wait_pools_closed(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.metric("sluice_pools_open"):
                return True
            time.sleep(0.25)
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["rm", "-rf", self.work])


# ---------------------------------------------------------------------------------------------
# Load generators


def wrk(gw, app, sql, lo, hi, clients, secs, token=None, method="POST", path=None, kind=None):
    """One wrk run against the query route (or `path`); returns wrk's figures and the gateway's
    CPU time per request."""
    path = path or f"/v1/apps/{app}/query"
    env = {**os.environ, "BENCH_PATH": path, "BENCH_TOKEN": token or gw.token,
           "BENCH_SQL_JSON": json.dumps(sql), "BENCH_PARAM_MIN": str(lo),
           "BENCH_PARAM_MAX": str(hi), "BENCH_METHOD": method}
    threads = min(clients, 2)
    db0 = db_cpu_secs(kind) if kind else None
    cpu0 = proc_cpu_secs(gw.pid)
    r = sh(["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{secs}s", "--timeout", "10s",
            "-s", os.path.join(ROOT, "bench/query.lua"),
            f"http://127.0.0.1:{gw.port}{path}"], env=env)
    cpu1 = proc_cpu_secs(gw.pid)
    db1 = db_cpu_secs(kind) if kind else None
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed: {r.stdout}\n{r.stderr}")
    res = json.loads(line[len("BENCH_JSON "):])
    n = res["requests"]
    res["rps"] = n / (res["duration_us"] / 1e6)
    res["p50_ms"] = res["p50_us"] / 1000
    res["p99_ms"] = res["p99_us"] / 1000
    res["cpu_us"] = (cpu1 - cpu0) * 1e6 / n if n else None
    res["db_cpu_us"] = db_cpu_delta(db0, db1) * 1e6 / n if n and kind else None
    res["failed"] = sum(res["errors"].values())
    return res


def gateway_run(gw, app, kind, query, clients):
    sql, lo, hi = QUERIES[kind][query]
    if WARMUP:
        wrk(gw, app, sql, lo, hi, clients, WARMUP)
    return wrk(gw, app, sql, lo, hi, clients, SECS, kind=kind)


def direct_url(kind):
    admin = urllib.parse.urlparse(PG_ADMIN if kind == "postgres" else MY_ADMIN)
    host = admin.hostname or "127.0.0.1"
    if kind == "postgres":
        return f"postgres://{ANALYST}:{ANALYST_PW}@{host}:{admin.port or 5432}/{DATABASE}"
    # mysql_async switches to the server's Unix socket after connecting over TCP unless told
    # not to; the gateway never does, so the baseline must not either (bench/counts.py found
    # the MariaDB baseline of earlier runs on the socket).
    return (f"mysql://{ANALYST}:{ANALYST_PW}@{host}:{admin.port or 3306}/{DATABASE}"
            "?prefer_socket=false")


def direct(*args, kind=None):
    """Runs the baseline binary; with `kind`, also samples the database's CPU over the
    baseline's measured window (it starts WARMUP s after launch and lasts SECS s)."""
    proc = subprocess.Popen([DIRECT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    db = None
    if kind:
        time.sleep(WARMUP + 0.1)
        db0 = db_cpu_secs(kind)
        time.sleep(SECS - 0.2)
        db = db_cpu_delta(db0, db_cpu_secs(kind))
    out, err = proc.communicate()
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if r.returncode != 0:
        raise RuntimeError(f"direct {args[0]} failed: {r.stderr.strip()}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if db is not None and res.get("requests"):
        # The window sampled is 0.2 s shorter than the measured one.
        res["db_cpu_us"] = db * 1e6 / (res["rps"] * (SECS - 0.2))
    return res


def direct_run(kind, query, clients):
    sql, lo, hi = QUERIES[kind][query]
    res = direct("run", "--kind", kind, "--url", direct_url(kind), "--sql", sql,
                 "--param-min", str(lo), "--param-max", str(hi), "--clients", str(clients),
                 "--secs", str(SECS), "--warmup", str(WARMUP), kind=kind)
    if res["errors"]:
        raise RuntimeError(f"direct {kind} {query} x{clients}: {res['first_error']}")
    return res


def pgbench_run(clients):
    u = urllib.parse.urlparse(PG_ADMIN)
    r = sh(["pgbench", "-n", "-S", "-M", "prepared", "-c", str(clients),
            "-j", str(min(clients, 2)), "-T", str(SECS), "-h", u.hostname or "127.0.0.1",
            "-p", str(u.port or 5432), "-U", u.username or "postgres", PGBENCH_DB])
    if r.returncode != 0:
        raise RuntimeError(f"pgbench: {r.stderr}")
    tps = float(re.search(r"tps = ([\d.]+) \(without initial", r.stdout).group(1))
    lat = float(re.search(r"latency average = ([\d.]+) ms", r.stdout).group(1))
    return {"rps": tps, "latency_avg_ms": lat}


# ---------------------------------------------------------------------------------------------
# Sections


def section_policy(results):
    log("== policy: cargo bench --bench policy")
    r = subprocess.run(["cargo", "bench", "--locked", "--bench", "policy", "--", "--noplot"],
                       cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"cargo bench --bench policy: {r.stderr[-2000:]}")
    out = {}
    for name, _ in POLICY_BENCHES:
        path = os.path.join(TARGET_DIR, "criterion", f"policy_{name}", "new", "estimates.json")
        with open(path) as f:
            est = json.load(f)
        out[name] = {"median_us": est["median"]["point_estimate"] / 1000,
                     "lo_us": est["median"]["confidence_interval"]["lower_bound"] / 1000,
                     "hi_us": est["median"]["confidence_interval"]["upper_bound"] / 1000}
        log(f"  {name:26} {out[name]['median_us']:10.2f} µs")
    results["policy"] = out


def section_overhead(results):
    log("== overhead: direct against the gateway")
    gw = Gateway("overhead", {"SLUICE_POOLS__IDLE_TIMEOUT_SECS": "1"})
    try:
        gw.enable("postgres")
        gw.enable("mysql")
        apps = {}
        for kind in ("postgres", "mysql"):
            ds = gw.datasource(f"acme-{kind}", kind, {"max_rows": 1000})
            apps[kind] = gw.app(f"bench-{kind}", [ds])
        rows = []
        for kind in ("postgres", "mysql"):
            for query in ("pk", "range"):
                for c in CLIENTS:
                    wait_db_quiet(kind)
                    d = direct_run(kind, query, c)
                    wait_db_quiet(kind)
                    g = gateway_run(gw, apps[kind], kind, query, c)
                    if g["failed"]:
                        raise RuntimeError(f"gateway {kind} {query} x{c}: {g['errors']}\n"
                                           + "".join(gw.tail[-10:]))
                    gw.wait_pools_closed()
                    row = {"kind": kind, "query": query, "clients": c, "direct": d,
                           "gateway": g, "ratio": g["rps"] / d["rps"],
                           "p50_added_ms": g["p50_ms"] - d["p50_ms"]}
                    rows.append(row)
                    log(f"  {kind:8} {query:5} c={c:<3} direct {d['rps']:9.0f} rps "
                        f"p50 {d['p50_ms']:.3f} p99 {d['p99_ms']:.3f} | gateway {g['rps']:8.0f} "
                        f"rps p50 {g['p50_ms']:.3f} p99 {g['p99_ms']:.3f} | ratio "
                        f"{row['ratio']:.2f} | +p50 {row['p50_added_ms']:.3f} ms | "
                        f"cpu {g['cpu_us']:.0f} us/req (direct client {d['cpu_us'] or 0:.0f}) | "
                        f"db cpu {g['db_cpu_us'] or 0:.0f} (direct {d.get('db_cpu_us') or 0:.0f})")
        results["overhead"] = rows
        results["layers"] = layers(gw, apps["postgres"])
    finally:
        gw.stop()
    log("== pgbench -S (reference)")
    psql(f"DROP DATABASE IF EXISTS {PGBENCH_DB}")
    psql(f"CREATE DATABASE {PGBENCH_DB}")
    u = urllib.parse.urlparse(PG_ADMIN)
    r = sh(["pgbench", "-i", "-q", "-s", "1", "-h", u.hostname or "127.0.0.1",
            "-p", str(u.port or 5432), "-U", u.username or "postgres", PGBENCH_DB])
    if r.returncode != 0:
        raise RuntimeError(f"pgbench -i: {r.stderr}")
    ref = {}
    for c in CLIENTS:
        ref[c] = pgbench_run(c)
        log(f"  pgbench -S c={c:<3} {ref[c]['rps']:9.0f} tps, latency avg "
            f"{ref[c]['latency_avg_ms']:.3f} ms")
    psql(f"DROP DATABASE IF EXISTS {PGBENCH_DB}")
    results["pgbench"] = ref


def layers(gw, app):
    """Where the CPU goes: the same gateway answering requests that stop at successive layers."""
    c = max(CLIENTS)
    log(f"== layers: gateway CPU per request at {c} clients, by how far a request gets")
    sql, lo, hi = QUERIES["postgres"]["pk"]
    steps = [
        ("healthz", "`GET /healthz`: HTTP only", {"method": "GET", "path": "/healthz"}, 200),
        # (An unknown token would measure reconnects: a 401 that leaves the body unread closes
        # the connection.)
        ("get_app", "`GET /v1/apps/{id}`: + token check, snapshot read, JSON (200)",
         {"method": "GET", "path": f"/v1/apps/{app}"}, 200),
        ("refused", "`SELEC 1`: + app, permission, limits, policy, audit record (400)",
         {"sql": "SELEC 1"}, 400),
        ("pk", "PostgreSQL PK lookup: + pool, database round trips, encoding (200)", {}, 200),
    ]
    out = []
    for key, label, kw, status in steps:
        wait_db_quiet("postgres")
        args = (gw, app, kw.get("sql", sql), lo, hi, c)
        extra = {k: v for k, v in kw.items() if k != "sql"}
        if WARMUP:
            wrk(*args, WARMUP, **extra)
        r = wrk(*args, SECS, **extra)
        non_ok = r["errors"]["status"]
        transport = r["failed"] - non_ok
        if transport or (status == 200 and non_ok) or (status != 200 and non_ok < r["requests"]):
            raise RuntimeError(f"layer {key}: {r['errors']} of {r['requests']}")
        gw.wait_pools_closed()
        out.append({"key": key, "label": label, "status": status, **r})
        log(f"  {key:14} {r['rps']:8.0f} rps p50 {r['p50_ms']:.3f} ms cpu {r['cpu_us']:.0f} us/req")
    return {"clients": c, "steps": out}


def section_audit(results):
    log("== audit: wait_for_commit true against false (PostgreSQL PK lookup, 64 clients)")
    c = max(CLIENTS)
    out = {}
    for wait in ("true", "false"):
        gw = Gateway(f"audit-{wait}", {"SLUICE_AUDIT__WAIT_FOR_COMMIT": wait})
        try:
            gw.enable("postgres")
            ds = gw.datasource("acme", "postgres", {"max_rows": 1000})
            app = gw.app("bench", [ds])
            wait_db_quiet("postgres")
            g = gateway_run(gw, app, "postgres", "pk", c)
            if g["failed"]:
                raise RuntimeError(f"audit {wait}: {g['errors']}")
            out[wait] = g
            log(f"  wait_for_commit={wait:5} {g['rps']:8.0f} rps p50 {g['p50_ms']:.3f} "
                f"p99 {g['p99_ms']:.3f} cpu {g['cpu_us']:.0f} us/req")
        finally:
            gw.stop()
    out["clients"] = c
    results["audit"] = out


def stream_once(gw, app, accept):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=300)
    body = json.dumps({"sql": STREAM_SQL, "params": [STREAM_ROWS]})
    rss0 = proc_mem_kib(gw.pid)[0]
    sampler = RssSampler(gw.pid)
    t0 = time.perf_counter()
    conn.request("POST", f"/v1/apps/{app}/query", body,
                 {"authorization": f"Bearer {gw.token}", "content-type": "application/json",
                  "accept": accept})
    res = conn.getresponse()
    first = None
    total = 0
    newlines = 0
    tail = b""
    while True:
        chunk = res.read1(1 << 20) if hasattr(res, "read1") else res.read(1 << 20)
        if not chunk:
            break
        if first is None:
            first = time.perf_counter() - t0
        total += len(chunk)
        newlines += chunk.count(b"\n")
        tail = (tail + chunk)[-4096:]
    elapsed = time.perf_counter() - t0
    peak = sampler.stop()
    conn.close()
    if res.status != 200:
        raise RuntimeError(f"stream {accept}: {res.status} {tail[-300:]!r}")
    if accept == "application/x-ndjson":
        last = json.loads(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])
        rows = last.get("row_count")
        if rows != STREAM_ROWS or last.get("truncated"):
            raise RuntimeError(f"ndjson stream ended with {last}")
    else:
        m = re.search(rb'"row_count":\s*(\d+)', tail)
        rows = int(m.group(1)) if m else None
        if rows != STREAM_ROWS or b'"truncated":false' not in tail.replace(b" ", b""):
            raise RuntimeError(f"json answer ended with {tail[-300:]!r}")
    return {"rows": rows, "bytes": total, "secs": elapsed, "first_byte_s": first,
            "rows_s": rows / elapsed, "mb_s": total / elapsed / 1e6,
            "rss_before_mib": rss0 / 1024, "rss_peak_mib": peak / 1024,
            "rss_growth_mib": (peak - rss0) / 1024}


def section_stream(results):
    log(f"== streaming: {STREAM_ROWS:,} rows x 8 columns from PostgreSQL")
    gw = Gateway("stream", {"SLUICE_LIMITS__MAX_ROWS": str(max(STREAM_ROWS, 1_000_000)),
                            "SLUICE_LIMITS__MAX_RESULT_BYTES": str(1 << 30)})
    try:
        gw.enable("postgres")
        ds = gw.datasource("acme", "postgres", {"max_rows": STREAM_ROWS, "timeout_ms": 120_000},
                           pool_size=2)
        app = gw.app("bench", [ds])
        # A small warm-up so the pool, the policy cache and the allocator's arenas exist.
        st, data = gw.call("POST", f"/v1/apps/{app}/query",
                           {"sql": STREAM_SQL, "params": [1000]})
        if st != 200:
            raise RuntimeError(f"stream warm-up: {st} {data[:300]!r}")
        out = {}
        for name, accept in (("ndjson", "application/x-ndjson"), ("json", "application/json")):
            r = stream_once(gw, app, accept)
            out[name] = r
            log(f"  {name:6} {r['rows_s']:9.0f} rows/s {r['mb_s']:6.1f} MB/s "
                f"({r['bytes'] / 1e6:.0f} MB in {r['secs']:.2f} s, first byte "
                f"{r['first_byte_s'] * 1000:.0f} ms) RSS {r['rss_before_mib']:.1f} -> peak "
                f"{r['rss_peak_mib']:.1f} MiB (+{r['rss_growth_mib']:.1f})")
        out["hwm_mib"] = proc_mem_kib(gw.pid)[1] / 1024
        results["stream"] = out
    finally:
        gw.stop()


def section_many(results):
    idle = 10
    log(f"== many datasources: {N_DATASOURCES} registered (MariaDB), {N_ACTIVE} in use, "
        f"idle timeout {idle} s")
    gw = Gateway("many", {"SLUICE_POOLS__IDLE_TIMEOUT_SECS": str(idle)})
    try:
        out = {"datasources": N_DATASOURCES, "active": N_ACTIVE, "idle_timeout_s": idle}
        gw.enable("mysql")
        out["rss_start_mib"] = proc_mem_kib(gw.pid)[0] / 1024
        t0 = time.perf_counter()
        # Pools of one: 100 of them must fit in MariaDB's 151 connections.
        ids = [gw.datasource(f"acme-{i:04}", "mysql", {"max_rows": 1000}, pool_size=1)
               for i in range(N_DATASOURCES)]
        out["create_s"] = time.perf_counter() - t0
        active = ids[:N_ACTIVE]
        app = gw.app("bench", active)
        out["rss_registered_mib"] = proc_mem_kib(gw.pid)[0] / 1024
        path = f"/v1/apps/{app}/query"
        sql = QUERIES["mysql"]["pk"][0]

        def query(ds, i, conn=None):
            t = time.perf_counter()
            st, data = gw.call("POST", path, {"sql": sql, "params": [i % 500 + 1],
                                              "datasource": ds}, conn=conn)
            if st != 200:
                raise RuntimeError(f"many: {st} {data[:300]!r}")
            return (time.perf_counter() - t) * 1000

        cold = [query(ds, i) for i, ds in enumerate(active)]
        warm = [query(ds, i) for i, ds in enumerate(active)]
        out["cold_ms"] = summary(cold)
        out["warm_ms"] = summary(warm)
        out["pools_open_after_first"] = gw.metric("sluice_pools_open")
        # Keep all of them in use for a while, from a few clients, and watch memory.
        sampler = RssSampler(gw.pid, 0.1)
        stop_at = time.time() + SECS
        count = [0]

        def loop(k):
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60)
            i = k
            while time.time() < stop_at:
                query(active[i % len(active)], i, conn)
                i += 4
                count[0] += 1

        threads = [threading.Thread(target=loop, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["loop_queries"] = count[0]
        out["rss_active_peak_mib"] = sampler.stop() / 1024
        out["pools_open_active"] = gw.metric("sluice_pools_open")
        out["db_connections_active"] = db_connections("mysql")
        # Now idle: the pools should close after the idle timeout.
        t_idle = time.time()
        timeline = []
        closed_after = None
        while time.time() - t_idle < idle + 10:
            n = gw.metric("sluice_pools_open")
            timeline.append((round(time.time() - t_idle, 1), n))
            if not n:
                closed_after = time.time() - t_idle
                break
            time.sleep(0.5)
        out["pools_closed_after_s"] = closed_after
        out["pools_open_timeline"] = timeline
        time.sleep(1)
        out["db_connections_idle"] = db_connections("mysql")
        out["rss_idle_mib"] = proc_mem_kib(gw.pid)[0] / 1024
        out["hwm_mib"] = proc_mem_kib(gw.pid)[1] / 1024
        results["many"] = out
        log(f"  RSS start {out['rss_start_mib']:.1f} MiB, {N_DATASOURCES} registered "
            f"{out['rss_registered_mib']:.1f} MiB (created in {out['create_s']:.1f} s), "
            f"{N_ACTIVE} pools open {out['rss_active_peak_mib']:.1f} MiB (pools_open "
            f"{out['pools_open_active']:.0f}, {out['db_connections_active']} server connections)")
        log(f"  first query on a cold datasource: p50 {out['cold_ms']['p50']:.2f} ms, p99 "
            f"{out['cold_ms']['p99']:.2f} ms; warm p50 {out['warm_ms']['p50']:.2f} ms")
        log(f"  idle: pools_open 0 after {closed_after} s; server connections "
            f"{out['db_connections_idle']}; RSS {out['rss_idle_mib']:.1f} MiB")
    finally:
        gw.stop()


def summary(values):
    v = sorted(values)

    def pct(p):
        return v[min(len(v) - 1, max(0, int(round(p * len(v) + 0.5)) - 1))]

    return {"p50": pct(0.5), "p99": pct(0.99), "max": v[-1], "mean": sum(v) / len(v)}


# ---------------------------------------------------------------------------------------------
# Report


def machine():
    with open("/proc/meminfo") as f:
        mem_kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    with open("/proc/cpuinfo") as f:
        m = re.search(r"model name\s*:\s*(.*)", f.read())
    first = lambda r: (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else "?"
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu": m.group(1).strip() if m else "?",
        "kernel": platform.release(),
        "rustc": first(sh(["rustc", "-V"])),
        "sluice": first(sh([BIN, "--version"])),
        "commit": first(sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])),
        "postgres": psql("SHOW server_version"),
        "mariadb": mysql("SELECT version()"),
        "wrk": first(sh(["wrk", "-v"])).split(" [")[0],
        "pgbench": first(sh(["pgbench", "--version"])),
    }


def targets(results):
    """(label, figure, target, met) for every target of issue 4 that this run measured."""
    out = []
    pol = results.get("policy")
    if pol:
        for key, target, label in (
                ("pk_lookup", "policy_pk_us", "primary-key lookup"),
                ("pk_lookup_lower_case", "policy_pk_us", "primary-key lookup in lower case"),
                ("analytic_60_lines", "policy_analytic_us", "64-line analytic query")):
            v = pol[key]["median_us"]
            out.append((f"policy check, cold, {label}", f"{v:.1f} µs", f"≤ {TARGETS[target]:.0f} µs",
                        v <= TARGETS[target]))
    rows = {(r["kind"], r["query"], r["clients"]): r for r in results.get("overhead", [])}
    hi, lo = max(CLIENTS), min(CLIENTS)
    r = rows.get(("postgres", "pk", hi))
    if r:
        out.append((f"PostgreSQL PK lookup at {hi} clients: gateway/direct throughput",
                    f"{r['ratio']:.2f}", f"≥ {TARGETS['pk64_ratio']}",
                    r["ratio"] >= TARGETS["pk64_ratio"]))
    r = rows.get(("postgres", "pk", lo))
    if r:
        out.append((f"PostgreSQL PK lookup at {lo} client: p50 added by the gateway",
                    f"{r['p50_added_ms']:.3f} ms", f"≤ {TARGETS['p50_added_ms']} ms",
                    r["p50_added_ms"] <= TARGETS["p50_added_ms"]))
    pk = [r for r in results.get("overhead", []) if r["query"] == "pk"]
    if pk:
        worst = max(pk, key=lambda r: r["gateway"]["cpu_us"])
        best = min(pk, key=lambda r: r["gateway"]["cpu_us"])
        out.append(("gateway CPU per PK-lookup request (best / worst step)",
                    f"{best['gateway']['cpu_us']:.0f} / {worst['gateway']['cpu_us']:.0f} µs",
                    f"≤ {TARGETS['cpu_us']:.0f} µs", worst["gateway"]["cpu_us"] <= TARGETS["cpu_us"]))
    s = results.get("stream")
    if s:
        growth = s["ndjson"]["rss_growth_mib"]
        out.append((f"streaming {STREAM_ROWS:,} rows as NDJSON: RSS growth",
                    f"{growth:.1f} MiB", f"< {TARGETS['stream_rss_mib']:.0f} MiB",
                    growth < TARGETS["stream_rss_mib"]))
        # A plain JSON answer is buffered by design (an error can still change its status);
        # bounded by limits.max_result_bytes. Shown against the same figure for comparison.
        growth = s["json"]["rss_growth_mib"]
        out.append((f"the same {STREAM_ROWS:,} rows as one JSON answer (buffered by design): "
                    "RSS growth", f"{growth:.1f} MiB", f"< {TARGETS['stream_rss_mib']:.0f} MiB",
                    growth < TARGETS["stream_rss_mib"]))
        out.append(("streaming NDJSON throughput", f"{s['ndjson']['rows_s']:,.0f} rows/s",
                    f"≥ {TARGETS['ndjson_rows_s']:,} rows/s",
                    s["ndjson"]["rows_s"] >= TARGETS["ndjson_rows_s"]))
    m = results.get("many")
    if m:
        out.append((f"{m['datasources']:,} datasources, {m['active']} pools open: RSS",
                    f"{m['rss_active_peak_mib']:.1f} MiB", f"≤ {TARGETS['many_rss_mib']:.0f} MiB",
                    m["rss_active_peak_mib"] <= TARGETS["many_rss_mib"]))
    return out


def markdown(results):
    mc = results["machine"]
    L = []
    L.append("Generated by `bench/run` on "
             f"{time.strftime('%Y-%m-%d', time.gmtime(results['started']))}; do not edit by hand "
             "(rerun instead).\n")
    L.append("| machine and versions | |\n|---|---|")
    L.append(f"| machine | {mc['cores']} cores ({mc['cpu']}), {mc['memory_gib']} GiB RAM, Linux "
             f"{mc['kernel']} |")
    L.append(f"| software | {mc['sluice']} (commit {mc['commit']}, release build), {mc['rustc']}, "
             f"PostgreSQL {mc['postgres']}, MariaDB {mc['mariadb']}, {mc['wrk']}, "
             f"{mc['pgbench']} |")
    L.append(f"| run | {SECS} s measured after {WARMUP} s warm-up per step; database servers, "
             f"gateway and load generator share the {mc['cores']} cores; total "
             f"{results['elapsed_s'] / 60:.1f} min |")
    fz = results["fuzzer"]
    L.append("| other load | " + (
        "**a fuzzer was running on the same machine during this run**: absolute figures are "
        "low; ratios within the run still compare like with like |"
        if fz["during"] else "no fuzzer or other benchmark was running |"))
    L.append("")

    L.append("### Targets\n")
    L.append("| target | figure | target | |\n|---|---|---|---|")
    for label, fig, tgt, ok in targets(results):
        L.append(f"| {label} | {fig} | {tgt} | {verdict(ok)} |")
    L.append("")

    if "policy" in results:
        L.append("### Policy cost\n")
        L.append("`cargo bench --bench policy` (criterion, median with its 95 % confidence interval): "
                 "`sluice::policy::check` on the statements of bench/policy.rs, cold (tokenize, parse, "
                 "walk, render, re-parse, compare), and the same statements answered from the "
                 "decision cache as the query route asks. The `sqlparser parse` lines are the "
                 "floor under a cold check: `Parser::parse_sql` alone on the same text, which the "
                 "check does twice (the statement, then its rendering), or once when the rendering "
                 "is the input itself (the primary-key lookup as written; not the lower-case one, "
                 "nor the analytic query with its line breaks).\n")
        L.append("| statement | median | interval |\n|---|---|---|")
        for name, label in POLICY_BENCHES:
            p = results["policy"][name]
            L.append(f"| {label} | {p['median_us']:,.2f} µs | {p['lo_us']:,.2f} – {p['hi_us']:,.2f} µs |")
        L.append("")

    if "overhead" in results:
        L.append("### Gateway against direct access\n")
        L.append("Direct: `bench/direct.rs`, an in-process tokio-postgres (deadpool) or mysql_async "
                 "pool as large as the client count, each client task keeping the connection it "
                 "checked out and running the cached prepared statement. Gateway: wrk with "
                 "keep-alive POSTing the same statement with a fresh parameter to "
                 "`/v1/apps/{id}/query` (policy decision cache warm after the warm-up, default "
                 "`audit.wait_for_commit=true`). Throughput in requests/s; latencies in ms; CPU is "
                 "the gateway process's utime+stime over the measured run ÷ requests (in brackets the "
                 "same for the direct client process: driver and pool only); database CPU is the server "
                 "processes' utime+stime over the same window ÷ requests.\n")
        L.append("| database | query | clients | direct rps | direct p50 / p99 | gateway rps | "
                 "gateway p50 / p99 | gateway ÷ direct | p50 added | CPU/req gateway (direct "
                 "client) | database CPU/req via gateway (direct) |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in results["overhead"]:
            d, g = r["direct"], r["gateway"]
            L.append(f"| {KIND_NAMES[r['kind']]} | {QUERY_NAMES[r['query']]} | {r['clients']} | "
                     f"{d['rps']:,.0f} | {d['p50_ms']:.3f} / {d['p99_ms']:.3f} | "
                     f"{g['rps']:,.0f} | {g['p50_ms']:.3f} / {g['p99_ms']:.3f} | "
                     f"{r['ratio']:.2f} | {r['p50_added_ms']:+.3f} | {g['cpu_us']:.0f} µs "
                     f"({d['cpu_us'] or 0:.0f} µs) | {g['db_cpu_us'] or 0:.0f} µs "
                     f"({d.get('db_cpu_us') or 0:.0f} µs) |")
        if "pgbench" in results:
            ref = results["pgbench"]
            L.append("\nReference, `pgbench -S -M prepared` (scale 1, superuser, its own "
                     "pgbench_accounts table): " + ", ".join(
                         f"{c} client{'s' if int(c) > 1 else ''} {v['rps']:,.0f} tps "
                         f"(avg {v['latency_avg_ms']:.3f} ms)" for c, v in ref.items()) + ".")
        L.append("")

    if "layers" in results:
        lay = results["layers"]
        L.append("### Where the gateway's CPU goes\n")
        L.append(f"The same gateway, {lay['clients']} clients, requests that stop at successive "
                 "layers (each line includes the ones above it).\n")
        L.append("| request | rps | p50 ms | gateway CPU/req |\n|---|---|---|---|")
        for r in lay["steps"]:
            L.append(f"| {r['label']} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | "
                     f"{r['cpu_us']:.0f} µs |")
        L.append("")

    if "audit" in results:
        a = results["audit"]
        t, f = a["true"], a["false"]
        L.append("### Waiting for the audit commit\n")
        L.append(f"PostgreSQL PK lookup, {a['clients']} clients, two fresh gateways one after the "
                 "other, identical but for `audit.wait_for_commit` "
                 "(`SLUICE_AUDIT__WAIT_FOR_COMMIT`).\n")
        L.append("| wait_for_commit | rps | p50 / p99 ms | CPU/req |\n|---|---|---|---|")
        for name, g in (("true (default)", t), ("false", f)):
            L.append(f"| {name} | {g['rps']:,.0f} | {g['p50_ms']:.3f} / {g['p99_ms']:.3f} | "
                     f"{g['cpu_us']:.0f} µs |")
        L.append(f"\nNot waiting gives {f['rps'] / t['rps']:.2f} × the throughput.\n")

    if "stream" in results:
        s = results["stream"]
        L.append("### Streaming\n")
        L.append(f"{STREAM_ROWS:,} rows × 8 columns (int8, text, float8, numeric, bool, date, "
                 "timestamptz, int4) generated by PostgreSQL with `generate_series`, read by one "
                 "client in 1 MiB chunks; RSS sampled every 20 ms from /proc.\n")
        L.append("```sql\n" + STREAM_SQL + "\n```\n")
        L.append("| format | rows/s | MB/s | bytes | time | first byte | RSS before → peak "
                 "(growth) |\n|---|---|---|---|---|---|---|")
        for name, label in (("ndjson", "NDJSON"), ("json", "JSON")):
            r = s[name]
            L.append(f"| {label} | {r['rows_s']:,.0f} | {r['mb_s']:.1f} | "
                     f"{r['bytes'] / 1e6:,.0f} MB | {r['secs']:.2f} s | "
                     f"{r['first_byte_s'] * 1000:.0f} ms | {r['rss_before_mib']:.1f} → "
                     f"{r['rss_peak_mib']:.1f} MiB (+{r['rss_growth_mib']:.1f}) |")
        L.append("")

    if "many" in results:
        m = results["many"]
        L.append("### Many datasources\n")
        L.append(f"{m['datasources']:,} MariaDB datasources registered over HTTP (all pointing at "
                 f"the acme database), {m['active']} of them attached to one app and queried "
                 f"(PK lookup; pools of one connection): each once cold, once warm, then round-robin "
                 f"from 4 clients for "
                 f"{SECS} s; then left idle with `pools.idle_timeout_secs={m['idle_timeout_s']}` "
                 "(`SLUICE_POOLS__IDLE_TIMEOUT_SECS`). MariaDB rather than PostgreSQL because "
                 "this PostgreSQL allows 100 connections and the 100 open pools need one each.\n")
        L.append("| figure | value |\n|---|---|")
        L.append(f"| RSS: started / {m['datasources']:,} registered / {m['active']} pools open "
                 f"(peak) / after the pools closed | {m['rss_start_mib']:.1f} / "
                 f"{m['rss_registered_mib']:.1f} / {m['rss_active_peak_mib']:.1f} / "
                 f"{m['rss_idle_mib']:.1f} MiB |")
        L.append(f"| registering {m['datasources']:,} datasources | {m['create_s']:.1f} s "
                 f"({m['datasources'] / m['create_s']:.0f}/s) |")
        L.append(f"| first query on a cold datasource (pool created, connection opened) p50 / "
                 f"p99 / max | {m['cold_ms']['p50']:.2f} / {m['cold_ms']['p99']:.2f} / "
                 f"{m['cold_ms']['max']:.2f} ms |")
        L.append(f"| second query, warm pool, p50 / p99 | {m['warm_ms']['p50']:.2f} / "
                 f"{m['warm_ms']['p99']:.2f} ms |")
        L.append(f"| `sluice_pools_open` while in use / server connections | "
                 f"{m['pools_open_active']:.0f} / {m['db_connections_active']} |")
        closed = m["pools_closed_after_s"]
        L.append(f"| `sluice_pools_open` after the load stopped | " + ", ".join(
            f"{n:.0f} at {t:g} s" for t, n in m["pools_open_timeline"]
            if n is not None and (t == 0 or n == 0 or t % 5 == 0))
                 + (f" (0 after {closed:.1f} s)" if closed is not None else " (never 0)") + " |")
        L.append(f"| server connections after the pools closed | {m['db_connections_idle']} |")
        L.append("")
    return "\n".join(L)


BEGIN = "<!-- bench/run: begin (generated) -->"
END = "<!-- bench/run: end -->"


def write_benchmarks(results):
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path) as f:
        text = f.read()
    block = f"{BEGIN}\n{markdown(results)}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Gateway against the database (bench/run)\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)
    log(f"wrote {path}")


def main():
    if not DIRECT or not os.path.exists(DIRECT):
        sys.exit("SLUICE_BENCH_DIRECT must name the built direct baseline (bench/run sets it)")
    # Stop cleanly on SIGTERM and SIGINT (which a background start ignores by default): the
    # `finally` blocks stop the gateways and drop the benchmark databases.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(130))
    results = {"started": time.time()}
    fuzz_before = fuzzer_running()
    results["machine"] = machine()
    log(json.dumps(results["machine"]))
    if fuzz_before:
        log("note: a fuzzer is running; figures will be low")
    direct("setup", "--pg-url", PG_ADMIN, "--mysql-url", MY_ADMIN, "--database", DATABASE,
           "--account-prefix", PREFIX)
    try:
        for name, fn in (("policy", section_policy), ("overhead", section_overhead),
                         ("audit", section_audit),
                         ("stream", section_stream), ("many", section_many)):
            if name in ONLY:
                fn(results)
    finally:
        direct("teardown", "--pg-url", PG_ADMIN, "--mysql-url", MY_ADMIN, "--database",
               DATABASE, "--account-prefix", PREFIX)
    results["elapsed_s"] = time.time() - results["started"]
    results["fuzzer"] = {"before": fuzz_before, "after": fuzzer_running()}
    results["fuzzer"]["during"] = results["fuzzer"]["before"] or results["fuzzer"]["after"]
    log("== targets")
    for label, fig, tgt, ok in targets(results):
        log(f"  {label}: {fig} (target {tgt}): {'met' if ok else 'MISSED'}")
    out = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                       "bench-run.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    log(f"results: {out}")
    if WRITE:
        write_benchmarks(results)


if __name__ == "__main__":
    main()
