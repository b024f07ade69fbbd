#!/usr/bin/env bash
# Push and pull through Berth's built-in registry against the reference
# registry (CNCF distribution, Debian's docker-registry package), both on
# loopback, both driven by the same Docker Engine with the same image.
# Prints the median of N runs for each and the ratio berth/distribution
# (below 1.0 means Berth is faster).
#
#   scripts/bench-registry.sh [RUNS]        (default 3)
#
# Each run builds a fresh ~100 MB image (5 layers of 20 MB random data,
# FROM scratch, nothing pulled), so no registry or engine cache helps
# either side; the order of the two registries alternates between runs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
runs="${1:-3}"
layers=5
layer_mb=20

. scripts/host.sh
ensure_host

if ! command -v docker-registry >/dev/null 2>&1; then
  echo "bench: installing Debian's docker-registry (CNCF distribution)"
  as_root apt-get update -qq
  # policy-rc.d stops the package from starting its own service: the
  # benchmark runs its own instance on its own port and storage.
  policy=/usr/sbin/policy-rc.d
  had_policy=0
  [ -e "$policy" ] && had_policy=1
  [ "$had_policy" = 1 ] || { printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null; as_root chmod +x "$policy"; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
  [ "$had_policy" = 1 ] || as_root rm -f "$policy"
fi

echo "bench: building berth (release)"
cargo build --release -q -p berth
berth="$root/target/release/berth"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^(127\.0\.0\.1:[0-9]+/admin/bench|berth-bench/img):' \
    | xargs -r docker rmi -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
export DOCKER_CONFIG="$work/docker"
export DOCKER_BUILDKIT=0

# The reference registry: filesystem storage, no auth, quiet.
dist_port="${DIST_PORT:-15500}"
mkdir -p "$work/dist"
cat > "$work/dist.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/dist
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$dist_port
YAML
docker-registry serve "$work/dist.yml" >"$work/dist.log" 2>&1 &
pids+=($!)

# Berth, all-in-one, on a port of its choosing.
BERTH_LOG=warn "$berth" server --data-dir "$work/berth" --listen 127.0.0.1:0 >"$work/berth.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  [ -s "$work/berth/endpoint" ] && curl -fs "$(cat "$work/berth/endpoint")/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$dist_port/v2/" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$dist_port/v2/" >/dev/null || { cat "$work/dist.log"; exit 1; }
berth_host="$(sed 's#^http://##' "$work/berth/endpoint")"
dist_host="127.0.0.1:$dist_port"
"$berth" login --data-dir "$work/berth" >/dev/null 2>&1

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

build_image() {
  local ctx="$work/ctx"
  rm -rf "$ctx"; mkdir -p "$ctx"
  printf 'FROM scratch\n' > "$ctx/Dockerfile"
  for i in $(seq 1 "$layers"); do
    head -c "$((layer_mb * 1024 * 1024))" /dev/urandom > "$ctx/layer$i"
    printf 'COPY layer%s /layer%s\n' "$i" "$i" >> "$ctx/Dockerfile"
  done
  # The legacy builder warns about its deprecation on stderr; only a
  # failure matters.
  docker build -q -t berth-bench/img:latest "$ctx" >/dev/null 2>"$work/build.log" \
    || { cat "$work/build.log" >&2; exit 1; }
}

# Removes every tag of the image, so its layers leave the engine and a
# pull has to fetch them all.
forget_image() {
  docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^(127\.0\.0\.1:[0-9]+/admin/bench|berth-bench/img):' \
    | xargs -r docker rmi -f >/dev/null
}

declare -A push pull
push[berth]=""; push[dist]=""; pull[berth]=""; pull[dist]=""
for run in $(seq 1 "$runs"); do
  build_image
  if [ $((run % 2)) -eq 1 ]; then order="dist berth"; else order="berth dist"; fi
  for reg in $order; do
    host="$dist_host"; [ "$reg" = berth ] && host="$berth_host"
    ref="$host/admin/bench:run$run"
    docker tag berth-bench/img:latest "$ref"
    sync
    t0=$(now); docker push -q "$ref" >/dev/null; t1=$(now)
    push[$reg]+=" $(elapsed "$t0" "$t1")"
  done
  for reg in $order; do
    host="$dist_host"; [ "$reg" = berth ] && host="$berth_host"
    ref="$host/admin/bench:run$run"
    forget_image
    sync
    t0=$(now); docker pull -q "$ref" >/dev/null; t1=$(now)
    pull[$reg]+=" $(elapsed "$t0" "$t1")"
  done
  forget_image
  echo "run $run: push berth ${push[berth]##* }s, distribution ${push[dist]##* }s; pull berth ${pull[berth]##* }s, distribution ${pull[dist]##* }s"
done

# The registries alone, without the engine's compression and extraction:
# one 100 MB blob per run pushed as Docker does (POST, one streamed chunked
# PATCH, PUT ?digest=) and fetched with curl.
key="$(cat "$work/berth/admin.key")"
location() { tr -d '\r' | awk -F': ' 'tolower($1) == "location" { print $2 }'; }
absolute() { case "$2" in http*) echo "$2" ;; *) echo "http://$1$2" ;; esac; }
blob_push() { # host repo auth...
  local host="$1" repo="$2"; shift 2
  local loc t0 t1
  t0=$(now)
  loc=$(curl -fsS -D - -o /dev/null -X POST "$@" "http://$host/v2/$repo/blobs/uploads/" | location)
  loc=$(absolute "$host" "$loc")
  loc=$(curl -fsS -D - -o /dev/null -X PATCH "$@" -H 'Transfer-Encoding: chunked' \
    -H 'Content-Type: application/octet-stream' -T "$work/blob" "$loc" | location)
  loc=$(absolute "$host" "$loc")
  case "$loc" in *\?*) loc="$loc&digest=$digest" ;; *) loc="$loc?digest=$digest" ;; esac
  curl -fsS -o /dev/null -X PUT "$@" "$loc"
  t1=$(now)
  elapsed "$t0" "$t1"
}
blob_pull() { # host repo auth...
  local host="$1" repo="$2"; shift 2
  curl -fsS -o /dev/null -w '%{time_total}' "$@" "http://$host/v2/$repo/blobs/$digest"
}
declare -A bpush bpull
bpush[berth]=""; bpush[dist]=""; bpull[berth]=""; bpull[dist]=""
for run in $(seq 1 "$runs"); do
  head -c $((100 * 1024 * 1024)) /dev/urandom > "$work/blob"
  digest="sha256:$(sha256sum "$work/blob" | cut -d' ' -f1)"
  sync
  bpush[dist]+=" $(blob_push "$dist_host" admin/blob)"
  bpush[berth]+=" $(blob_push "$berth_host" admin/blob -u "admin:$key")"
  bpull[dist]+=" $(blob_pull "$dist_host" admin/blob)"
  bpull[berth]+=" $(blob_pull "$berth_host" admin/blob -u "admin:$key")"
done

# shellcheck disable=SC2086
{
  pb=$(median ${push[berth]}); pd=$(median ${push[dist]})
  lb=$(median ${pull[berth]}); ld=$(median ${pull[dist]})
  bpb=$(median ${bpush[berth]}); bpd=$(median ${bpush[dist]})
  blb=$(median ${bpull[berth]}); bld=$(median ${bpull[dist]})
}
mb=$((layers * layer_mb))
printf '\nregistry benchmark: %s MB image (%s layers), median of %s runs, loopback\n' "$mb" "$layers" "$runs"
printf '%-6s %12s %16s %10s\n' "" "berth (s)" "distribution (s)" "ratio"
printf '%-6s %12.2f %16.2f %9sx\n' push "$pb" "$pd" "$(ratio "$pb" "$pd")"
printf '%-6s %12.2f %16.2f %9sx\n' pull "$lb" "$ld" "$(ratio "$lb" "$ld")"
printf '\nblob only: 100 MB, curl, median of %s runs\n' "$runs"
printf '%-6s %12.3f %16.3f %9sx\n' push "$bpb" "$bpd" "$(ratio "$bpb" "$bpd")"
printf '%-6s %12.3f %16.3f %9sx\n' pull "$blb" "$bld" "$(ratio "$blb" "$bld")"
