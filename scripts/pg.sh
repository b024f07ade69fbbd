# A throwaway PostgreSQL cluster for the store's PostgreSQL tests: made
# with initdb in a temp dir, run on a free loopback port by an unprivileged
# user (postgres refuses root), stopped when the caller exits. Never a
# system service, never a network address past 127.0.0.1.
#
# Sourced by scripts/test.sh, which calls `pg_test_cluster` to export
# BERTH_TEST_PG_URL; run as `scripts/pg.sh FUNCTION ARGS...` to call one
# function (the store's restart test drives its own cluster that way).

# The server's binaries: Debian keeps them off PATH, one dir per version.
pg_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

pg_ensure_installed() {
  pg_bin >/dev/null && return 0
  echo "pg: installing postgresql"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  # The package may start a system cluster; we use none. Ours are private.
  pg_bin >/dev/null
}

# Who runs the server: ourselves, or when we are root a dedicated system
# user made for it.
pg_user() {
  if [ "$(id -u)" -ne 0 ]; then
    id -un
    return 0
  fi
  if ! id berthpg >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin berthpg
  fi
  echo berthpg
}

pg_as() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u "$(pg_user)" -- "$@"
  else
    "$@"
  fi
}

# A loopback port nothing answers on (probed, then left for postgres).
pg_free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "pg: no free port found" >&2
  return 1
}

# pg_init DIR: a new cluster in DIR/data, superuser `berth`, trusted on
# loopback and the socket in DIR only.
pg_init() {
  local dir="$1"
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown "$(pg_user)" "$dir"
  pg_as "$(pg_bin)/initdb" -D "$dir/data" -U berth -A trust -E UTF8 --locale=C --no-sync \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
}

# pg_start DIR PORT: runs the cluster until pg_stop, waiting until it
# accepts connections. Durability is off: the data is thrown away anyway.
pg_start() {
  local dir="$1" port="$2"
  pg_as "$(pg_bin)/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || { tail -n 20 "$dir/postgres.log" >&2; return 1; }
}

# pg_stop DIR: a fast shutdown (open sessions are cut), waiting for it.
pg_stop() {
  pg_as "$(pg_bin)/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null
}

pg_url() {
  echo "postgres://berth@127.0.0.1:$1/postgres"
}

# Starts a cluster for the test run and exports BERTH_TEST_PG_URL (its
# admin database; each test makes and drops a database of its own). It is
# stopped and removed when the calling shell exits; an EXIT trap set
# before this one still runs after it.
pg_test_cluster() {
  pg_ensure_installed
  BERTH_PG_DIR="$(mktemp -d /tmp/berth-pg.XXXXXX)"
  chmod 755 "$BERTH_PG_DIR"
  local port
  port="$(pg_free_port)"
  pg_init "$BERTH_PG_DIR"
  pg_start "$BERTH_PG_DIR" "$port"
  local previous
  previous="$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")"
  # shellcheck disable=SC2064 # expanded now, on purpose
  trap "pg_test_cluster_stop; $previous" EXIT
  export BERTH_TEST_PG_URL
  BERTH_TEST_PG_URL="$(pg_url "$port")"
  echo "pg: throwaway cluster on 127.0.0.1:$port ($BERTH_PG_DIR)"
}

pg_test_cluster_stop() {
  [ -n "${BERTH_PG_DIR:-}" ] || return 0
  pg_stop "$BERTH_PG_DIR" || true
  rm -rf "$BERTH_PG_DIR"
  BERTH_PG_DIR=""
}

# Run as a script: call the function named by the first argument.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  "$@"
fi
