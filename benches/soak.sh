#!/usr/bin/env bash
# Soak: the gateway for SOAK_MINUTES with SOAK_CAMERAS simulated cameras (camera-sim, another
# process), HLS and recording on, and one RTSP reader per camera joining and leaving in rounds
# (each round: every reader connects, reads SOAK_READ_S seconds with ffmpeg -c copy, leaves).
# Every SOAK_SAMPLE_S seconds the gateway's RSS, open files, threads and CPU go to a CSV, and
# benches/soak-plot.py draws them (PNG). Goal: flat after warm-up (RSS within 5 % of its
# 10-minute value), no frame lost inside the gateway, every reader of every round gets frames.
#   SOAK_CAMERAS=50 SOAK_MINUTES=30 bash benches/soak.sh      (defaults)
# Output: target/soak/soak.csv, target/soak/rounds.csv, target/soak/soak.png, a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p gst-ipcam-examples --examples -p gst-ipcam-gateway --bins
cams_n=${SOAK_CAMERAS:-50}
minutes=${SOAK_MINUTES:-30}
read_s=${SOAK_READ_S:-20}
sample_s=${SOAK_SAMPLE_S:-10}
kbps=${SOAK_KBPS:-1000}
out=$target/soak
rm -rf "$out"; mkdir -p "$out/rec" "$out/hls"
chmod 700 "$out/hls"
hz=$(getconf CLK_TCK)
base=$((20000 + RANDOM % 20000))
sip=$base rtsp=$((base + 1)) metrics=$((base + 2)) hls=$((base + 3))
pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
conf=$out/gateway.toml
{
    echo '[[users]]'
    printf '%s\n' "$pw" | "$target/release/gst-ipcam-gateway" --hash-password --user soak
    echo 'permissions = [{action = "read"}, {action = "metrics"}, {action = "playback"}]'
} >"$conf"

metric_sum() { # name
    curl -fs -u "soak:$pw" "http://127.0.0.1:$metrics/metrics" | grep -v '^#' | grep "^$1[{ ]" \
        | awk '{s += $NF} END {printf "%.0f", s}' || true
}
cleanup() {
    for p in ${readers:-} ${cams:-} ${gw:-}; do kill -INT "$p" 2>/dev/null || true; done
    for _ in $(seq 1 100); do
        alive=""
        for p in ${readers:-} ${cams:-} ${gw:-}; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && break
        sleep 0.2
    done
    for p in ${readers:-} ${cams:-} ${gw:-}; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

"$target/release/gst-ipcam-gateway" --config "$conf" --sip-address 127.0.0.1 --listen-address 127.0.0.1 \
    --sip-port "$sip" --rtsp-port "$rtsp" --metrics-port "$metrics" --hls-port "$hls" --hls true \
    --hls-dir "$out/hls" --record-dir "$out/rec" --record-segment-s 60 --simulate 0 \
    --summary-interval-s 0 --wait-timeout-s 30 >"$out/gateway.log" 2>&1 &
gw=$!
for _ in $(seq 1 100); do curl -fs -u "soak:$pw" "http://127.0.0.1:$metrics/metrics" >/dev/null && break; sleep 0.1; done
"$target/release/examples/camera-sim" --server "127.0.0.1:$sip" --count "$cams_n" \
    --bitrate-kbps "$kbps" >"$out/cameras.log" 2>&1 &
cams=$!
for _ in $(seq 1 300); do
    [ "$(metric_sum gb28181_streams_active)" -ge "$cams_n" ] 2>/dev/null && break
    sleep 0.2
done
echo "soak: $cams_n cameras at $kbps kbit/s, HLS and recording on, $minutes min, readers ${read_s}s a round"

echo "t_s,rss_kb,fds,threads,cpu_pct,streams_active,rtsp_sessions,readers_running,rtp_lost,frames_received" >"$out/soak.csv"
echo "round,t_s,readers,readers_with_frames,min_frames,max_frames" >"$out/rounds.csv"
start=$(date +%s)
end=$((start + minutes * 60))
round=0 readers="" last_ticks=$(awk '{print $14 + $15}' /proc/$gw/stat) last_t=$(date +%s.%N)
next_sample=$start
start_round() {
    round=$((round + 1)); readers=""
    rm -f "$out"/reader-*.txt "$out"/reader-*.log
    for i in $(seq 0 $((cams_n - 1))); do
        id=$(printf "3402000000132%07d" $((i + 1)))
        timeout $((read_s + 30)) ffmpeg -nostdin -v warning -rtsp_transport tcp -i "rtsp://soak:$pw@127.0.0.1:$rtsp/$id" \
            -t "$read_s" -map 0:v -c copy -f null - -progress "$out/reader-$i.txt" >/dev/null 2>"$out/reader-$i.log" &
        readers="$readers $!"
    done
    round_started=$(date +%s)
}
finish_round() {
    local with=0 min=999999 max=0
    for i in $(seq 0 $((cams_n - 1))); do
        f=$( (grep '^frame=' "$out/reader-$i.txt" 2>/dev/null || true) | tail -1 | cut -d= -f2)
        f=${f:-0}
        if [ "$f" -eq 0 ]; then
            # Kept for the report: what the reader said (warnings and errors).
            cp "$out/reader-$i.log" "$out/failed-round$round-reader$i.log" 2>/dev/null || true
        fi
        [ "$f" -gt 0 ] && with=$((with + 1))
        [ "$f" -lt "$min" ] && min=$f
        [ "$f" -gt "$max" ] && max=$f
    done
    echo "$round,$(( $(date +%s) - start )),$cams_n,$with,$min,$max" >>"$out/rounds.csv"
    readers=""
}
start_round
while [ "$(date +%s)" -lt "$end" ]; do
    kill -0 "$gw" 2>/dev/null || { echo "soak: the gateway died"; exit 1; }
    running=0
    for p in $readers; do kill -0 "$p" 2>/dev/null && running=$((running + 1)); done
    if [ -n "$readers" ] && [ "$running" -eq 0 ]; then finish_round; start_round; fi
    now=$(date +%s)
    if [ "$now" -ge "$next_sample" ]; then
        next_sample=$((next_sample + sample_s))
        ticks=$(awk '{print $14 + $15}' /proc/$gw/stat); t=$(date +%s.%N)
        cpu=$(echo "($ticks - $last_ticks) * 100 / $hz / ($t - $last_t)" | bc -l)
        last_ticks=$ticks last_t=$t
        rss=$(awk '/^VmRSS/ {print $2}' /proc/$gw/status)
        fds=$(ls /proc/$gw/fd | wc -l)
        thr=$(awk '/^Threads/ {print $2}' /proc/$gw/status)
        printf "%d,%s,%s,%s,%.1f,%s,%s,%s,%s,%s\n" $((now - start)) "$rss" "$fds" "$thr" "$cpu" \
            "$(metric_sum gb28181_streams_active)" "$(metric_sum rtsp_sessions)" "$running" \
            "$(metric_sum paths_rtp_packets_lost)" "$(metric_sum paths_frames_received)" >>"$out/soak.csv"
    fi
    sleep 1
done
# Let the last round end.
for p in $readers; do wait "$p" 2>/dev/null || true; done
[ -n "$readers" ] && finish_round
/usr/bin/python3 benches/soak-plot.py "$out/soak.csv" "$out/rounds.csv" "$out/soak.png"
