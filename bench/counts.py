#!/usr/bin/env python3
"""bench/counts.py: what one request costs, in counts rather than times (issue 20, items 1 and 3).

For the PK lookup of bench/run.py (`QUERIES[kind]["pk"]`) on its acme fixture, on PostgreSQL and
MariaDB, at each client count (default 1 and 64), over a fixed number of requests:

  * threads: context switches and CPU migrations of the gateway process (`perf stat -e
    context-switches,cpu-migrations -p PID`), and the voluntary / involuntary context switches
    and CPU time of each of its threads (/proc/PID/task/*/status and stat, before and after),
    grouped: the main thread, the tokio workers (the `nproc` runtime threads that have used the
    most CPU: tokio names workers and blocking threads alike), the blocking pool (the other
    runtime threads),
    the audit writer (`sluice-audit`), the checkpointer (`sluice-checkpoint`); plus the audit
    commits (`sluice_audit_committed_batches_total`) per request, and how many of them the
    request's own thread made (`sluice_audit_inline_commits_total`). Release binary, no relay.
  * allocations: the count-allocs bench build (`cargo build --release --features count-allocs`:
    the same mimalloc wrapped in atomic counters, shown in /metrics as
    `sluice_bench_allocations_total` and `sluice_bench_allocated_bytes_total`). No relay.
  * the wire: each datasource points at a TCP relay in this script that decodes what the gateway
    sends the database (PostgreSQL frontend messages; MySQL command packets) and what comes back,
    and counts per request: round trips (a client flush followed by a server reply), client
    flushes, messages by type, the SQL texts sent (Query, Parse, COM_QUERY, COM_STMT_PREPARE) and
    the statements executed (Bind of a parsed statement, COM_STMT_EXECUTE of a prepared one), and
    for PostgreSQL the CommandComplete tags the server answers (one per statement it ran). The
    same for the direct baseline (bench/direct.rs through the same relay) and, on PostgreSQL,
    `pgbench -S -M prepared` (its own pgbench_accounts table, scale 1).

Requests are counted by the gateway itself (`sluice_queries_total`, between two scrapes), wrk
being stopped after COUNTS_REQUESTS answers (a Lua `response()` hook; the few requests in flight
when a wrk thread stops are in the gateway's count). Every count includes whatever the gateway did
in the background over the window (pool upkeep, audit, checkpoints): that is part of the cost.

Needs what bench/run needs (the release binary, the direct baseline, wrk, local PostgreSQL and
MariaDB) plus perf. Environment: as bench/run.py (SLUICE_BENCH_BIN, SLUICE_BENCH_DIRECT, ...),
and SLUICE_BENCH_COUNT_ALLOCS_BIN (the count-allocs build; the allocation part is skipped
without it), COUNTS_CLIENTS (default 1,64), COUNTS_REQUESTS (default 20000), COUNTS_KINDS
(default postgres,mysql), COUNTS_PARTS (default threads,allocs,wire), COUNTS_JSON (where to write
every figure, default $CARGO_TARGET_DIR/bench-counts.json).
"""
import collections
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402

CLIENTS = [int(c) for c in os.environ.get("COUNTS_CLIENTS", "1,64").split(",")]
REQUESTS = int(os.environ.get("COUNTS_REQUESTS", "20000"))
KINDS = os.environ.get("COUNTS_KINDS", "postgres,mysql").split(",")
PARTS = set(os.environ.get("COUNTS_PARTS", "threads,allocs,wire").split(","))
ALLOC_BIN = os.environ.get("SLUICE_BENCH_COUNT_ALLOCS_BIN", "")
OUT = os.environ.get("COUNTS_JSON", os.path.join(R.TARGET_DIR, "bench-counts.json"))
GATEWAY_ENV = {"SLUICE_POOLS__IDLE_TIMEOUT_SECS": "600"}
# tokio names its workers and its blocking threads alike ("tokio-rt-worker" now,
# "tokio-runtime-worker" before, cut to 15 characters in comm).
RUNTIME_THREAD = "tokio-r"


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Load: wrk stopped after a fixed number of answers, requests counted by the gateway


FIXED_LUA = """
dofile(%s)
local share = tonumber(os.getenv("COUNTS_PER_THREAD"))
local marks = os.getenv("COUNTS_MARK_DIR")
local seen = 0
function response(status, headers, body)
  seen = seen + 1
  if seen == share then
    -- wrk's main thread sleeps for the whole -d whatever its threads do: tell bench/counts.py,
    -- which interrupts it (wrk then reports as usual).
    local f = io.open(marks .. "/" .. tostring(seed), "w")
    f:close()
    wrk.thread:stop()
  end
end
"""


def scrape(gw):
    """/metrics as {line name with labels: value}."""
    st, data = gw.call("GET", "/metrics")
    if st != 200:
        raise RuntimeError(f"/metrics: {st}")
    out = {}
    for line in data.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def metric_sum(m, prefix, contains=""):
    return sum(v for k, v in m.items()
               if (k == prefix or k.startswith(prefix + "{")) and contains in k)


def answered(m, kind):
    return metric_sum(m, "sluice_queries_total", f'kind="{kind}"')


def fixed_wrk(gw, app, kind, clients, n):
    """wrk until about `n` answers; returns wrk's own figures."""
    sql, lo, hi = R.QUERIES[kind]["pk"]
    threads = min(clients, 2)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(FIXED_LUA % json.dumps(os.path.join(R.ROOT, "bench/query.lua")))
        script = f.name
    marks = tempfile.mkdtemp(prefix="sluice-counts-")
    env = {**os.environ, "BENCH_PATH": f"/v1/apps/{app}/query", "BENCH_TOKEN": gw.token,
           "BENCH_SQL_JSON": json.dumps(sql), "BENCH_PARAM_MIN": str(lo),
           "BENCH_PARAM_MAX": str(hi), "BENCH_METHOD": "POST",
           "COUNTS_PER_THREAD": str(max(1, n // threads)), "COUNTS_MARK_DIR": marks}
    try:
        p = subprocess.Popen(["wrk", "-t", str(threads), "-c", str(clients), "-d", "600s",
                              "--timeout", "10s", "-s", script,
                              f"http://127.0.0.1:{gw.port}/v1/apps/{app}/query"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while p.poll() is None and len(os.listdir(marks)) < threads:
            time.sleep(0.02)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    finally:
        os.unlink(script)
        subprocess.run(["rm", "-rf", marks])
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed: {r.stdout}\n{r.stderr}")
    res = json.loads(line[len("BENCH_JSON "):])
    if sum(res["errors"].values()):
        raise RuntimeError(f"wrk errors: {res['errors']}\n" + "".join(gw.tail[-10:]))
    return res


def measure(gw, app, kind, clients, before=None, after=None):
    """Warm-up, then the fixed run between `before()` and `after()`; returns (requests, wrk,
    the two scrapes, what before/after returned)."""
    R.wrk(gw, app, *R.QUERIES[kind]["pk"], clients, R.WARMUP)
    time.sleep(0.5)
    m0 = scrape(gw)
    b = before() if before else None
    w = fixed_wrk(gw, app, kind, clients, REQUESTS)
    a = after() if after else None
    m1 = scrape(gw)
    n = answered(m1, kind) - answered(m0, kind)
    return n, w, m0, m1, b, a


def gateway_with(name, binary, kinds, hosts=None):
    """A gateway on `binary` with one datasource and app per kind; `hosts[kind]` = (host, port)
    to point the datasource elsewhere (the relay)."""
    saved = R.BIN
    R.BIN = binary
    try:
        gw = R.Gateway(name, GATEWAY_ENV)
    finally:
        R.BIN = saved
    apps = {}
    for kind in kinds:
        gw.enable(kind)
        admin = urllib.parse.urlparse(R.PG_ADMIN if kind == "postgres" else R.MY_ADMIN)
        host, port = (hosts or {}).get(kind) or (
            admin.hostname or "127.0.0.1", admin.port or (5432 if kind == "postgres" else 3306))
        body = {"name": f"acme-{kind}", "kind": kind,
                "connection": {"host": host, "port": port, "database": R.DATABASE,
                               "user": R.ANALYST, "password": R.ANALYST_PW,
                               "tls": {"mode": "disable"}},
                "policy": {"max_rows": 1000}, "pool": {"max_size": 64}}
        ds = gw.ok("POST", "/v1/datasources", body)["id"]
        apps[kind] = gw.app(f"bench-{kind}", [ds])
    return gw, apps


# ---------------------------------------------------------------------------------------------
# Threads


def task_snapshot(pid):
    """{tid: (comm, voluntary, involuntary, cpu seconds)} of every thread of `pid`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(base + "/comm") as f:
                comm = f.read().strip()
            with open(base + "/status") as f:
                status = f.read()
            with open(base + "/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        vol = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        inv = int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        out[int(tid)] = (comm, vol, inv, (int(fields[11]) + int(fields[12])) / R.CLK_TCK)
    return out


def thread_groups(pid, workers, before, after):
    """Per group: threads, voluntary and involuntary switches and CPU seconds over the window
    (threads started in the window count from zero; those that ended in it are lost, and
    counted in `ended`)."""
    groups = {}
    for tid, (comm, vol, inv, cpu) in after.items():
        if tid == pid:
            g = "main thread"
        elif tid in workers:
            g = "tokio workers"
        elif comm.startswith(RUNTIME_THREAD):
            g = "blocking pool"
        elif comm == "sluice-audit":
            g = "audit writer"
        elif comm == "sluice-checkpoint"[:15]:
            g = "checkpointer"
        else:
            g = comm
        _, v0, i0, c0 = before.get(tid, (comm, 0, 0, 0.0))
        s = groups.setdefault(g, {"threads": 0, "voluntary": 0, "involuntary": 0, "cpu_s": 0.0})
        s["threads"] += 1
        s["voluntary"] += vol - v0
        s["involuntary"] += inv - i0
        s["cpu_s"] += cpu - c0
    ended = [tid for tid in before if tid not in after]
    return groups, ended


def perf_start(pid):
    out = tempfile.NamedTemporaryFile(suffix=".perf", delete=False).name
    p = subprocess.Popen(["perf", "stat", "-e", "context-switches,cpu-migrations", "-x", ",",
                          "-o", out, "-p", str(pid)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return p, out


def perf_stop(handle):
    p, out = handle
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    counts = {}
    with open(out) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[0].isdigit():
                counts[parts[2]] = int(parts[0])
    os.unlink(out)
    return counts


def part_threads(results):
    log("== threads: context switches per request (release binary, no relay)")
    gw, apps = gateway_with("counts-threads", R.BIN, KINDS)
    rows = []
    try:
        for kind in KINDS:
            for c in CLIENTS:
                n, w, m0, m1, (t0, perf), (t1, pc) = measure(
                    gw, apps[kind], kind, c,
                    before=lambda: (task_snapshot(gw.pid), perf_start(gw.pid)),
                    after=lambda: (task_snapshot(gw.pid), None))
                # perf stops after the second snapshot; its window is a little wider.
                pc = perf_stop(perf)
                # tokio names its workers and blocking threads alike, and the first one it starts
                # is not always a worker: the workers are the `nproc` runtime threads that have
                # run the most (the blocking pool only opened the store at startup).
                rt = sorted((v[3], t) for t, v in t1.items() if v[0].startswith(RUNTIME_THREAD))
                workers = {t for _, t in rt[-os.cpu_count():]}
                groups, ended = thread_groups(gw.pid, workers, t0, t1)
                batches = (metric_sum(m1, "sluice_audit_committed_batches_total")
                           - metric_sum(m0, "sluice_audit_committed_batches_total"))
                records = (metric_sum(m1, "sluice_audit_committed_records_total")
                           - metric_sum(m0, "sluice_audit_committed_records_total"))
                inline = (metric_sum(m1, "sluice_audit_inline_commits_total")
                          - metric_sum(m0, "sluice_audit_inline_commits_total"))
                row = {"kind": kind, "clients": c, "requests": n, "wrk_requests": w["requests"],
                       "rps": w["requests"] / (w["duration_us"] / 1e6),
                       "perf": pc, "groups": groups, "ended_threads": len(ended),
                       "audit_batches": batches, "audit_records": records,
                       "audit_inline_commits": inline}
                rows.append(row)
                per = {g: f"{(s['voluntary'] + s['involuntary']) / n:.2f} "
                       f"({s['threads']} thr, {s['cpu_s'] * 1e6 / n:.0f} µs)"
                       for g, s in groups.items()}
                log(f"  {kind:8} c={c:<3} {n:.0f} requests: context switches "
                    f"{pc.get('context-switches', 0) / n:.2f}/req (perf), migrations "
                    f"{pc.get('cpu-migrations', 0) / n:.3f}/req; by thread "
                    + ", ".join(f"{g} {v}" for g, v in sorted(per.items()))
                    + f"; audit commits {batches / n:.3f}/req ({records / max(batches, 1):.1f} "
                    f"records each), {inline / n:.3f}/req committed on the request's own thread; "
                    f"ended threads {len(ended)}")
    finally:
        gw.stop()
    results["threads"] = rows


# ---------------------------------------------------------------------------------------------
# Allocations


def part_allocs(results):
    if not ALLOC_BIN or not os.path.exists(ALLOC_BIN):
        log("== allocations: skipped (SLUICE_BENCH_COUNT_ALLOCS_BIN not set)")
        return
    log(f"== allocations per request ({ALLOC_BIN}, no relay)")
    gw, apps = gateway_with("counts-allocs", ALLOC_BIN, KINDS)
    rows = []
    try:
        if "sluice_bench_allocations_total" not in scrape(gw):
            raise RuntimeError(f"{ALLOC_BIN} shows no sluice_bench_allocations_total: "
                               "not built with --features count-allocs")
        for kind in KINDS:
            for c in CLIENTS:
                n, w, m0, m1, _, _ = measure(gw, apps[kind], kind, c)
                allocs = m1["sluice_bench_allocations_total"] - m0["sluice_bench_allocations_total"]
                nbytes = (m1["sluice_bench_allocated_bytes_total"]
                          - m0["sluice_bench_allocated_bytes_total"])
                rows.append({"kind": kind, "clients": c, "requests": n, "allocations": allocs,
                             "bytes": nbytes})
                log(f"  {kind:8} c={c:<3} {n:.0f} requests: {allocs / n:.1f} allocations/req, "
                    f"{nbytes / n:,.0f} bytes/req")
        # What a scrape itself allocates (included once at each end of every window above).
        m0 = scrape(gw)
        m1 = scrape(gw)
        results["scrape_allocations"] = (m1["sluice_bench_allocations_total"]
                                         - m0["sluice_bench_allocations_total"])
    finally:
        gw.stop()
    results["allocs"] = rows


# ---------------------------------------------------------------------------------------------
# The wire: a decoding TCP relay

PG_FRONTEND = {"Q": "Query", "P": "Parse", "B": "Bind", "D": "Describe", "E": "Execute",
               "S": "Sync", "C": "Close", "H": "Flush", "X": "Terminate", "p": "Password/SASL",
               "F": "FunctionCall", "d": "CopyData", "c": "CopyDone", "f": "CopyFail"}
PG_BACKEND = {"R": "Authentication", "S": "ParameterStatus", "K": "BackendKeyData",
              "Z": "ReadyForQuery", "T": "RowDescription", "D": "DataRow",
              "C": "CommandComplete", "1": "ParseComplete", "2": "BindComplete",
              "3": "CloseComplete", "t": "ParameterDescription", "n": "NoData",
              "E": "ErrorResponse", "N": "NoticeResponse", "s": "PortalSuspended",
              "I": "EmptyQueryResponse", "A": "NotificationResponse", "v": "NegotiateProtocol"}
MY_COMMANDS = {0x01: "COM_QUIT", 0x02: "COM_INIT_DB", 0x03: "COM_QUERY", 0x0e: "COM_PING",
               0x11: "COM_CHANGE_USER", 0x16: "COM_STMT_PREPARE", 0x17: "COM_STMT_EXECUTE",
               0x18: "COM_STMT_SEND_LONG_DATA", 0x19: "COM_STMT_CLOSE",
               0x1a: "COM_STMT_RESET", 0x1b: "COM_SET_OPTION", 0x1c: "COM_STMT_FETCH",
               0x1f: "COM_RESET_CONNECTION", 0x09: "COM_STATISTICS", 0x0c: "COM_PROCESS_KILL"}


def cstr(b, i):
    j = b.index(b"\0", i)
    return b[i:j].decode("utf-8", "replace"), j + 1



def pg_message(b, i):
    """The PostgreSQL protocol message starting at `b[i]` (type byte, 4-byte length, body) as
    (type, body, where the next starts), or None until all of it has arrived."""
    if len(b) - i < 5:
        return None
    n = int.from_bytes(b[i + 1:i + 5], "big")
    if len(b) - i < 1 + n:
        return None
    return chr(b[i]), b[i + 5:i + 1 + n], i + 1 + n

class Wire:
    """What went over the relay: counters behind one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.c = collections.Counter()  # ("msg", direction, type), ("sql", how, text), scalars

    def add(self, *key, n=1):
        with self.lock:
            self.c[key] += n

    def snapshot(self):
        with self.lock:
            return collections.Counter(self.c)


class PgConn:
    def __init__(self, wire):
        self.w = wire
        self.fe = b""
        self.be = b""
        self.fe_started = False
        self.raw_replies = 0  # single-byte answers to SSLRequest / GSSENCRequest
        self.tls = False  # encrypted from there on: not decoded
        self.stmts = {}

    def client(self, data):
        if self.tls:
            return
        self.fe += data
        b = self.fe
        i = 0
        while True:
            if not self.fe_started:
                if len(b) - i < 8:
                    break
                n = int.from_bytes(b[i:i + 4], "big")
                if len(b) - i < n:
                    break
                code = int.from_bytes(b[i + 4:i + 8], "big")
                if code in (80877103, 80877104):
                    self.w.add("msg", "fe", "SSLRequest" if code == 80877103 else "GSSENCRequest")
                    self.raw_replies += 1
                elif code == 80877102:
                    self.w.add("msg", "fe", "CancelRequest")
                else:
                    self.w.add("msg", "fe", "StartupMessage")
                    self.fe_started = True
                i += n
                continue
            message = pg_message(b, i)
            if message is None:
                break
            t, body, i = message
            name = PG_FRONTEND.get(t, f"'{t}'")
            if t == "Q":
                self.w.add("sql", "Query (simple)", cstr(body, 0)[0])
            elif t == "P":
                sname, j = cstr(body, 0)
                text, _ = cstr(body, j)
                self.stmts[sname] = text
                self.w.add("sql", "Parse (unnamed)" if not sname else "Parse (named)", text)
            elif t == "B":
                _, j = cstr(body, 0)
                sname, _ = cstr(body, j)
                self.w.add("sql", "Bind: executes", self.stmts.get(sname, "?"))
            elif t in "CD":
                name += " statement" if body[:1] == b"S" else " portal"
            self.w.add("msg", "fe", name)
        self.fe = b[i:]

    def server(self, data):
        if self.tls:
            return
        self.be += data
        b = self.be
        i = 0
        while True:
            if self.raw_replies and len(b) - i >= 1:
                self.w.add("msg", "be", f"answer to SSLRequest {chr(b[i])!r}")
                self.raw_replies -= 1
                if b[i:i + 1] == b"S":
                    self.tls = True
                    return
                i += 1
                continue
            message = pg_message(b, i)
            if message is None:
                break
            t, body, i = message
            self.w.add("msg", "be", PG_BACKEND.get(t, f"'{t}'"))
            if t == "C":
                tag = cstr(body, 0)[0]
                self.w.add("tag", re.sub(r"[\d ]+$", "", tag) or tag)
        self.be = b[i:]


class MyConn:
    def __init__(self, wire):
        self.w = wire
        self.fe = b""
        self.be = b""
        self.stmts = {}
        self.pending_prepare = None

    @staticmethod
    def packets(buf):
        i = 0
        out = []
        while len(buf) - i >= 4:
            n = int.from_bytes(buf[i:i + 3], "little")
            if len(buf) - i < 4 + n:
                break
            out.append((buf[i + 3], buf[i + 4:i + 4 + n]))
            i += 4 + n
        return out, buf[i:]

    def client(self, data):
        pkts, self.fe = self.packets(self.fe + data)
        for seq, p in pkts:
            if seq != 0 or not p:
                self.w.add("msg", "fe", "handshake/auth packet")
                continue
            name = MY_COMMANDS.get(p[0], f"command 0x{p[0]:02x}")
            self.w.add("msg", "fe", name)
            if p[0] == 0x03:
                self.w.add("sql", "COM_QUERY", p[1:].decode("utf-8", "replace"))
            elif p[0] == 0x16:
                text = p[1:].decode("utf-8", "replace")
                self.pending_prepare = text
                self.w.add("sql", "COM_STMT_PREPARE", text)
            elif p[0] == 0x17:
                self.w.add("sql", "COM_STMT_EXECUTE: executes",
                           self.stmts.get(bytes(p[1:5]), "?"))

    def server(self, data):
        pkts, self.be = self.packets(self.be + data)
        for seq, p in pkts:
            self.w.add("msg", "be", "packet")
            if p[:1] == b"\xff":
                self.w.add("msg", "be", "ERR packet")
            if self.pending_prepare is not None and seq == 1:
                if p[:1] == b"\x00" and len(p) >= 5:
                    self.stmts[bytes(p[1:5])] = self.pending_prepare
                self.pending_prepare = None


class Relay:
    """127.0.0.1:<port> → target, decoding both directions with `proto` (PgConn or MyConn)."""

    def __init__(self, proto, host, port):
        self.proto, self.target = proto, (host, port)
        self.wire = Wire()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(512)
        self.port = self.lsock.getsockname()[1]
        self.stop_flag = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.lsock, selectors.EVENT_READ, None)
        state = {}  # fd -> [conn, this socket, peer socket, from client?, flags]
        while not self.stop_flag:
            for key, _ in sel.select(0.2):
                if key.data is None:
                    c, _ = self.lsock.accept()
                    s = socket.create_connection(self.target)
                    for x in (c, s):
                        x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn = self.proto(self.wire)
                    flags = {"client_sent": False}
                    sel.register(c, selectors.EVENT_READ, (conn, c, s, True, flags))
                    sel.register(s, selectors.EVENT_READ, (conn, s, c, False, flags))
                    self.wire.add("connections")
                    continue
                conn, me, peer, from_client, flags = key.data
                try:
                    data = me.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    for x in (me, peer):
                        try:
                            sel.unregister(x)
                        except (KeyError, ValueError):
                            pass
                        x.close()
                    continue
                try:
                    peer.sendall(data)
                except OSError:
                    pass
                if from_client:
                    self.wire.add("client flushes")
                    flags["client_sent"] = True
                    conn.client(data)
                else:
                    if flags["client_sent"]:
                        self.wire.add("round trips")
                        flags["client_sent"] = False
                    conn.server(data)
        sel.close()

    def stop(self):
        self.stop_flag = True
        self.thread.join()
        self.lsock.close()


def wire_row(label, kind, clients, n, c0, c1):
    d = c1 - c0
    msgs = {f"{k[1]} {k[2]}": v / n for k, v in d.items() if k[0] == "msg"}
    sql = [{"how": k[1], "text": k[2], "per_request": v / n, "count": v}
           for k, v in d.most_common() if k[0] == "sql"]
    tags = {k[1]: v / n for k, v in d.items() if k[0] == "tag"}
    row = {"who": label, "kind": kind, "clients": clients, "requests": n,
           "round_trips": d[("round trips",)] / n, "client_flushes": d[("client flushes",)] / n,
           "connections": d[("connections",)], "messages": msgs, "sql": sql, "tags": tags}
    log(f"  {label:9} {kind:8} c={clients:<3} {n:.0f} requests: round trips "
        f"{row['round_trips']:.2f}/req, client flushes {row['client_flushes']:.2f}/req, "
        f"new connections {row['connections']}")
    for m, v in sorted(msgs.items()):
        if v >= 0.005:
            log(f"      {m:40} {v:7.3f}/req")
    for s in sql[:12]:
        text = s["text"] if len(s["text"]) <= 160 else s["text"][:157] + "..."
        log(f"      {s['per_request']:7.3f}/req  {s['how']:28} {text}")
    if tags:
        log("      server CommandComplete: " + ", ".join(
            f"{t} {v:.2f}" for t, v in sorted(tags.items(), key=lambda x: -x[1]) if v >= 0.005))
    return row


def part_wire(results):
    log("== the wire: what reaches the database, through a decoding relay")
    relays = {}
    for kind in KINDS:
        admin = urllib.parse.urlparse(R.PG_ADMIN if kind == "postgres" else R.MY_ADMIN)
        relays[kind] = Relay(PgConn if kind == "postgres" else MyConn,
                             admin.hostname or "127.0.0.1",
                             admin.port or (5432 if kind == "postgres" else 3306))
    rows = []
    try:
        gw, apps = gateway_with("counts-wire", R.BIN, KINDS,
                                {k: ("127.0.0.1", r.port) for k, r in relays.items()})
        try:
            for kind in KINDS:
                for c in CLIENTS:
                    n, _, _, _, c0, c1 = measure(gw, apps[kind], kind, c,
                                                 before=relays[kind].wire.snapshot,
                                                 after=relays[kind].wire.snapshot)
                    rows.append(wire_row("gateway", kind, c, n, c0, c1))
        finally:
            gw.stop()
        for kind in KINDS:
            R.wait_db_quiet(kind)
            sql, lo, hi = R.QUERIES[kind]["pk"]
            url = R.direct_url(kind)
            u = urllib.parse.urlparse(url)
            url = url.replace(f"@{u.hostname}:{u.port}", f"@127.0.0.1:{relays[kind].port}")
            for c in CLIENTS:
                c0 = relays[kind].wire.snapshot()
                # No warm-up: every request is counted (connections and prepares included).
                res = R.direct("run", "--kind", kind, "--url", url, "--sql", sql,
                               "--param-min", str(lo), "--param-max", str(hi), "--clients",
                               str(c), "--secs", "4", "--warmup", "0")
                time.sleep(0.5)
                c1 = relays[kind].wire.snapshot()
                rows.append(wire_row("direct", kind, c, res["requests"], c0, c1))
        if "postgres" in KINDS:
            R.psql(f"DROP DATABASE IF EXISTS {R.PGBENCH_DB}")
            R.psql(f"CREATE DATABASE {R.PGBENCH_DB}")
            admin = urllib.parse.urlparse(R.PG_ADMIN)
            r = R.sh(["pgbench", "-i", "-q", "-s", "1", "-h", admin.hostname or "127.0.0.1",
                      "-p", str(admin.port or 5432), "-U", admin.username or "postgres",
                      R.PGBENCH_DB])
            if r.returncode != 0:
                raise RuntimeError(f"pgbench -i: {r.stderr}")
            try:
                for c in CLIENTS:
                    per = max(1, REQUESTS // c)
                    c0 = relays["postgres"].wire.snapshot()
                    r = R.sh(["pgbench", "-n", "-S", "-M", "prepared", "-c", str(c), "-j",
                              str(min(c, 2)), "-t", str(per), "-h", "127.0.0.1", "-p",
                              str(relays["postgres"].port), "-U",
                              admin.username or "postgres", R.PGBENCH_DB],
                             env={**os.environ, "PGSSLMODE": "disable"})
                    if r.returncode != 0:
                        raise RuntimeError(f"pgbench: {r.stderr}")
                    time.sleep(0.5)
                    c1 = relays["postgres"].wire.snapshot()
                    rows.append(wire_row("pgbench", "postgres", c, per * c, c0, c1))
            finally:
                R.psql(f"DROP DATABASE IF EXISTS {R.PGBENCH_DB}")
    finally:
        for r in relays.values():
            r.stop()
    results["wire"] = rows


def main():
    if not R.DIRECT or not os.path.exists(R.DIRECT):
        sys.exit("SLUICE_BENCH_DIRECT must name the built direct baseline (bench/run builds it)")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(130))
    results = {"started": time.time(), "machine": R.machine(), "requests": REQUESTS,
               "clients": CLIENTS, "fuzzer_before": R.fuzzer_running()}
    log(json.dumps(results["machine"]))
    R.direct("setup", "--pg-url", R.PG_ADMIN, "--mysql-url", R.MY_ADMIN, "--database",
             R.DATABASE, "--account-prefix", R.PREFIX)
    try:
        for name, fn in (("threads", part_threads), ("allocs", part_allocs),
                         ("wire", part_wire)):
            if name in PARTS:
                fn(results)
    finally:
        R.direct("teardown", "--pg-url", R.PG_ADMIN, "--mysql-url", R.MY_ADMIN, "--database",
                 R.DATABASE, "--account-prefix", R.PREFIX)
    results["fuzzer_after"] = R.fuzzer_running()
    results["elapsed_s"] = time.time() - results["started"]
    with open(OUT, "w") as f:
        json.dump(results, f, indent=1)
    log(f"results: {OUT}")


if __name__ == "__main__":
    main()
