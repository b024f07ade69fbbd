#!/usr/bin/env bash
# Builds the agent, and the http-mode echo server and sandbox probe used by
# tests and test images, as statically linked binaries: the agent is
# bind-mounted into containers whose images may have no libc at all (FROM
# scratch).
#
# Prints the paths of the binaries, one a line: agent, echo server, probe.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target=x86_64-unknown-linux-gnu

# An explicit --target keeps RUSTFLAGS away from build scripts and proc
# macros, which must stay dynamically linked to run on the host. The
# binaries ship without symbols or debug info: the agent goes into every
# container, and its size is most of what it costs there.
CARGO_PROFILE_RELEASE_STRIP=symbols \
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --quiet --locked \
    -p berth-agent --features echo-http,probe \
    --bin berth-agent --bin berth-echo-http --bin berth-probe \
    --target "$target"

out="$root/target/$target/release"
for bin in berth-agent berth-echo-http berth-probe; do
  path="$out/$bin"
  # ldd lists the libraries of a dynamic executable as `name => path`; a
  # static one gets "not a dynamic executable" or "statically linked".
  if ldd "$path" 2>&1 | grep -q '=>'; then
    echo "error: $path needs shared libraries:" >&2
    ldd "$path" >&2
    exit 1
  fi
  echo "$path"
done
