#!/usr/bin/env python3
"""bench/mcp.py: what a `query` tool call over MCP costs, against the same statement over
`POST /v1/apps/{id}/query` and against DBHub's `execute_sql` tool (npm `@bytebase/dbhub`, HTTP
transport), on the same PostgreSQL primary-key lookup, database, service account and machine.

Not part of CI. Python 3 standard library only (it reuses bench/run.py's gateway and psql helpers).
Run it on a release build:

    cargo build --release --locked --bin sluice
    python3 bench/mcp.py            # about 3 minutes; BENCH_WRITE=0 leaves BENCHMARKS.md alone

What it does:
  * loads the acme fixture into a fresh database on the local PostgreSQL with its analyst
    service account (read-only grants, fixtures/acme/postgres/grants.sql);
  * starts sluice (release binary, fresh data directory) with one datasource on that account and
    one app, used by an API user's token, as the README tells operators to give an assistant;
  * installs DBHub into target/mcp-clients/dbhub when missing (npm) and starts it with the same
    account, `readonly = true` and `max_rows = 200` (sluice's MCP row cap);
  * for each target and each client count, warms up, then runs closed-loop clients (one process
    each, keep-alive HTTP/1.1 connections) for BENCH_SECS seconds: every call is
    `SELECT * FROM customers WHERE id = <n>`, n drawn uniformly from 1..500 and written into the
    SQL text (DBHub's tool takes no parameters; the same text goes to all three), and every answer
    is parsed and checked to hold customer n;
  * prints throughput, p50, p99 and the server's CPU per call, and rewrites the generated block
    of BENCHMARKS.md (between the bench/mcp.py markers).

MCP clients speak the wire protocol directly (initialize, notifications/initialized, then
tools/call), not through an SDK, so the client's own cost is the same small loop for every target.

Environment: SLUICE_BENCH_BIN (the sluice binary, default target/release/sluice),
SLUICE_BENCH_PG_URL (admin URL), BENCH_SECS (default 10), BENCH_WARMUP (default 2),
BENCH_MCP_CLIENTS (default 1,8), BENCH_WRITE (default 1).
"""
import http.client
import json
import multiprocessing
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as base  # noqa: E402  (bench/run.py: Gateway, psql, machine facts)

ROOT = base.ROOT
SECS = int(os.environ.get("BENCH_SECS", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
CLIENTS = [int(c) for c in os.environ.get("BENCH_MCP_CLIENTS", "1,8").split(",")]
WRITE = os.environ.get("BENCH_WRITE", "1") != "0"
DATABASE = "sluice_bench_mcp"
ROLE = "sluice_bench_mcp_analyst"
ROLE_PW = "analyst_pw"
# The newest DBHub that runs on the machine's Node 20: 0.22 and later (1.4.0 is the latest) need
# Node >= 22.5.
DBHUB_VERSION = "0.21.2"
DBHUB_DIR = os.path.join(ROOT, "target/mcp-clients/dbhub")
SQL = "SELECT * FROM customers WHERE id = {n}"
REVISION = "2025-11-25"
BEGIN = "<!-- bench/mcp.py: begin (generated) -->"
END = "<!-- bench/mcp.py: end -->"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def psql_file(path, db):
    u = urllib.parse.urlparse(base.PG_ADMIN)
    r = base.sh(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", u.hostname or "127.0.0.1",
                 "-p", str(u.port or 5432), "-U", u.username or "postgres", "-d", db, "-f", path])
    if r.returncode != 0:
        raise RuntimeError(f"psql -f {path}: {r.stderr.strip()}")


def load_fixture():
    """The acme database with one read-only service account (the analyst grants)."""
    base.psql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    base.psql(f"DROP ROLE IF EXISTS {ROLE}")
    base.psql(f"CREATE DATABASE {DATABASE}")
    base.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PW}'")
    fixture = os.path.join(ROOT, "fixtures/acme/postgres")
    psql_file(os.path.join(fixture, "schema.sql"), DATABASE)
    psql_file(os.path.join(fixture, "data.sql"), DATABASE)
    with open(os.path.join(fixture, "grants.sql")) as f:
        grants = f.read()
    # One account plays all three parts: only its analyst grants matter here.
    for part in ("database", "analyst", "sales", "executive"):
        grants = grants.replace("{{%s}}" % part, DATABASE if part == "database" else ROLE)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(grants)
    psql_file(f.name, DATABASE)
    os.unlink(f.name)


def drop_fixture():
    base.psql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    base.psql(f"DROP ROLE IF EXISTS {ROLE}")


def pg_host_port():
    u = urllib.parse.urlparse(base.PG_ADMIN)
    return u.hostname or "127.0.0.1", u.port or 5432


# ---------------------------------------------------------------------------------------------
# The targets


def start_sluice():
    gw = base.Gateway("mcp")
    gw.enable("postgres")
    host, port = pg_host_port()
    ds = gw.ok("POST", "/v1/datasources", {
        "name": "acme", "kind": "postgres",
        "connection": {"host": host, "port": port, "database": DATABASE, "user": ROLE,
                       "password": ROLE_PW,
                       # Stated: the local server is plain or self-signed; verify-full refuses it.
                       "tls": {"mode": "disable"}},
        "policy": {"max_rows": 1000}, "pool": {"max_size": 16},
    })["id"]
    app = gw.ok("POST", "/v1/apps", {"name": "assistant", "datasource_ids": [ds]})["id"]
    bot = gw.ok("POST", "/v1/api-users", {"name": "bench assistant"})
    gw.ok("PUT", f"/v1/apps/{app}/members/{bot['user']['id']}", {"role": "viewer"})
    return gw, app, bot["token"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DBHub:
    def __init__(self):
        binary = os.path.join(DBHUB_DIR, "node_modules/.bin/dbhub")
        if not os.path.exists(binary):
            log(f"installing @bytebase/dbhub@{DBHUB_VERSION} into {DBHUB_DIR}")
            os.makedirs(DBHUB_DIR, exist_ok=True)
            r = base.sh(["npm", "install", "--prefix", DBHUB_DIR, "--no-audit", "--no-fund",
                         "--silent", f"@bytebase/dbhub@{DBHUB_VERSION}"])
            if r.returncode != 0:
                sys.exit("npm install @bytebase/dbhub failed: " + r.stderr)
        self.work = tempfile.mkdtemp(prefix="sluice-bench-dbhub-")
        host, port = pg_host_port()
        config = os.path.join(self.work, "dbhub.toml")
        with open(config, "w") as f:
            f.write(f"""[[sources]]
id = "acme"
dsn = "postgres://{ROLE}:{ROLE_PW}@{host}:{port}/{DATABASE}?sslmode=disable"

[[tools]]
name = "execute_sql"
source = "acme"
readonly = true
max_rows = 200
""")
        self.port = free_port()
        self.log = open(os.path.join(self.work, "dbhub.log"), "w")
        # Its own working directory, so it reads no .env of ours.
        self.proc = subprocess.Popen([binary, "--transport", "http", "--port", str(self.port),
                                      "--config", config], cwd=self.work,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        sys.exit(f"DBHub did not start; see {self.log.name}")

    def version(self):
        with open(os.path.join(DBHUB_DIR, "node_modules/@bytebase/dbhub/package.json")) as f:
            return json.load(f)["version"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The clients: one process each, a closed loop on one keep-alive connection


def json_body(res, data):
    """A JSON-RPC answer sent as application/json, or as the one event of an SSE stream."""
    if "text/event-stream" in (res.getheader("content-type") or ""):
        lines = [l[5:].strip() for l in data.decode().splitlines() if l.startswith("data:")]
        data = [l for l in lines if l][-1]
    return json.loads(data)


class Client:
    def __init__(self, target):
        self.t = target
        self.conn = http.client.HTTPConnection("127.0.0.1", target["port"], timeout=60)
        self.headers = {"content-type": "application/json"}
        if target.get("token"):
            self.headers["authorization"] = f"Bearer {target['token']}"
        self.next_id = 1
        if target["kind"] != "http":
            self.headers["accept"] = "application/json, text/event-stream"
            self.rpc("initialize", {"protocolVersion": REVISION, "capabilities": {},
                                    "clientInfo": {"name": "bench/mcp.py", "version": "1"}})
            self.headers["mcp-protocol-version"] = REVISION
            self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def post(self, body):
        self.conn.request("POST", self.t["path"], json.dumps(body), self.headers)
        res = self.conn.getresponse()
        data = res.read()
        if res.status not in (200, 202):
            raise RuntimeError(f"{self.t['name']}: HTTP {res.status} {data[:300]!r}")
        session = res.getheader("mcp-session-id")
        if session:
            self.headers["mcp-session-id"] = session
        return res, data

    def rpc(self, method, params):
        self.next_id += 1
        res, data = self.post({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                               "params": params})
        answer = json_body(res, data)
        if "error" in answer:
            raise RuntimeError(f"{self.t['name']}: {answer['error']}")
        return answer["result"]

    def call(self, n):
        sql = SQL.format(n=n)
        kind = self.t["kind"]
        if kind == "http":
            res, data = self.post({"sql": sql})
            got = json.loads(data)["rows"][0][0]
        else:
            tool = "query" if kind == "sluice-mcp" else "execute_sql"
            result = self.rpc("tools/call", {"name": tool, "arguments": {"sql": sql}})
            if result.get("isError"):
                raise RuntimeError(f"{self.t['name']}: {result}")
            if kind == "sluice-mcp":
                got = result["structuredContent"]["rows"][0][0]
            else:
                got = json.loads(result["content"][0]["text"])["data"]["rows"][0]["id"]
        if got != n:
            raise RuntimeError(f"{self.t['name']}: asked for customer {n}, got {got}")


def worker(args):
    target, start_at, warm_until, stop_at, seed = args
    rnd = random.Random(seed)
    c = Client(target)
    while time.time() < start_at:
        time.sleep(0.001)
    latencies = []
    while True:
        t0 = time.perf_counter()
        now = time.time()
        if now >= stop_at:
            break
        c.call(rnd.randint(1, 500))
        if now >= warm_until:
            latencies.append((time.perf_counter() - t0) * 1000.0)
    return latencies


def measure(target, clients, server_pid):
    start_at = time.time() + 1.5
    warm_until = start_at + WARMUP
    stop_at = warm_until + SECS
    jobs = [(target, start_at, warm_until, stop_at, i) for i in range(clients)]
    with multiprocessing.Pool(clients) as pool:
        pending = pool.map_async(worker, jobs)
        while time.time() < warm_until:
            time.sleep(0.01)
        cpu0 = base.proc_cpu_secs(server_pid)
        while time.time() < stop_at:
            time.sleep(0.01)
        cpu1 = base.proc_cpu_secs(server_pid)
        results = pending.get()
    lat = sorted(x for r in results for x in r)
    n = len(lat)
    pct = lambda p: lat[min(n - 1, int(p * n))]  # noqa: E731
    return {
        "target": target["name"], "clients": clients, "calls": n, "rps": n / SECS,
        "p50": pct(0.50), "p99": pct(0.99),
        "cpu_us": (cpu1 - cpu0) / n * 1e6 if n else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# The report


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def git_commit():
    r = base.sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    commit = r.stdout.strip() or "unknown"
    if base.sh(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]).stdout.strip():
        commit += " with uncommitted changes"
    return commit


def markdown(rows, facts):
    out = [BEGIN,
           f"Generated by `python3 bench/mcp.py` on {time.strftime('%Y-%m-%d')}; do not edit by "
           "hand (rerun instead).", "",
           "| machine and versions | |", "|---|---|",
           f"| machine | `nproc` = {facts['nproc']}, {facts['cpu']} |",
           f"| software | sluice {facts['sluice']} (commit {facts['commit']}, release build), "
           f"DBHub {facts['dbhub']} (npm `@bytebase/dbhub`, Node {facts['node']}), "
           f"PostgreSQL {facts['pg']} |",
           f"| other load | load average {facts['load']} when the run started |",
           f"| run | {WARMUP} s warm-up, then {SECS} s measured per step; closed-loop clients, one "
           "process and one keep-alive connection each; clients, servers and PostgreSQL share "
           "the cores |", "",
           "| target | clients | calls/s | p50 ms | p99 ms | server CPU per call |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['target']} | {r['clients']} | {r['rps']:,.0f} | {r['p50']:.3f} | "
                   f"{r['p99']:.3f} | {r['cpu_us']:,.0f} µs |")
    out.append(END)
    return "\n".join(out)


def write_benchmarks(block):
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path) as f:
        text = f.read()
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text,
                      flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## MCP tool calls (`bench/mcp.py`)\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    load = " / ".join(open("/proc/loadavg").read().split()[:3])
    if not os.path.exists(base.BIN):
        sys.exit(f"{base.BIN} is missing: cargo build --release --locked --bin sluice")
    log("loading the acme fixture")
    load_fixture()
    gw, app, token = start_sluice()
    dbhub = DBHub()
    targets = [
        {"name": "sluice `POST /v1/apps/{id}/query`", "kind": "http", "port": gw.port,
         "path": f"/v1/apps/{app}/query", "token": token, "pid": gw.pid},
        {"name": "sluice MCP `query` tool", "kind": "sluice-mcp", "port": gw.port,
         "path": f"/v1/apps/{app}/mcp", "token": token, "pid": gw.pid},
        {"name": "DBHub MCP `execute_sql` tool", "kind": "dbhub", "port": dbhub.port,
         "path": "/mcp", "token": None, "pid": dbhub.proc.pid},
    ]
    rows = []
    try:
        for clients in CLIENTS:
            for t in targets:
                log(f"{t['name']}, {clients} client(s)")
                r = measure({k: v for k, v in t.items() if k != "pid"}, clients, t["pid"])
                log(f"  {r['rps']:,.0f} calls/s, p50 {r['p50']:.3f} ms, p99 {r['p99']:.3f} ms, "
                    f"{r['cpu_us']:,.0f} µs CPU per call")
                rows.append(r)
        facts = {
            "nproc": os.cpu_count(), "cpu": cpu_model(), "commit": git_commit(),
            "sluice": base.sh([base.BIN, "--version"]).stdout.strip().split()[-1],
            "dbhub": dbhub.version(), "node": base.sh(["node", "--version"]).stdout.strip(),
            "pg": base.psql("SHOW server_version"), "load": load,
        }
    finally:
        dbhub.stop()
        gw.stop()
        drop_fixture()
    block = markdown(rows, facts)
    print(block)
    if WRITE:
        write_benchmarks(block)


if __name__ == "__main__":
    main()
