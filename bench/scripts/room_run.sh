#!/usr/bin/env bash
# One room bench run (issue #7's scenario) against a fresh server, with the
# figures that decide it on one line: chat p50/p99, gift p99, server CPU and
# RSS, bench CPU, events seen, fan-out rounds and writes, and the host's
# steal (%) per 5 s from vmstat (discard runs with steal).
#
#   SRV=.../release/westream BENCH=.../release/westream-bench \
#     CONFIG=configs/dev.toml bench/scripts/room_run.sh LABEL
#
# BENCH_ARGS adds flags to the bench's command (--listen-pause-us 0: the
# listeners wait without the 1 ms pause, as before 2026-12-04 evening).
# PERF=1 also records `perf record -g` of the server for 10 s mid-run into
# the run's data folder (printed at the end). Waits for the last run's
# TIME_WAIT sockets to clear first. Stops only the server it started.
set -u
cd "$(dirname "$0")/../.."
ulimit -n 20000
T=${CARGO_TARGET_DIR:-target}
SRV=${SRV:-$T/release/westream}
BENCH=${BENCH:-$T/release/westream-bench}
CONFIG=${CONFIG:-configs/dev.toml}
for i in $(seq 1 90); do tw=$(ss -s | sed -n "s/.*timewait \([0-9]*\).*/\1/p"); [ "${tw:-0}" -lt 500 ] && break; sleep 1; done
D=$(mktemp -d /tmp/roomdata.XXXX)
echo "${1:-run}" > $D/label
$SRV serve --config $CONFIG --data-dir $D --http-listen 127.0.0.1:28080 --rtmp-listen 127.0.0.1:21935 > $D/server.log 2>&1 &
PID=$!
for i in $(seq 1 50); do curl -sf http://127.0.0.1:28080/healthz >/dev/null && break; sleep 0.2; done
vmstat 5 > $D/vmstat.log &
VM=$!
if [ -n "${PERF:-}" ]; then (sleep 12; perf record -F 999 -g -o $D/perf.data -p $PID -- sleep 10 >/dev/null 2>&1) & fi
$BENCH room --url http://127.0.0.1:28080 --channel demo --clients 10000 --senders 300 --chat-per-sec 100 --gifts-per-sec 50 --duration-secs 25 --server-pid $PID ${BENCH_ARGS:-} > $D/report.json 2> $D/bench.err; echo "bench rc $?" >> $D/bench.err
curl -s http://127.0.0.1:28080/metrics > $D/metrics.all
grep -E "ws_fanout_(round_seconds_(sum|count)|writes_total)" $D/metrics.all > $D/metrics.txt
kill $VM; kill $PID; wait $PID 2>/dev/null
python3 - "$D" "${1:-run}" <<'PY'
import json,sys
d=sys.argv[1]; t=open(d+'/report.json').read(); r=json.loads(t[t.index('{'):])
st=[l.split()[-1] for l in open(d+'/vmstat.log').read().splitlines()[2:]]
m={l.split()[0].split('{')[0]:float(l.split()[-1]) for l in open(d+'/metrics.txt') if not l.startswith('#')}
cnt=m.get('westream_control_ws_fanout_round_seconds_count',0); s=m.get('westream_control_ws_fanout_round_seconds_sum',0)
print(sys.argv[2], 'chat p50/p99', r['chat_latency_ms'].get('p50'), r['chat_latency_ms'].get('p99'), 'gift p99', r['gift_latency_ms'].get('p99'),
 'cpu%', round(r['server_cpu_percent_of_one_core'] or 0,1), 'rss MB', (r['server_rss_kb_after'] or 0)//1024, 'bench cpu', r['bench_cpu_s'],
 'seen', r['chat_events_seen_by_measuring_clients'], r['gift_events_seen_by_measuring_clients'], 'exp/client', r['events_expected_per_measuring_client'], 'meas', r['measuring_clients'],
 'closed', r['closed_by_server'], 'rounds', int(cnt), 'avg round ms', round(s/cnt*1000,1) if cnt else None, 'writes', m.get('westream_control_ws_fanout_writes_total'), 'steal', ' '.join(st))
PY
echo "data: $D"
