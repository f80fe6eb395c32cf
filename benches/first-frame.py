#!/usr/bin/env python3
"""Time to the first decoded video frame of an RTSP URL with stock GStreamer (rtspsrc, the
video through decodebin, audio to a fakesink), from the moment the client starts (DESCRIBE
included); or of an HLS playlist with ffmpeg, from its first request of the playlist to the
first decoded frame. Usage: first-frame.py URL tcp|udp|hls; prints milliseconds."""
import subprocess
import sys
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402


def hls(url):
    """ffmpeg reads the playlist, then segments, and stops after one decoded video frame."""
    t0 = time.monotonic()
    r = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", url, "-map", "0:v:0", "-frames:v", "1", "-f", "null", "-"],
        capture_output=True, timeout=30,
    )
    if r.returncode != 0:
        print(f"error: {r.stderr.decode(errors='replace')[:200]}", file=sys.stderr)
        sys.exit(1)
    print(f"{(time.monotonic() - t0) * 1000:.0f}")


def main():
    url, transport = sys.argv[1], sys.argv[2]
    if transport == "hls":
        return hls(url)
    Gst.init(None)
    p = Gst.parse_launch(
        f"rtspsrc name=s location={url} protocols={transport} latency=0 "
        "s. ! application/x-rtp,media=video ! queue ! decodebin ! fakesink name=out "
        "signal-handoffs=true sync=false "
        "s. ! application/x-rtp,media=audio ! fakesink sync=false"
    )
    first = []
    p.get_by_name("out").connect("handoff", lambda *_: first or first.append(time.monotonic()))
    t0 = time.monotonic()
    p.set_state(Gst.State.PLAYING)
    bus = p.get_bus()
    while not first and time.monotonic() - t0 < 15:
        msg = bus.timed_pop_filtered(50 * Gst.MSECOND, Gst.MessageType.ERROR)
        if msg:
            print(f"error: {msg.parse_error()[0].message}", file=sys.stderr)
            break
    p.set_state(Gst.State.NULL)
    if not first:
        sys.exit(1)
    print(f"{(first[0] - t0) * 1000:.0f}")


if __name__ == "__main__":
    main()
