#!/usr/bin/env bash
# Starts nginx + libnginx-mod-rtmp from bench/nginx/nginx-rtmp.conf on
# loopback ports, with its pid, logs and temp files in a fresh temp dir.
# Prints "PID DIR"; stop it with: kill -TERM PID
#
# usage: bench/nginx/start-nginx.sh [RTMP_PORT=19350] [HTTP_PORT=18080]
# Runs as root here (the config sets `user root;`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rtmp_port="${1:-19350}"
http_port="${2:-18080}"
nginx_bin="${NGINX_BIN:-/usr/sbin/nginx}"
dir="$(mktemp -d /tmp/westream-bench-nginx.XXXXXX)"
sed -e "s|@PREFIX@|$dir|g" -e "s|@RTMP_PORT@|$rtmp_port|g" -e "s|@HTTP_PORT@|$http_port|g" \
    "$here/nginx-rtmp.conf" > "$dir/nginx.conf"
# daemon off: nginx stays our child; run it in the background and report its PID.
"$nginx_bin" -p "$dir" -c "$dir/nginx.conf" </dev/null >"$dir/stdout.log" 2>"$dir/stderr.log" &
pid=$!
for _ in $(seq 1 50); do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "nginx exited at start:" >&2
        cat "$dir/stderr.log" "$dir/error.log" >&2 2>/dev/null || true
        exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$rtmp_port") 2>/dev/null; then
        echo "$pid $dir"
        exit 0
    fi
    sleep 0.1
done
echo "nginx did not listen on 127.0.0.1:$rtmp_port within 5 s; stopping pid $pid" >&2
kill -TERM "$pid" 2>/dev/null || true
exit 1
