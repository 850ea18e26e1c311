#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI document with schemathesis (documented command, not run
# in CI; see SECURITY.md, "Fuzzing").
#
# Builds nothing: expects a built binary (SLUICE_BENCH_BIN, else the first argument, else
# target/debug/sluice). Creates a company on a fresh data directory (its owner token is printed
# last), enables the SQLite integration and registers one SQLite datasource and app so the
# positive examples can get past validation (the query and read routes get its real ids through a
# schemathesis.toml written to the work directory), starts `sluice serve` on a free port, and runs
# `schemathesis run <url>/openapi.json` with the owner's bearer token. Checks: no 5xx answer
# (not_a_server_error) and every answer conforming to the documented status codes, content types
# and response schemas. Bounded by SCHEMATHESIS_MAX_EXAMPLES examples per operation (default 50).
# Any further arguments go to schemathesis. Needs `pip install schemathesis` (4.x) and python3.
# Usage: bench/schemathesis.sh [BIN] [schemathesis options...]
set -euo pipefail

if [ -n "${SLUICE_BENCH_BIN:-}" ]; then
    BIN=$SLUICE_BENCH_BIN
elif [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    BIN=$1
    shift
else
    BIN=target/debug/sluice
fi
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-50}
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build first, or set SLUICE_BENCH_BIN)" >&2; exit 2; }
command -v schemathesis >/dev/null || { echo "schemathesis not found (pip install schemathesis)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-schemathesis-XXXXXX")
data=$work/data
server=
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

token=$("$BIN" company create Fuzz --owner-email fuzz@example.com --data-dir "$data" | tail -n 1 | tr -d '[:space:]')
mkdir -p "$data/sqlite"
python3 - "$data/sqlite/fuzz.db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
db.executemany("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item-{i}", i * 1.5) for i in range(1, 101)])
db.commit()
EOF

SLUICE_LOG=warn,sluice::app=info "$BIN" serve --listen 127.0.0.1:0 --data-dir "$data" 2>"$work/server.log" &
server=$!
addr=
for _ in $(seq 1 100); do
    addr=$(grep -o '"sluice listening".*' "$work/server.log" | grep -o '"addr":"[^"]*"' | cut -d'"' -f4 || true)
    [ -n "$addr" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "the server did not start" >&2; cat "$work/server.log" >&2; exit 1; }
base=http://$addr

api() {
    curl -sS -f -X "$1" "$base$2" -H "authorization: Bearer $token" -H 'content-type: application/json' ${3:+-d "$3"}
}
api PATCH /v1/integrations/sqlite '{"enabled": true}' >/dev/null
ds=$(api POST /v1/datasources "{\"name\": \"fuzz\", \"kind\": \"sqlite\", \"connection\": {\"path\": \"$data/sqlite/fuzz.db\"}}")
ds_id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$ds")
app=$(api POST /v1/apps "{\"name\": \"fuzz\", \"datasource_ids\": [\"$ds_id\"]}")
app_id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$app")

# Random ids only ever reach the 404 path: the routes that read or run against the app and its
# datasource get the real ids (the mutating ones keep random ids, so the app survives the run).
# (One criterion per block: schemathesis ORs the criteria of a block.)
cat >"$work/schemathesis.toml" <<TOML
[[operations]]
include-name = ["POST /v1/apps/{id}/query", "GET /v1/apps/{id}"]
parameters = { "path.id" = "$app_id" }

[[operations]]
include-name = ["GET /v1/datasources/{id}", "GET /v1/datasources/{id}/schema", "POST /v1/datasources/{id}/check"]
parameters = { "path.id" = "$ds_id" }
TOML

echo "schemathesis against $base (data dir $data, $MAX_EXAMPLES examples per operation)" >&2
start=$(date +%s)
status=0
# Run inside the throwaway directory: schemathesis keeps a crash cache in ./.schemathesis that
# later runs would replay (so give --report-dir as an absolute path).
(cd "$work" && schemathesis --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$MAX_EXAMPLES" \
    --generation-database none \
    --workers 1 \
    --request-timeout 30 \
    --seed "${SCHEMATHESIS_SEED:-1}" \
    "$@") || status=$?
echo "schemathesis finished in $(( $(date +%s) - start )) s with exit status $status" >&2
if grep -q '"level":"ERROR"' "$work/server.log"; then
    echo "server errors logged:" >&2
    grep '"level":"ERROR"' "$work/server.log" | head -n 20 >&2
fi
exit "$status"
