#!/usr/bin/env bash
# make demo, until the GB28181 gateway lands: a simulated camera streaming H.264 + G.711 A-law
# as MPEG-PS over RTP (psmux ! rtppspay) to a receiver on loopback (rtppsdepay ! psdemux) that
# decodes it. Runs DEMO_SECONDS (default 20) seconds; Ctrl-C stops both sides cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
export GST_PLUGIN_PATH="$PWD/target/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
seconds=${DEMO_SECONDS:-20}
port=${DEMO_PORT:-15060}

sink="fakesink sync=true"
[ -n "${DISPLAY:-}" ] && sink="autovideosink"

echo "== receiver: udpsrc 127.0.0.1:$port ! rtppsdepay ! psdemux ! decode"
gst-launch-1.0 -e \
    udpsrc address=127.0.0.1 port="$port" \
        caps="application/x-rtp,media=video,clock-rate=90000,encoding-name=MP2P,payload=96" \
    ! rtpjitterbuffer latency=200 ! rtppsdepay ! psdemux name=d \
    d. ! queue ! h264parse ! avdec_h264 ! videoconvert \
       ! fpsdisplaysink text-overlay=false video-sink="$sink" signal-fps-measurements=false -v \
    d. ! queue ! alawdec ! fakesink sync=true \
    2>&1 | grep --line-buffered -E "fpsdisplaysink.*last-message|ERROR|WARN|Setting pipeline" &
receiver=$!
sleep 1

echo "== camera: videotestsrc + audiotestsrc ! x264enc/alawenc ! psmux ! rtppspay ! udpsink 127.0.0.1:$port"
frames=$((seconds * 25))
gst-launch-1.0 -e \
    videotestsrc is-live=true num-buffers="$frames" pattern=ball \
    ! video/x-raw,width=640,height=360,framerate=25/1 \
    ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=50 bitrate=1500 \
    ! video/x-h264,profile=baseline ! h264parse ! psmux name=m \
    audiotestsrc is-live=true samplesperbuffer=320 ! audio/x-raw,rate=8000,channels=1 ! alawenc ! m. \
    m. ! rtppspay ! udpsink host=127.0.0.1 port="$port" >/dev/null &
camera=$!

stop() { kill -INT "$camera" 2>/dev/null || true; sleep 1; kill -INT "$receiver" 2>/dev/null || true; }
trap stop INT TERM
wait "$camera" || true
sleep 1
kill -INT "$receiver" 2>/dev/null || true
wait "$receiver" 2>/dev/null || true
echo "== demo finished"
