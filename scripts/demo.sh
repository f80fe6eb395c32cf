#!/usr/bin/env bash
# make demo: the GB28181 -> RTSP/HLS gateway with its defaults and one built-in simulated camera
# (no camera needed). Nobody reads without credentials: the demo creates a user `demo` with a
# random password (stored hashed in a config file of its own) and prints the URL with the
# credentials in it. It checks the stream with ffprobe once it is up, and runs until Ctrl-C
# (which sends BYE to the cameras and finalizes files) or DEMO_SECONDS.
#   DEMO_ARGS="--simulate 4 --hls true" make demo     more cameras, HLS on :8888
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
gateway="$target/release/gst-ipcam-gateway"
[ -x "$gateway" ] || cargo build --release -p gst-ipcam-gateway --bins
seconds=${DEMO_SECONDS:-0}
channel=34020000001320000001

# The demo user: random password; the gateway gets its argon2 hash (and Digest HA1) only.
pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
conf=$(mktemp "${TMPDIR:-/tmp}/gst-ipcam-demo-XXXXXX.toml")
{
    echo '[[users]]'
    printf '%s\n' "$pw" | "$gateway" --hash-password --user demo
    echo 'permissions = [{action = "read"}, {action = "publish"}, {action = "playback"}, {action = "metrics"}, {action = "api"}]'
} >"$conf"
url="rtsp://demo:$pw@127.0.0.1:8554/$channel"

# shellcheck disable=SC2086
"$gateway" --config "$conf" ${DEMO_ARGS:-} &
gw=$!
stop() { kill -INT "$gw" 2>/dev/null || true; }
trap stop INT TERM

# Wait for the camera to register, then show what a real RTSP client sees.
for _ in $(seq 1 50); do
    curl -fs -u "demo:$pw" http://127.0.0.1:9998/metrics 2>/dev/null | grep -q "^paths{name=\"$channel\"" && break
    sleep 0.2
done
if command -v ffprobe >/dev/null; then
    echo "== ffprobe $url (3 s)"
    ffprobe -v error -rtsp_transport tcp -read_intervals %+3 -count_frames \
        -show_entries stream=codec_name,width,height,nb_read_frames -of compact \
        "$url" || true
fi
# Three calls of the control API, run once here, as the README shows them.
api="http://127.0.0.1:9998/v1"
for call in "$api/devices" "$api/channels/$channel" "-X POST $api/channels/$channel/keyframe"; do
    echo "== curl -s -u demo:$pw $call"
    # shellcheck disable=SC2086
    curl -s -u "demo:$pw" $call || true
    echo
done
echo "== open $url (e.g. ffplay, VLC); metrics: curl -u demo:$pw http://127.0.0.1:9998/metrics; Ctrl-C stops"
echo "== web page: http://127.0.0.1:9998/ (log in as demo / $pw)"
echo "== publish a file: ffmpeg -re -stream_loop -1 -i FILE.mp4 -c copy -f rtsp rtsp://demo:$pw@127.0.0.1:8554/mystream"
echo "== talk to the camera's speaker (the audio of a published path, here mystream): curl -u demo:$pw -H 'Content-Type: application/json' -d '{\"device_id\":\"$channel\",\"source\":\"mystream\"}' $api/talk"
echo "== WHEP (e.g. a WHEP player): http://demo:$pw@127.0.0.1:9998/$channel/whep"
echo "== RTMP: ffplay 'rtmp://127.0.0.1:1935/$channel?user=demo&pass=$pw'; publish: ffmpeg -re -i FILE -c copy -f flv 'rtmp://127.0.0.1:1935/live/x?user=demo&pass=$pw'"
if [ "$seconds" -gt 0 ]; then
    ( sleep "$seconds"; kill -INT "$gw" 2>/dev/null || true ) &
fi
status=0
wait "$gw" || status=$?
# `wait` returns early when our trap runs: wait for the gateway's own clean exit.
while kill -0 "$gw" 2>/dev/null; do sleep 0.2; done
wait "$gw" 2>/dev/null || status=$?
rm -f "$conf"
echo "== demo finished (gateway exit $status)"
