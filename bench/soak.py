#!/usr/bin/env python3
"""Soak test for sluice (documented command, not run in CI).

Starts the built binary on a fresh data directory with a SQLite datasource, drives it with
SOAK_CLIENTS concurrent clients (default 64) for SOAK_SECS seconds (default 300) of mixed traffic
(point lookups, 100-row reads, 1,000-row NDJSON streams, writes through a read_write datasource,
refused SQL, malformed bodies, unknown tokens, admin reads), samples the
server's RSS and open file descriptors, and asserts at the end:
  * zero 5xx answers and zero transport errors,
  * audit records of action 'query' == query requests sent (unknown tokens are not audited),
  * rows in the written table == writes answered 200,
  * RSS flat (the last sample within 20% + 16 MiB of the sample taken after warm-up),
  * no fd growth (the last sample within 8 of the warm-up sample).
Usage: SLUICE_BENCH_BIN=target/release/sluice bench/soak.py    (stdlib only)
"""
import http.client, json, os, random, re, sqlite3, subprocess, sys, tempfile, threading, time

BIN = os.environ.get("SLUICE_BENCH_BIN", "target/release/sluice")
SECS = int(os.environ.get("SOAK_SECS", "300"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "64"))


def sample(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    work = tempfile.mkdtemp(prefix="sluice-soak-")
    data = os.path.join(work, "data")
    out = subprocess.run([BIN, "company", "create", "Soak", "--owner-email", "soak@example.com",
                          "--data-dir", data], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("company create failed: " + out.stderr)
    token = out.stdout.strip().splitlines()[-1].strip()
    os.makedirs(os.path.join(data, "sqlite"))
    lite = os.path.join(data, "sqlite", "soak.db")
    db = sqlite3.connect(lite)
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
    db.executemany("INSERT INTO items VALUES (?, ?, ?)",
                   [(i, f"item-{i}", i * 1.25) for i in range(1, 10001)])
    db.commit()
    db.close()
    # A second file for writes, through a read_write datasource.
    lite_rw = os.path.join(data, "sqlite", "soak_rw.db")
    db = sqlite3.connect(lite_rw)
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, client INTEGER, note TEXT)")
    db.commit()
    db.close()
    server = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", data],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "SLUICE_LOG": "warn,sluice::app=info",
                                   # One token and one app carry all the load: let every
                                   # client run instead of being refused with 429.
                                   "SLUICE_LIMITS__MAX_CONCURRENT_PER_TOKEN": str(CLIENTS * 2),
                                   "SLUICE_LIMITS__MAX_CONCURRENT_PER_APP": str(CLIENTS * 2)})
    port = None
    for line in server.stderr:
        if '"sluice listening"' in line:
            port = int(json.loads(line)["addr"].rsplit(":", 1)[1])
            break
    threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()

    def call(conn, method, path, body=None, accept="application/json"):
        headers = {"authorization": f"Bearer {token}", "accept": accept}
        if body is not None:
            headers["content-type"] = "application/json"
            body = json.dumps(body)
        conn.request(method, path, body, headers)
        res = conn.getresponse()
        return res.status, res.read()

    admin = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    call(admin, "PATCH", "/v1/integrations/sqlite", {"enabled": True})
    st, ds = call(admin, "POST", "/v1/datasources",
                  {"name": "soak", "kind": "sqlite", "connection": {"path": lite},
                   "policy": {"max_rows": 5000}, "pool": {"max_size": 8}})
    assert st == 201, ds
    st, app = call(admin, "POST", "/v1/apps",
                   {"name": "soak", "datasource_ids": [json.loads(ds)["id"]]})
    assert st == 201, app
    qpath = f"/v1/apps/{json.loads(app)['id']}/query"
    # SQLite takes one writer at a time: a pool of one queues writes instead of failing them busy.
    st, ds_rw = call(admin, "POST", "/v1/datasources",
                     {"name": "soak-rw", "kind": "sqlite", "connection": {"path": lite_rw},
                      "policy": {"access": "read_write"}, "pool": {"max_size": 1}})
    assert st == 201, ds_rw
    st, app_rw = call(admin, "POST", "/v1/apps",
                      {"name": "soak-rw", "datasource_ids": [json.loads(ds_rw)["id"]]})
    assert st == 201, app_rw
    wpath = f"/v1/apps/{json.loads(app_rw)['id']}/query"

    def raw(conn, path, body, token_value):
        conn.request("POST", path, body, {"authorization": f"Bearer {token_value}",
                                          "content-type": "application/json"})
        res = conn.getresponse()
        return res.status, res.read()

    lock = threading.Lock()
    counts = {"requests": 0, "queries": 0, "writes": 0, "5xx": 0, "errors": 0}
    statuses = {}
    deadline = time.time() + SECS

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        rnd = random.Random()
        last = "start"
        prev = "start"
        while time.time() < deadline:
            r = rnd.random()
            prev, last = last, ("lookup" if r < 0.4 else "write" if r < 0.47 else
                                "malformed" if r < 0.53 else "unknown-token" if r < 0.59 else
                                "range" if r < 0.7 else "ndjson" if r < 0.8 else
                                "refused" if r < 0.9 else "admin")
            try:
                if r < 0.4:
                    st, _ = call(conn, "POST", qpath, {"sql": "SELECT * FROM items WHERE id = ?",
                                                       "params": [rnd.randint(1, 10000)]})
                    q = 1
                elif r < 0.47:
                    st, _ = call(conn, "POST", wpath,
                                 {"sql": "INSERT INTO events (client, note) VALUES (?, ?)",
                                  "params": [rnd.randint(1, 64), "soak"]})
                    q = 1
                    if st == 200:
                        with lock:
                            counts["writes"] += 1
                elif r < 0.53:
                    # A malformed body on the query route is still an audited attempt (400).
                    st, _ = raw(conn, qpath, '{"sql": "SELECT 1",', token)
                    q = 1
                elif r < 0.59:
                    # An unknown token is refused before anything else (401, not audited).
                    st, _ = raw(conn, qpath, '{"sql": "SELECT 1"}', "slc.tok_unknown.x")
                    q = 0
                elif r < 0.7:
                    st, _ = call(conn, "POST", qpath, {"sql": "SELECT id, name FROM items WHERE id > ? LIMIT 100",
                                                       "params": [rnd.randint(1, 9000)]})
                    q = 1
                elif r < 0.8:
                    st, _ = call(conn, "POST", qpath, {"sql": "SELECT * FROM items LIMIT 1000"},
                                 accept="application/x-ndjson")
                    q = 1
                elif r < 0.9:
                    st, _ = call(conn, "POST", qpath, {"sql": "SELEC 1"})
                    q = 1
                else:
                    st, _ = call(conn, "GET", "/v1/apps")
                    q = 0
            except Exception as e:
                with lock:
                    counts["errors"] += 1
                    kinds = counts.setdefault("error_kinds", {})
                    name = f"{type(e).__name__} on {last} after {prev}"
                    kinds[name] = kinds.get(name, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            with lock:
                counts["requests"] += 1
                counts["queries"] += q
                statuses[st] = statuses.get(st, 0) + 1
                if st >= 500:
                    counts["5xx"] += 1

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    samples = []
    while time.time() < deadline:
        time.sleep(5)
        samples.append(sample(server.pid))
    for t in threads:
        t.join()
    time.sleep(0.5)
    samples.append(sample(server.pid))
    server.terminate()
    server.wait(timeout=60)
    audited = sqlite3.connect(os.path.join(data, "sluice.db")).execute(
        "SELECT count(*) FROM audit_log WHERE action = 'query'").fetchone()[0]
    written = sqlite3.connect(lite_rw).execute("SELECT count(*) FROM events").fetchone()[0]

    warm = samples[max(0, len(samples) // 4 - 1)]
    last = samples[-1]
    report = {
        "secs": SECS, "clients": CLIENTS, **counts, "statuses": statuses,
        "req_per_sec": round(counts["requests"] / SECS, 1), "audited_queries": audited,
        "rows_written": written,
        "rss_kib_warm": warm[0], "rss_kib_last": last[0], "rss_kib_max": max(s[0] for s in samples),
        "fds_warm": warm[1], "fds_last": last[1], "exit_code": server.returncode,
        # Every 5 s sample, to tell a plateau from steady growth.
        "rss_mib_series": [round(s[0] / 1024, 1) for s in samples],
    }
    print(json.dumps(report, indent=2))
    failures = []
    if counts["5xx"] or counts["errors"]:
        failures.append("5xx answers or transport errors")
    if audited != counts["queries"]:
        failures.append("audit count differs from query count")
    if written != counts["writes"]:
        failures.append("rows written differ from answered writes")
    if last[0] > warm[0] * 1.2 + 16 * 1024:
        failures.append("RSS grew")
    if last[1] > warm[1] + 8:
        failures.append("fds grew")
    if server.returncode != 0:
        failures.append("non-zero exit after SIGTERM")
    if failures:
        print("SOAK FAILED: " + "; ".join(failures))
        sys.exit(1)
    print("SOAK OK")


if __name__ == "__main__":
    main()
