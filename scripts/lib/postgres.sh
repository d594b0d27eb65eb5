# PostgreSQL for the scripts that need one (sourced by scripts/test and scripts/bench).
#
# `use_postgres` sets DATABASE_URL from, in order:
#   1. DATABASE_URL, when set (each user creates and drops its own databases there);
#   2. the server at 127.0.0.1:5432, when user postgres gets in without a password;
#   3. a throwaway cluster started from the installed server binaries (initdb), stopped
#      and deleted when the calling script exits.
# With none of these it stops and says what to install.
PG_WHO=$(basename "$0")

answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

find_pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin /usr/local/opt/postgresql*/bin /opt/homebrew/opt/postgresql*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; fi
}

start_throwaway_cluster() {
  PG_BIN=$(find_pg_bin)
  if [ -z "$PG_BIN" ]; then
    cat >&2 <<MSG
$PG_WHO: no PostgreSQL server answers at 127.0.0.1:5432, DATABASE_URL is not set,
and no PostgreSQL server binaries (initdb, pg_ctl) are installed to start a throwaway one.
Install them, then run this again:
  Debian/Ubuntu:  sudo apt-get install postgresql
  Fedora:         sudo dnf install postgresql-server
  macOS:          brew install postgresql@16
or point the tests at a server where the user may create databases:
  DATABASE_URL=postgres://USER@HOST:PORT/postgres $0
MSG
    exit 1
  fi

  PG_TMP=$(mktemp -d "${TMPDIR:-/tmp}/transfer-test-pg.XXXXXX")
  local port
  PG_AS=()
  port=$((20000 + RANDOM % 30000))
  while answers 127.0.0.1 "$port"; do port=$((port + 1)); done
  # initdb refuses to run as root: run the cluster as an unprivileged user.
  if [ "$(id -u)" = 0 ]; then
    local user=postgres
    id "$user" >/dev/null 2>&1 || user=nobody
    chown "$user" "$PG_TMP"
    PG_AS=(runuser -u "$user" --)
  fi
  echo "$PG_WHO: starting a throwaway PostgreSQL ($PG_BIN) on 127.0.0.1:$port" >&2
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_TMP/data" -A trust -U postgres --no-sync >"$PG_TMP/initdb.log" 2>&1 \
    || { cat "$PG_TMP/initdb.log" >&2; exit 1; }
  stop_throwaway_cluster() {
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_TMP"
  }
  trap stop_throwaway_cluster EXIT
  # fsync off by default: this cluster is thrown away, and the tests check the service's
  # own syncs. A benchmark sets PG_FSYNC=on, so commits cost what they cost in production.
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w \
    -o "-p $port -k $PG_TMP -c listen_addresses=127.0.0.1 -c fsync=${PG_FSYNC:-off} -c max_connections=300" start >/dev/null \
    || { cat "$PG_TMP/server.log" >&2; exit 1; }
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# The local server counts only if user postgres gets in without a password (checked
# with psql when it is installed); otherwise use a throwaway cluster of our own.
local_server_usable() {
  answers 127.0.0.1 5432 || return 1
  command -v psql >/dev/null 2>&1 || return 0
  psql -w -q -h 127.0.0.1 -p 5432 -U postgres -d postgres -c 'SELECT 1' >/dev/null 2>&1
}

# Sets DATABASE_URL (unless it is set) to a server where databases may be created.
use_postgres() {
  if [ -z "${DATABASE_URL:-}" ]; then
    if local_server_usable; then
      export DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
    else
      start_throwaway_cluster
    fi
  fi
  # Never print a password.
  echo "$PG_WHO: PostgreSQL at $(printf '%s' "$DATABASE_URL" | sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#')" >&2
}

