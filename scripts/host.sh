# Sourced by the other scripts: makes this Debian host ready to run Berth.
# Installs what is missing (Docker Engine, a static busybox for test images,
# curl, skopeo for the registry tests, promtool for the metrics test) and
# starts the engine if none answers. Idempotent.

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker >/dev/null 2>&1 || missing+=(docker.io)
  [ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || missing+=(busybox-static)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
  # The executor nodes' TLS test makes its CA and certificates with it.
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "host: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # promtool checks the /metrics exposition (crates/berth/tests/e2e/metrics.rs).
  # Debian ships it in the prometheus package; only the tool is wanted, so
  # nothing it merely recommends (exporters) comes along.
  if ! command -v promtool >/dev/null 2>&1; then
    echo "host: installing prometheus (for promtool)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
}

# The console's end-to-end test (crates/berth/tests/e2e/console.rs) drives
# Debian's headless Chromium through chromedriver; a font makes its
# screenshots legible. Only the test suite needs them (scripts/test.sh).
ensure_browser() {
  if ! command -v chromedriver >/dev/null 2>&1 || [ ! -x /usr/lib/chromium/chromium ] \
    || [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    echo "host: installing chromium, chromium-driver and a font (for the console test)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver fonts-dejavu-core >/dev/null
  fi
}

ensure_dockerd() {
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "host: starting dockerd (no bridge, no iptables: containers get no network)"
    # setsid keeps the engine alive after this script's shell exits. The
    # executor nodes' tests pull from registries on addresses they make
    # in 198.18.0.0/15 (the benchmarking range), in plain HTTP as on
    # loopback.
    as_root setsid dockerd --bridge=none --iptables=false --insecure-registry=198.18.0.0/15 \
      >/var/log/berth-dockerd.log 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "host: the Docker Engine did not come up; see /var/log/berth-dockerd.log" >&2
  tail -n 20 /var/log/berth-dockerd.log >&2 || true
  return 1
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "host: cargo not found; install Rust first" >&2; return 1; }
}

ensure_host() {
  ensure_packages
  ensure_dockerd
  ensure_rust
}
