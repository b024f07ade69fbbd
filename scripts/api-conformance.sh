#!/usr/bin/env bash
# Checks the live API against the OpenAPI document it serves: schemathesis
# (pinned, installed into a venv under target/) generates cases for every
# operation of /openapi.json and sends them to a `berth server` started
# here on a free loopback port, with its own data directory and admin key.
# A case fails on a 5xx, a status, content type, header or body the document
# does not declare. Any failure fails the script.
#
# Needs the Docker Engine, the agent (scripts/build-agent.sh) and
# berth-test/busybox:latest (scripts/build-test-images.sh), as the seeded
# function really runs.
#
#   BERTH_CONFORMANCE_EXAMPLES  cases per operation and phase (default 100)
#   BERTH_CONFORMANCE_SEED      replay a run (schemathesis prints its seed)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

schemathesis_version=4.32.5
venv="$root/target/schemathesis-$schemathesis_version"
examples="${BERTH_CONFORMANCE_EXAMPLES:-100}"
reports="$root/target/api-conformance"

# A venv per pinned version, so bumping the pin never reuses a stale one.
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$schemathesis_version"; then
  echo "conformance: installing schemathesis $schemathesis_version into $venv"
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian's own python3 keeps venv and pip in packages of their own.
    . "$root/scripts/host.sh"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

cargo build --locked --quiet -p berth --bin berth
berth="$root/target/debug/berth"
mapfile -t built < <("$root/scripts/build-agent.sh")
agent="${built[0]}"
docker image inspect berth-test/busybox:latest >/dev/null 2>&1 || {
  echo "conformance: berth-test/busybox:latest is missing: run scripts/build-test-images.sh" >&2
  exit 1
}

work="$(mktemp -d)"
data="$work/data"
server_pid=""
key="berth_conformance_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# Stops the server on every path out of here (success, failure, Ctrl-C):
# SIGTERM lets it remove its containers; one that does not stop in time is
# killed, and whatever containers its node left are removed by label.
cleanup() {
  local status=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$server_pid" 2>/dev/null; then
      kill -KILL "$server_pid" 2>/dev/null || true
    fi
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ -f "$data/node-id" ]; then
    docker ps -aq --filter "label=dev.berth.node=$(cat "$data/node-id")" 2>/dev/null |
      xargs -r docker rm -f >/dev/null 2>&1 || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$work/server.log" ]; then
    echo "conformance: failed; the server's log ends with:" >&2
    tail -n 40 "$work/server.log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -m 700 "$data"
BERTH_ADMIN_KEY="$key" BERTH_LOG=warn "$berth" server \
  --data-dir "$data" --listen 127.0.0.1:0 --agent "$agent" \
  </dev/null >"$work/server.log" 2>&1 &
server_pid=$!

url=""
for _ in $(seq 1 300); do
  if [ -s "$data/endpoint" ]; then
    url="$(cat "$data/endpoint")"
    curl -fsS "$url/healthz" >/dev/null 2>&1 && break
  fi
  kill -0 "$server_pid" 2>/dev/null || { echo "conformance: the server exited" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$url/healthz" >/dev/null || { echo "conformance: the server did not come up" >&2; exit 1; }
echo "conformance: berth server at $url"

api() {
  local method=$1 path=$2
  shift 2
  curl -fsS -X "$method" -H "Authorization: Bearer $key" "$@" "$url$path"
}

# Seeds what generated cases can reach real code paths with: a function
# that runs (its output is its input), a finished task of it, a tenant, and
# a function for the cases that change or delete one.
deploy() {
  api PUT "/v1/functions/$1" -H 'Content-Type: application/json' \
    -d '{"image":"berth-test/busybox:latest","command":["/bin/sh","-c","cat"],"timeout_secs":10}' >/dev/null
}
deploy echo
deploy scratch
api POST /v1/functions/echo/invoke --data-binary 'warm up' >/dev/null
task="$(api POST /v1/functions/echo/tasks -H 'Prefer: wait=30' -o /dev/null \
  -w '%header{x-berth-task-id}' --data-binary 'seed')"
[ -n "$task" ] || { echo "conformance: seeding a task failed" >&2; exit 1; }
api POST /v1/tenants -H 'Content-Type: application/json' -d '{"name":"conformance"}' >/dev/null

# Calls and reads address the seeded resources half of the time; the rest
# get generated names and ids, which must be answered as the document says.
# Cases that redeploy, delete or re-quota always address `scratch` and
# `conformance` (or nothing), never what the calls rely on: schemathesis
# reuses names it saw in answers, and a redeployed `echo` running some
# generated command would fail calls for a reason of the test's own making.
cat >"$work/schemathesis.toml" <<TOML
[dictionaries.callable]
values = ["echo"]
[dictionaries.disposable]
values = ["scratch", "missing"]
[dictionaries.tasks]
values = ["$task"]
[dictionaries.tenants]
values = ["conformance", "admin"]
[dictionaries.requota]
values = ["conformance", "missing"]

[[operations]]
include-operation-id = ["invoke_function", "invoke_function_get", "invoke_function_put", "invoke_function_patch", "invoke_function_delete", "invoke_function_path", "invoke_function_path_get", "invoke_function_path_put", "invoke_function_path_patch", "invoke_function_path_delete", "submit_task", "get_function"]
parameters = { "path.name" = { dictionary = "callable", probability = 0.5 } }

[[operations]]
include-operation-id = ["deploy_function", "patch_function", "delete_function"]
parameters = { "path.name" = { dictionary = "disposable", probability = 1.0 } }

[[operations]]
include-operation-id = ["get_task", "cancel_task", "get_task_output", "get_task_logs"]
parameters = { "path.id" = { dictionary = "tasks", probability = 0.5 } }

[[operations]]
include-operation-id = ["get_tenant", "rotate_tenant_key", "revoke_tenant_keys"]
parameters = { "path.name" = { dictionary = "tenants", probability = 0.5 } }

[[operations]]
include-operation-id = "set_tenant_quotas"
parameters = { "path.name" = { dictionary = "requota", probability = 1.0 } }
TOML

mkdir -p "$reports"
seed=()
[ -z "${BERTH_CONFORMANCE_SEED:-}" ] || seed=(--seed "$BERTH_CONFORMANCE_SEED")
# Two runs over the same document: first the operations that call and read,
# then those that change functions and tenants. Schemathesis's coverage
# phase reuses names it saw in answers whatever the config binds, so a
# single run would sooner or later redeploy `echo` with a generated command
# or mode while other cases call it. Every operation is in exactly one run:
# the second takes whatever the first does not.
calls='^(invoke_function(_path)?(_(get|put|patch|delete))?|submit_task|list_functions|get_function|list_tasks|get_task|cancel_task|get_task_output|get_task_logs|list_tenants|get_tenant|healthz|readyz|metrics|openapi)$'
conform() {
  local what=$1
  shift
  echo "== conformance: $what"
  (
    cd "$work"
    "$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$url/openapi.json" \
      "$@" \
      -H "Authorization: Bearer $key" \
      --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
      --max-examples "$examples" \
      --request-timeout 20 \
      --workers 2 \
      --no-color \
      --report junit --report-junit-path "$reports/$what.xml" \
      "${seed[@]}"
  ) | tee "$work/$what.log"
}
failed=0
conform calls --include-operation-id-regex "$calls" || failed=1
conform changes --exclude-operation-id-regex "$calls" || failed=1

# One line for the record: operations and generated cases of both runs.
summary() {
  local log="$work/$1.log"
  printf '%s: %s operations, %s\n' "$1" \
    "$(sed -n 's/^ *Tested: *//p' "$log" | head -n 1)" \
    "$(grep -E '^ +[0-9]+ generated' "$log" | head -n 1 | sed 's/^ *//')"
}
echo "conformance: $(summary calls); $(summary changes)"
exit "$failed"
