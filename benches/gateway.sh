#!/usr/bin/env bash
# Gateway capacity on this machine: N simulated GB28181 cameras (camera-sim, another process,
# pre-encoded H.264 + G.711 at GW_BENCH_KBPS) ingested by the gateway, each channel served to one
# RTSP client over TCP (one gst-launch process per client). For every N: gateway CPU per
# stream, input/output bitrate, RTP loss camera->gateway, frames received, and the gateway's
# added latency (frame arrival in gb28181src -> hand-over to the RTSP medias, from /metrics;
# payloading and the socket write come on top and are sub-millisecond).
#   GW_BENCH_COUNTS="10 25 50" GW_BENCH_KBPS=2000 GW_BENCH_SECONDS=20 bash benches/gateway.sh
# GW_BENCH_ARGS adds gateway flags (e.g. --rtsp-direct-tcp: readers served by the direct path).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p gst-ipcam-examples --examples -p gst-ipcam-gateway --bins
counts=${GW_BENCH_COUNTS:-"10 25 50"}
kbps=${GW_BENCH_KBPS:-2000}
secs=${GW_BENCH_SECONDS:-20}
size=${GW_BENCH_SIZE:-640x360}
# Camera media transport: udp (the GB28181 default) or tcp-passive / tcp-active.
media=${GW_BENCH_MEDIA:-udp}
export GW_SIM_PATTERN=${GW_SIM_PATTERN:-snow}   # noise: the encoder spends its whole bitrate
hz=$(getconf CLK_TCK)
base=$((20000 + RANDOM % 20000))
# The clients read as a user of their own (random password, hashed in the config).
pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
conf=$(mktemp "${TMPDIR:-/tmp}/gw-bench-XXXXXX.toml")
{
    echo '[[users]]'
    printf '%s\n' "$pw" | "$target/release/gst-ipcam-gateway" --hash-password --user bench
    echo 'permissions = [{action = "read"}, {action = "metrics"}]'
} >"$conf"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
metric_sum() { # name [label filter]
    curl -fs -u "bench:$pw" "http://127.0.0.1:$metrics/metrics" | grep -v '^#' | grep "^$1[{ ]" | grep -- "${2:-}" \
        | awk '{s += $NF} END {printf "%.0f", s}' || true
}
metric_max() {
    curl -fs -u "bench:$pw" "http://127.0.0.1:$metrics/metrics" | grep -v '^#' | grep "^$1[{ ]" \
        | awk 'BEGIN {m = 0} {if ($NF > m) m = $NF} END {printf "%.3f", m}' || true
}
cleanup() {
    for p in ${clients:-} ${cams:-} ${gw:-}; do kill -INT "$p" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
        alive=""
        for p in ${clients:-} ${cams:-} ${gw:-}; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && break
        sleep 0.2
    done
    for p in ${clients:-} ${cams:-} ${gw:-}; do kill -KILL "$p" 2>/dev/null || true; done
    rm -f "$conf"
}
trap cleanup EXIT

echo "cameras at $kbps kbit/s ($size, $GW_SIM_PATTERN), media over $media, ${secs}s per step"
printf "%-6s %-8s %-9s %-9s %-10s %-10s %-8s %-9s %-10s %-10s %s\n" \
    streams active sessions "gw cpu%" "cpu%/strm" "in Mbit/s" "lost" "frames/s" "lat avg" "lat max" "sim+clients cpu%"
for n in $counts; do
    sip=$base rtsp=$((base + 1)) metrics=$((base + 2)); base=$((base + 10))
    "$target/release/gst-ipcam-gateway" --config "$conf" --sip-address 127.0.0.1 --listen-address 127.0.0.1 \
        --sip-port "$sip" --rtsp-port "$rtsp" --metrics-port "$metrics" --simulate 0 \
        --summary-interval-s 0 --wait-timeout-s 30 --media-transport "$media" ${GW_BENCH_ARGS:-} >"$target/gw-bench-gateway.log" 2>&1 &
    gw=$!
    sleep 1
    "$target/release/examples/camera-sim" --server "127.0.0.1:$sip" --count "$n" \
        --bitrate-kbps "$kbps" --size "$size" >"$target/gw-bench-cameras.log" 2>&1 &
    cams=$!
    for _ in $(seq 1 150); do
        [ "$(metric_sum gb28181_devices_online)" -ge "$n" ] 2>/dev/null && break
        sleep 0.2
    done
    # One client process per channel, started a little apart (each DESCRIBE waits for its
    # camera's first key frame).
    clients=""
    for i in $(seq 0 $((n - 1))); do
        id=$(printf "3402000000132%07d" $((i + 1)))
        gst-launch-1.0 -q rtspsrc location="rtsp://bench:$pw@127.0.0.1:$rtsp/$id" protocols=tcp latency=0 name=c \
            c. ! fakesink sync=false c. ! fakesink sync=false >>"$target/gw-bench-clients.log" 2>&1 &
        clients="$clients $!"
        sleep 0.2
    done
    for _ in $(seq 1 300); do
        [ "$(metric_sum gb28181_streams_active)" -ge "$n" ] 2>/dev/null && break
        sleep 0.2
    done
    sleep 3
    others() { local t=$(cpu_ticks $cams); for c in $clients; do t=$((t + $(cpu_ticks $c))); done; echo $t; }
    t0=$(date +%s.%N); g0=$(cpu_ticks $gw); o0=$(others)
    b0=$(metric_sum paths_bytes_received); f0=$(metric_sum paths_frames_received)
    lat_avg=0; lat_max=0; k=0
    for _ in $(seq 1 "$secs"); do
        sleep 1
        a=$(metric_max paths_ingest_latency_ms); m=$(metric_max paths_ingest_latency_max_ms)
        lat_avg=$(echo "$lat_avg + $a" | bc -l); k=$((k + 1))
        lat_max=$(echo "if ($m > $lat_max) $m else $lat_max" | bc -l)
    done
    t1=$(date +%s.%N); g1=$(cpu_ticks $gw); o1=$(others)
    b1=$(metric_sum paths_bytes_received); f1=$(metric_sum paths_frames_received)
    el=$(echo "$t1 - $t0" | bc -l)
    cpu=$(echo "($g1 - $g0) * 100 / $hz / $el" | bc -l)
    other=$(echo "($o1 - $o0) * 100 / $hz / $el" | bc -l)
    active=$(metric_sum gb28181_streams_active); sessions=$(metric_sum rtsp_sessions)
    lost=$(metric_sum paths_rtp_packets_lost)
    printf "%-6s %-8s %-9s %-9.1f %-10.2f %-10.2f %-8s %-9.1f %-10.2f %-10.1f %.0f\n" \
        "$n" "$active" "$sessions" "$cpu" "$(echo "$cpu / $n" | bc -l)" \
        "$(echo "($b1 - $b0) * 8 / $el / 1000000" | bc -l)" "$lost" \
        "$(echo "($f1 - $f0) / $el" | bc -l)" "$(echo "$lat_avg / $k" | bc -l)" "$lat_max" "$other"
    cleanup
    clients="" cams="" gw=""
done
