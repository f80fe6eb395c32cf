#!/usr/bin/env bash
# GB28181 benchmarks (loopback only, bounded durations):
#  1. gb28181-load: registrations/s and keepalive CPU of the shared SIP endpoint (10,000 devices).
#  2. gb28181-streams: N concurrent live streams (25 fps, ~4 Mbit/s PS over RTP/UDP each) sent by
#     one process (N x appsrc ! gb28181sink) and received and demuxed by another
#     (N x gb28181src ! psdemux ! fakesink on one shared SIP endpoint), whose CPU is measured alone.
#
#   benches/gb28181.sh [N ...]        (default: 25 50 100)
#
# Environment: DURATION (receiver measurement window, s; 20), DEVICES (load tool; 10000),
# LOAD_SECONDS (load tool steady state, s; 60), LOAD_WINDOW (registrations in flight per
# load-tool socket; 8), SKIP_LOAD=1, PORT (first SIP port; 15060, +1 per run).
# Stops going up in N as soon as a run shows lost packets or streams that fell behind.
# Both processes of a run are killed at the end whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
DURATION=${DURATION:-20}
DEVICES=${DEVICES:-10000}
LOAD_SECONDS=${LOAD_SECONDS:-60}
# 8 registrations in flight per client socket, as the figures in README.md were measured
# (the tool's default of 64 is latency-bound: about 1,300/s instead of about 10,000/s).
LOAD_WINDOW=${LOAD_WINDOW:-8}
PORT=${PORT:-15060}
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(25 50 100)

cargo build --release -p gst-plugin-gb28181 --example gb28181-load --example gb28181-streams >&2
BIN="$CARGO_TARGET_DIR/release/examples"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gb28181-bench.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

echo "== machine: $(nproc) cores, net.core.rmem_default=$(cat /proc/sys/net/core/rmem_default)" \
     "rmem_max=$(cat /proc/sys/net/core/rmem_max)"

if [ "${SKIP_LOAD:-0}" != 1 ]; then
    echo "== gb28181-load: $DEVICES devices, $LOAD_WINDOW in flight per socket, ${LOAD_SECONDS}s of keepalives (60 s interval)"
    timeout $(( LOAD_SECONDS + 180 )) "$BIN/gb28181-load" --devices "$DEVICES" --window "$LOAD_WINDOW" \
        --duration-s "$LOAD_SECONDS" | grep -v ' registered after '
fi

field() { # field <key> <RESULT line>
    sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"
}

for N in "${COUNTS[@]}"; do
    echo "== $N streams, ${DURATION}s measurement"
    RECV_LOG="$OUT/recv-$N.txt"
    SEND_LOG="$OUT/send-$N.txt"
    START_TIMEOUT=$(( 30 + N / 2 ))
    STOP="$OUT/stop-$N"
    # The sender sends until the receiver has finished its window and created $STOP (or for
    # at most DURATION + 120 s).
    "$BIN/gb28181-streams" --role recv --streams "$N" --sip-port "$PORT" --duration-s "$DURATION" \
        --warmup-s 3 --start-timeout-s "$START_TIMEOUT" --end-timeout-s 30 --stop-file "$STOP" >"$RECV_LOG" 2>&1 &
    RECV=$!
    PIDS+=("$RECV")
    sleep 1
    "$BIN/gb28181-streams" --role send --streams "$N" --server "127.0.0.1:$PORT" \
        --duration-s $(( DURATION + 120 )) --start-timeout-s "$START_TIMEOUT" --stop-file "$STOP" >"$SEND_LOG" 2>&1 &
    SEND=$!
    PIDS+=("$SEND")
    LIMIT=$(( START_TIMEOUT + DURATION + 180 ))
    for _ in $(seq $(( LIMIT * 2 ))); do
        kill -0 "$RECV" 2>/dev/null || kill -0 "$SEND" 2>/dev/null || break
        sleep 0.5
    done
    kill "$RECV" "$SEND" 2>/dev/null || true
    wait "$RECV" 2>/dev/null || true
    wait "$SEND" 2>/dev/null || true
    grep -v -e '^RESULT' -e 'per stream:' "$SEND_LOG" | sed 's/^/  /' || true
    grep -v -e '^RESULT' -e 'per stream:' "$RECV_LOG" | sed 's/^/  /' || true
    R=$(grep '^RESULT role=recv' "$RECV_LOG" || true)
    S=$(grep '^RESULT role=send' "$SEND_LOG" || true)
    if [ -z "$R" ] || [ -z "$S" ]; then
        echo "  run incomplete (logs in $OUT)"
        break
    fi
    echo "  SUMMARY N=$N: streams started $(field started "$R")/$N (sender: $(field started "$S")); " \
         "frames sent $(field frames_sent "$S"), received $(field total_frames "$R") (demuxed video)" \
         "/ $(field total_ps_frames "$R") (PS); RTP packets lost inside the receiver" \
         "$(field total_lost "$R") (window: $(field window_lost "$R") of $(field window_packets "$R"));" \
         "streams behind $(field behind "$R"); receiver CPU $(field cpu_pct "$R") % of one core" \
         "= $(field cpu_pct_per_stream "$R") % per stream; sender CPU $(field cpu_s "$S") s" \
         "in $(field wall_s "$S") s"
    if [ "$(field window_lost "$R")" != 0 ] || [ "$(field behind "$R")" != 0 ]; then
        echo "  (stopping: this machine does not keep up with $N streams)"
        break
    fi
    PORT=$(( PORT + 1 ))
done
echo "logs: $OUT"
