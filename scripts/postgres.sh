#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the tests (Debian's postgresql package):
# initdb in DIR (as the postgres account when run as root: initdb refuses
# root), password-authenticated (scram) over TCP on a free loopback port.
#
#   postgres.sh start DIR             create and start; print the admin URL
#   postgres.sh stop DIR [fast|immediate]   stop (immediate: as if killed)
#   postgres.sh restart DIR           start a stopped cluster again, same port
#
# scripts/test.sh starts one for the whole run; tests that must stop the
# database under a server start their own.
set -euo pipefail
cmd=${1:?usage: postgres.sh start|stop|restart DIR} dir=${2:?DIR}
bin=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "PostgreSQL is not installed: apt-get install postgresql" >&2; exit 1; }
as=()
[ "$(id -u)" -eq 0 ] && as=(runuser -u postgres --)

run_pg_ctl() {
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 "$@"
}

case $cmd in
  start)
    mkdir -p "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    printf '%s\n' "$password" >"$dir/pw" && chmod 600 "$dir/pw"
    echo "$port" >"$dir/port"
    [ "$(id -u)" -eq 0 ] && chown -R postgres "$dir"
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U palisade --pwfile="$dir/pw" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    run_pg_ctl -o "-k $dir -p $port -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (pid $(head -n 1 "$dir/data/postmaster.pid"))" >&2
    echo "postgres://palisade:$password@127.0.0.1:$port/postgres"
    ;;
  stop)
    run_pg_ctl -m "${3:-fast}" stop >/dev/null
    ;;
  restart)
    port=$(cat "$dir/port")
    run_pg_ctl -o "-k $dir -p $port -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    ;;
  *)
    echo "usage: postgres.sh start|stop|restart DIR" >&2
    exit 2
    ;;
esac
