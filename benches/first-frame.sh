#!/usr/bin/env bash
# New viewers of a channel others already watch: time to the first decoded frame (stock GStreamer client,
# DESCRIBE to first picture) and what ffmpeg reports while decoding (corrupt frames, DTS going
# back), RTSP over TCP and UDP, for viewers joining at random points of the camera's GOP
# (1 s here); then HLS (ffmpeg: first request of the playlist to first decoded frame, on a
# gateway restarted with --hls true). Gateway with one simulated camera (H.264 + G.711).
#   FF_VIEWERS=8 bash benches/first-frame.sh      (FF_PROFILE=debug: the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
profile=${FF_PROFILE:-release}
if [ "$profile" = release ]; then
    cargo build -q --release -p gst-ipcam-gateway --bins
else
    cargo build -q -p gst-ipcam-gateway --bins
fi
bin=${FF_GATEWAY:-$target/$profile/gst-ipcam-gateway}
viewers=${FF_VIEWERS:-8}
base=$((20000 + RANDOM % 20000))
sip=$base rtsp=$((base + 1)) metrics=$((base + 2)) hlsport=$((base + 3))
tmp=$(mktemp -d)
cfg=$tmp/gateway.toml
user=bench pass=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
hash=$(printf '%s' "$pass" | "$bin" --hash-password 2>/dev/null | grep '^pass' || true)
if [ -n "$hash" ]; then
    printf '[[users]]\nuser = "%s"\n%s\npermissions = [{ action = "read" }, { action = "metrics" }]\n' \
        "$user" "$hash" > "$cfg"
    cred="$user:$pass@"
    cfgarg="--config $cfg"
else
    cred="" cfgarg=""
fi
gw="" watcher=""
cleanup() {
    [ -n "$watcher" ] && kill "$watcher" 2>/dev/null || true
    [ -n "$gw" ] && { kill -INT "$gw" 2>/dev/null || true; wait "$gw" 2>/dev/null || true; }
}
trap 'cleanup; rm -rf "$tmp"' EXIT
start_gateway() {
    # shellcheck disable=SC2086
    "$bin" $cfgarg --simulate 1 --sip-address 127.0.0.1 --sip-port $sip \
        --listen-address 127.0.0.1 --rtsp-port $rtsp --metrics-port $metrics --summary-interval-s 0 \
        --hls-port $hlsport "$@" >> "$tmp/gateway.log" 2>&1 &
    gw=$!
}
url="rtsp://${cred}127.0.0.1:$rtsp/34020000001320000001"
hls_url="http://${cred}127.0.0.1:$hlsport/34020000001320000001/index.m3u8"

# Time to first frame (median, max over $viewers) and ffmpeg's warnings (4 viewers x 6 s).
measure() { # kind url transport-for-first-frame.py ffmpeg-options...
    local kind=$1 u=$2 how=$3
    shift 3
    local times=() t
    for _ in $(seq 1 "$viewers"); do
        sleep "0.$((RANDOM % 10))"
        t=$(/usr/bin/python3 benches/first-frame.py "$u" "$how" || echo fail)
        times+=("$t")
    done
    local sorted n median max corrupt=0 dts=0 log
    sorted=$(printf '%s\n' "${times[@]}" | grep -v fail | sort -n)
    n=$(echo "$sorted" | grep -c . || true)
    median=$(echo "$sorted" | awk -v n="$n" 'NR == int((n + 1) / 2)')
    max=$(echo "$sorted" | tail -1)
    for _ in 1 2 3 4; do
        sleep "0.$((RANDOM % 10))"
        log=$(timeout 30 ffmpeg -hide_banner -loglevel repeat+warning "$@" -i "$u" -t 6 -f null - 2>&1 || true)
        corrupt=$((corrupt + $(grep -c 'corrupt decoded' <<< "$log" || true)))
        dts=$((dts + $(grep -c 'non monotonically' <<< "$log" || true)))
    done
    echo "$kind: first frame median ${median} ms, max ${max} ms over $n viewers;" \
        "ffmpeg (4 viewers x 6 s): $corrupt corrupt frames, $dts DTS warnings"
}

start_gateway
for _ in $(seq 1 100); do
    ffprobe -v quiet -rtsp_transport tcp -read_intervals %+0.1 "$url" >/dev/null 2>&1 && break
    sleep 0.2
done
# Cold start: the first viewer makes the gateway INVITE the camera.
cold=$(/usr/bin/python3 benches/first-frame.py "$url" tcp || echo fail)
echo "cold start (INVITE, then the camera's next key frame): first frame after ${cold} ms"
# Keep the channel's camera session up, as when others already watch.
timeout 600 ffmpeg -hide_banner -loglevel quiet -rtsp_transport tcp -i "$url" -f null - &
watcher=$!
sleep 2
for transport in tcp udp; do
    measure "rtsp/$transport" "$url" "$transport" -rtsp_transport "$transport"
done

# HLS: the same camera on a gateway with --hls true (HLS keeps the session up); viewers come
# once the playlist lists a few segments, as on a channel that has been up for a while.
cleanup
gw="" watcher=""
start_gateway --hls true
for _ in $(seq 1 150); do
    n=$(curl -sf "$hls_url" 2>/dev/null | grep -c '\.ts$' || true)
    [ "${n:-0}" -ge 3 ] && break
    sleep 0.2
done
measure hls "$hls_url" hls
