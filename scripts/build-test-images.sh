#!/usr/bin/env bash
# Builds every image the test suite runs, FROM scratch and from local
# binaries only: nothing is pulled from a registry.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export DOCKER_BUILDKIT=0

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT

# busybox: a shell and coreutils in one static binary, for functions that
# are a line of shell (cat, exit codes, sleeps, stderr floods).
# Debian's busybox-static package puts its static build here.
busybox=/bin/busybox
mkdir -p "$ctx/busybox/bin"
cp "$busybox" "$ctx/busybox/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ctx/busybox/bin/$applet"
done
cat > "$ctx/busybox/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY bin /bin
ENV PATH=/bin
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat"]
DOCKERFILE
docker build -q -t berth-test/busybox:latest "$ctx/busybox" >/dev/null
echo "built berth-test/busybox:latest"

# echo-http: a long-lived HTTP server for http mode, built statically with
# the agent (which every warm instance needs anyway).
mapfile -t built < <("$root/scripts/build-agent.sh")
mkdir -p "$ctx/echo-http"
cp "${built[1]}" "$ctx/echo-http/echo-http"
cat > "$ctx/echo-http/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY echo-http /echo-http
ENTRYPOINT ["/echo-http"]
DOCKERFILE
docker build -q -t berth-test/echo-http:latest "$ctx/echo-http" >/dev/null
echo "built berth-test/echo-http:latest"

# nonroot: busybox with a non-root USER of its own, which Berth keeps.
mkdir -p "$ctx/nonroot"
cat > "$ctx/nonroot/Dockerfile" <<'DOCKERFILE'
FROM berth-test/busybox:latest
USER 4321:4321
DOCKERFILE
docker build -q -t berth-test/nonroot:latest "$ctx/nonroot" >/dev/null
echo "built berth-test/nonroot:latest"

# probe: tries mount, a raw socket and ptrace from inside, for the sandbox
# tests.
mkdir -p "$ctx/probe"
cp "${built[2]}" "$ctx/probe/probe"
cat > "$ctx/probe/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY probe /probe
ENTRYPOINT ["/probe"]
DOCKERFILE
docker build -q -t berth-test/probe:latest "$ctx/probe" >/dev/null
echo "built berth-test/probe:latest"

if [ "${1:-}" != "--no-examples" ]; then
  "$root/examples/image-ops/build.sh" berth-example/image-ops:latest
fi
