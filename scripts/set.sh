#!/usr/bin/env bash
# A set to try out on one machine: a throwaway PostgreSQL, a throwaway
# SeaweedFS (S3) and N `berth server` replicas (default 3) on loopback,
# sharing one admin key. Prints how to reach them and runs until Ctrl-C,
# then stops every replica cleanly and throws the database and the blobs
# away.
#
#   scripts/set.sh [N]
#
# Put any HTTP load balancer in front of the printed URLs (each replica
# serves the whole API and the registry); here, talk to any of them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
replicas="${1:-3}"
. scripts/host.sh
ensure_host

echo "== building berth and its agent"
cargo build --release --locked --bin berth
berth="$root/target/release/berth"
mapfile -t built < <(scripts/build-agent.sh)
cp "${built[0]}" "$root/target/release/berth-agent"

. scripts/pg.sh
pg_test_cluster
. scripts/seaweed.sh
seaweed_start

work="$(mktemp -d -t berth-set.XXXXXX)"
export BERTH_STORE="$BERTH_TEST_PG_URL"
export BERTH_BLOB_STORE="${BERTH_TEST_S3_URL%/run}/set"
export BERTH_ADMIN_KEY="berth_$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
pids=()
stop_replicas() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
previous="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")"
# shellcheck disable=SC2064 # expanded now, on purpose
trap "stop_replicas${previous:+; $previous}" EXIT
trap 'exit 130' INT TERM

urls=()
for i in $(seq 1 "$replicas"); do
  dir="$work/replica-$i"
  mkdir -p "$dir"
  "$berth" server --data-dir "$dir" --listen 127.0.0.1:0 >"$dir.log" 2>&1 </dev/null &
  pids+=("$!")
  for _ in $(seq 1 200); do [ -s "$dir/endpoint" ] && break; sleep 0.1; done
  [ -s "$dir/endpoint" ] || { tail -n 20 "$dir.log" >&2; exit 1; }
  urls+=("$(cat "$dir/endpoint")")
done

cat <<TEXT

A set of $replicas replicas is running:
$(for i in "${!urls[@]}"; do echo "  replica $((i + 1)): ${urls[$i]}   (log: $work/replica-$((i + 1)).log)"; done)
  PostgreSQL:  $BERTH_STORE
  blobs:       $BERTH_BLOB_STORE at $AWS_ENDPOINT_URL
  admin key:   in BERTH_ADMIN_KEY of this shell's children; try, from another shell:

    export BERTH_API_KEY=$BERTH_ADMIN_KEY
    berth fn deploy hello --server ${urls[0]} --image <image> -- /bin/sh -c cat
    echo hi | berth invoke hello --server ${urls[$((replicas - 1))]}

Ctrl-C stops everything and throws the data away.
TEXT
wait
