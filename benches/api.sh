#!/usr/bin/env bash
# The control API with N simulated GB28181 cameras registered (camera-sim, another process; no
# viewers, so no media): the gateway's resident memory and CPU idle (registrations and
# keepalives only), then while answering the API (GET /v1/devices and GET /v1/devices/{id}
# over keep-alive connections, one client) for S seconds: requests answered, time per
# request, CPU and memory. During the API phase the simulated cameras are paused (SIGSTOP,
# SIGCONT after): 100 of them mux their clip all the time (a real camera encodes all the
# time too) and take ~1.9 cores of this 2-core machine, which left the gateway no CPU to
# answer with (an earlier run measured that: ~34 ms a request). The phase is short against
# the keepalive timeout, so the cameras stay online.
#   API_BENCH_CAMERAS=100 API_BENCH_SECONDS=20 bash benches/api.sh
#   SKIP_BUILD=1 CARGO_TARGET_DIR=... reuses release binaries built before.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
[ -n "${SKIP_BUILD:-}" ] || cargo build -q --release -p gst-ipcam-examples --examples -p gst-ipcam-gateway --bins
n=${API_BENCH_CAMERAS:-100}
secs=${API_BENCH_SECONDS:-20}
base=$((20000 + RANDOM % 20000))
sip=$base metrics=$((base + 2)) rtsp=$((base + 1))
pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
conf=$(mktemp "${TMPDIR:-/tmp}/gw-api-bench-XXXXXX.toml")
{
    echo '[[users]]'
    printf '%s\n' "$pw" | "$target/release/gst-ipcam-gateway" --hash-password --user bench
    echo 'permissions = [{action = "api"}, {action = "metrics"}]'
} >"$conf"
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
online() {
    curl -fs -u "bench:$pw" "http://127.0.0.1:$metrics/metrics" | grep '^gb28181_devices_online ' \
        | awk '{print $2}' || echo 0
}
cleanup() {
    [ -n "${cams:-}" ] && kill -CONT "$cams" 2>/dev/null || true
    for p in ${cams:-} ${gw:-}; do kill -INT "$p" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
        alive=""
        for p in ${cams:-} ${gw:-}; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && break
        sleep 0.2
    done
    for p in ${cams:-} ${gw:-}; do kill -KILL "$p" 2>/dev/null || true; done
    rm -f "$conf" "${urls:-}"
}
trap cleanup EXIT

"$target/release/gst-ipcam-gateway" --config "$conf" --sip-address 127.0.0.1 --listen-address 127.0.0.1 \
    --sip-port "$sip" --rtsp-port "$rtsp" --metrics-port "$metrics" --simulate 0 \
    --summary-interval-s 0 >"$target/gw-api-bench-gateway.log" 2>&1 &
gw=$!
sleep 1
"$target/release/examples/camera-sim" --server "127.0.0.1:$sip" --count "$n" \
    --bitrate-kbps 100 --size 160x120 >"$target/gw-api-bench-cameras.log" 2>&1 &
cams=$!
for _ in $(seq 1 300); do
    [ "$(online)" -ge "$n" ] 2>/dev/null && break
    sleep 0.2
done
registered=$(online)
sleep 3
# Idle: keepalives only.
t0=$(date +%s.%N); g0=$(cpu_ticks $gw)
sleep "$secs"
t1=$(date +%s.%N); g1=$(cpu_ticks $gw)
idle_cpu=$(echo "($g1 - $g0) * 100 / $hz / ($t1 - $t0)" | bc -l)
idle_rss=$(rss_mib $gw)
# The API: batches of 200 requests per curl (one keep-alive connection), for $secs seconds.
urls=$(mktemp "${TMPDIR:-/tmp}/gw-api-bench-urls-XXXXXX")
for i in $(seq 1 100); do
    id=$(printf "3402000000132%07d" $(( (i - 1) % n + 1 )))
    echo "url = \"http://127.0.0.1:$metrics/v1/devices\""
    echo 'output = "/dev/null"'
    echo "url = \"http://127.0.0.1:$metrics/v1/devices/$id\""
    echo 'output = "/dev/null"'
done >"$urls"
requests=0 failed=0
kill -STOP "$cams"
t0=$(date +%s.%N); g0=$(cpu_ticks $gw)
end=$(( $(date +%s) + secs ))
while [ "$(date +%s)" -lt "$end" ]; do
    codes=$(curl -s -u "bench:$pw" -K "$urls" -w '%{http_code}\n')
    requests=$((requests + $(echo "$codes" | wc -l)))
    failed=$((failed + $(echo "$codes" | grep -vc '^200$' || true)))
done
t1=$(date +%s.%N); g1=$(cpu_ticks $gw)
kill -CONT "$cams"
el=$(echo "$t1 - $t0" | bc -l)
load_cpu=$(echo "($g1 - $g0) * 100 / $hz / $el" | bc -l)
load_rss=$(rss_mib $gw)
printf "%-8s %-10s %-14s %-12s %-10s %-10s %-12s %-14s %s\n" cameras registered "RSS idle MiB" "CPU idle %" \
    requests failed "req/s" "CPU under API %" "RSS after MiB"
printf "%-8s %-10s %-14s %-12.2f %-10s %-10s %-12.0f %-14.1f %s\n" "$n" "$registered" "$idle_rss" "$idle_cpu" \
    "$requests" "$failed" "$(echo "$requests / $el" | bc -l)" "$load_cpu" "$load_rss"
