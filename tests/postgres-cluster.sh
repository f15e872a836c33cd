#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, for tests (Debian's postgresql package).
#
#   tests/postgres-cluster.sh start DIR    # initdb DIR/data (first time), start on a free
#                                          # port, print the URL of its `postgres` database
#   tests/postgres-cluster.sh stop DIR     # stop it (DIR stays; remove it yourself)
#
# DIR's parents must be searchable by the cluster's owner.
#
# The cluster's only role is `edgefleet` (trust authentication, loopback only). PostgreSQL
# refuses to run as root, so as root the cluster belongs to the `postgres` user.
set -euo pipefail
cmd="${1:?start|stop}"
dir="${2:?cluster directory}"

bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [[ -z "$bindir" ]]; then
  echo "postgres-cluster.sh: no PostgreSQL in /usr/lib/postgresql (apt-get install postgresql)" >&2
  exit 1
fi
as_owner=()
if (( EUID == 0 )); then
  as_owner=(runuser -u postgres --)
fi

case "$cmd" in
  start)
    mkdir -p "$dir"
    if (( EUID == 0 )); then chown postgres: "$dir"; fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
      "${as_owner[@]}" "$bindir/initdb" -D "$dir/data" -U edgefleet -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    # A free port: ask the kernel, then let PostgreSQL take it (a race with another start is
    # retried).
    for _ in 1 2 3 4 5; do
      port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
      if "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
          -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400" >/dev/null; then
        echo "postgres://edgefleet@127.0.0.1:$port/postgres"
        exit 0
      fi
    done
    cat "$dir/server.log" >&2
    exit 1
    ;;
  stop)
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  *)
    echo "postgres-cluster.sh: start|stop DIR" >&2
    exit 2
    ;;
esac
