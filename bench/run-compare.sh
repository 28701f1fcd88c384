#!/usr/bin/env bash
# Builds westream-bench (release) and runs the fan-out scenario against
# nginx-rtmp (started and stopped by the bench on 127.0.0.1:19350) and, when
# WESTREAM_PID is set, against a WeStream server already running with the
# default dev URLs. Extra arguments go to `westream-bench compare`.
#
# usage:
#   WESTREAM_PID=$(pgrep -n -x westream) bench/run-compare.sh --viewers 1000 --duration-secs 20
#   bench/run-compare.sh --viewers 100            # nginx-rtmp only
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p westream-bench
args=()
if [[ -n "${WESTREAM_PID:-}" ]]; then
    args+=(--westream-pid "$WESTREAM_PID"
           --westream-publish-url "${WESTREAM_PUBLISH_URL:-rtmp://127.0.0.1:1935/live/demo-key}"
           --westream-play-url "${WESTREAM_PLAY_URL:-rtmp://127.0.0.1:1935/live/demo}"
           --westream-flv-url "${WESTREAM_FLV_URL:-http://127.0.0.1:8080/live/demo.flv}")
fi
exec ./target/release/westream-bench compare "${args[@]}" "$@"
