#!/usr/bin/env bash
# One command from a fresh Debian machine to a running Berth: prepares the
# host, builds Berth and the image-ops example, starts `berth server` on its
# defaults (data in ~/.berth, 127.0.0.1:8080), deploys the example as the
# function `image-ops`, and prints a request to try.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/host.sh
ensure_host

echo "== building berth and its agent"
cargo build --release --locked --bin berth
berth="$root/target/release/berth"
# Warm instances run the agent inside images without libc: it must be the
# static build, placed where the server looks for it (next to berth).
mapfile -t built < <(scripts/build-agent.sh)
cp "${built[0]}" "$root/target/release/berth-agent"

echo "== building the image-ops example image"
examples/image-ops/build.sh berth-example/image-ops:latest >/dev/null

data_dir="${BERTH_DATA_DIR:-$HOME/.berth}"
listen="${BERTH_LISTEN:-127.0.0.1:8080}"
url="http://$listen"
mkdir -p "$data_dir"
if curl -fsS "$url/healthz" >/dev/null 2>&1; then
  echo "== a server already answers on $url; using it"
else
  echo "== starting berth server (log: $data_dir/server.log)"
  BERTH_DATA_DIR="$data_dir" BERTH_LISTEN="$listen" \
    setsid "$berth" server >>"$data_dir/server.log" 2>&1 < /dev/null &
  for _ in $(seq 1 100); do
    curl -fsS "$url/healthz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "$url/healthz" >/dev/null || { tail -n 30 "$data_dir/server.log" >&2; exit 1; }
fi

export BERTH_DATA_DIR="$data_dir" BERTH_URL="$url"
"$berth" fn deploy image-ops --image berth-example/image-ops:latest --memory 512MiB --timeout 30s >/dev/null
echo
echo "Berth is running on $url with the function 'image-ops' deployed."
echo "The admin API key is in $data_dir/admin.key. Try:"
echo
echo "  curl --data-binary @photo.jpg -H \"Authorization: Bearer \$(cat $data_dir/admin.key)\" \\"
echo "       '$url/v1/functions/image-ops/invoke?op=thumbnail&w=128' -o thumb.jpg"
echo
echo "or with the CLI:  $berth invoke image-ops -q 'op=rotate&deg=90' < photo.jpg > rotated.jpg"
