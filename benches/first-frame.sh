#!/usr/bin/env bash
# New viewers of a channel others already watch: time to the first decoded frame (stock GStreamer client,
# DESCRIBE to first picture) and what ffmpeg reports while decoding (corrupt frames, DTS going
# back), RTSP over TCP and UDP, for viewers joining at random points of the camera's GOP
# (1 s here). Gateway with one simulated camera (H.264 + G.711).
#   FF_VIEWERS=8 bash benches/first-frame.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p gst-ipcam-gateway --bins
viewers=${FF_VIEWERS:-8}
base=$((20000 + RANDOM % 20000))
sip=$base rtsp=$((base + 1)) metrics=$((base + 2))
tmp=$(mktemp -d)
cfg=$tmp/gateway.toml
user=bench pass=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
hash=$(printf '%s' "$pass" | "$target/release/gst-ipcam-gateway" --hash-password 2>/dev/null | grep '^pass' || true)
if [ -n "$hash" ]; then
    printf '[[users]]\nuser = "%s"\n%s\npermissions = [{ action = "read" }, { action = "metrics" }]\n' \
        "$user" "$hash" > "$cfg"
    cred="$user:$pass@"
    cfgarg="--config $cfg"
else
    cred="" cfgarg=""
fi
# shellcheck disable=SC2086
"$target/release/gst-ipcam-gateway" $cfgarg --simulate 1 --sip-address 127.0.0.1 --sip-port $sip \
    --listen-address 127.0.0.1 --rtsp-port $rtsp --metrics-port $metrics --summary-interval-s 0 \
    > "$tmp/gateway.log" 2>&1 &
gw=$!
trap 'kill -INT $gw 2>/dev/null || true; sleep 1; rm -rf "$tmp"' EXIT
url="rtsp://${cred}127.0.0.1:$rtsp/34020000001320000001"
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
trap 'kill $watcher 2>/dev/null || true; kill -INT $gw 2>/dev/null || true; sleep 1; rm -rf "$tmp"' EXIT
sleep 2
for transport in tcp udp; do
    times=()
    for i in $(seq 1 "$viewers"); do
        sleep "0.$((RANDOM % 10))"
        t=$(/usr/bin/python3 benches/first-frame.py "$url" "$transport" || echo fail)
        times+=("$t")
    done
    sorted=$(printf '%s\n' "${times[@]}" | grep -v fail | sort -n)
    n=$(echo "$sorted" | grep -c . || true)
    median=$(echo "$sorted" | awk -v n="$n" 'NR == int((n + 1) / 2)')
    max=$(echo "$sorted" | tail -1)
    corrupt=0 dts=0
    for i in 1 2 3 4; do
        sleep "0.$((RANDOM % 10))"
        log=$(timeout 30 ffmpeg -hide_banner -loglevel repeat+warning -rtsp_transport "$transport" \
            -i "$url" -t 6 -f null - 2>&1 || true)
        corrupt=$((corrupt + $(grep -c 'corrupt decoded' <<< "$log" || true)))
        dts=$((dts + $(grep -c 'non monotonically' <<< "$log" || true)))
    done
    echo "rtsp/$transport: first frame median ${median} ms, max ${max} ms over $n viewers;" \
        "ffmpeg (4 viewers x 6 s): $corrupt corrupt frames, $dts DTS warnings"
done
