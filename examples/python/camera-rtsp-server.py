#!/usr/bin/env python3
"""GB28181 cameras as RTSP mounts on stock gst-rtsp-server, in Python (PyGObject).

Cameras register with the process's GB28181 SIP endpoint, opened at start by a gb28181src
held in READY (the "keeper"), before anyone watches; every registered device is mounted at
rtsp://host:port/<device-id>; the first viewer makes gb28181src INVITE the camera (one shared
media for all viewers), the last one leaving ends the session (BYE).

    GST_PLUGIN_PATH=target/release python3 examples/python/camera-rtsp-server.py --sip-port 5060

No access control: it listens on 127.0.0.1 unless told (the gateway is the product).
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch_line(args, device):
    """The media factory launch line of one camera (video only, so that a camera without
    audio still prepares). sip-address/sip-port are the keeper's as given (0 included):
    elements share the endpoint whose key they name."""
    parse, pay = ("h265parse", "rtph265pay") if args.codec == "h265" else ("h264parse", "rtph264pay")
    return (
        f"( gb28181src sip-address={args.address} sip-port={args.sip_port} "
        f"server-id={args.server_id} password={args.password} "
        f"device-id={device} channel-id={device} ! psdemux name=d d.video_e0 ! queue "
        f"! {parse} ! {pay} name=pay0 pt=96 config-interval=-1 )"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", default="127.0.0.1", help="SIP and RTSP address (default %(default)s)")
    p.add_argument("--sip-port", type=int, default=5060, help="SIP port, 0 = any (default %(default)s)")
    p.add_argument("--rtsp-port", type=int, default=8554, help="RTSP port, 0 = any (default %(default)s)")
    p.add_argument("--server-id", default="34020000002000000001", help="platform ID (default %(default)s)")
    p.add_argument("--password", default="12345678", help="camera password (default %(default)s)")
    p.add_argument("--codec", choices=["h264", "h265"], default="h264", help="video codec (default %(default)s)")
    args = p.parse_args()

    Gst.init(None)
    if Gst.ElementFactory.find("gb28181src") is None:
        sys.exit("camera-rtsp-server: gb28181src not found: set GST_PLUGIN_PATH or install the plugins")

    keeper = Gst.parse_launch(
        f"gb28181src name=keeper sip-address={args.address} sip-port={args.sip_port} "
        f"server-id={args.server_id} password={args.password} device-id={args.server_id} ! fakesink"
    )
    if keeper.set_state(Gst.State.READY) == Gst.StateChangeReturn.FAILURE:
        sys.exit(f"camera-rtsp-server: SIP endpoint on {args.address}:{args.sip_port} failed")
    sip_port = keeper.get_by_name("keeper").get_property("sip-port")

    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.rtsp_port))
    mounts = server.get_mount_points()
    if server.attach(None) == 0:
        sys.exit(f"camera-rtsp-server: RTSP server on port {args.rtsp_port} failed")
    rtsp_port = server.get_bound_port()
    print(f"[camera-rtsp-server] SIP {args.address}:{sip_port}, server id {args.server_id}, "
          f"RTSP port {rtsp_port}", flush=True)

    mounted = set()

    def on_message(_bus, msg):
        s = msg.get_structure()
        if msg.type != Gst.MessageType.ELEMENT or s is None:
            return True
        device = s.get_string("device-id")
        if s.get_name() == "gb28181-device-registered" and device not in mounted:
            mounted.add(device)
            factory = GstRtspServer.RTSPMediaFactory()
            factory.set_launch(launch_line(args, device))
            factory.set_shared(True)  # one camera session for every viewer, BYE after the last
            mounts.add_factory(f"/{device}", factory)
            print(f"[camera-rtsp-server] device {device} registered: "
                  f"rtsp://{args.address}:{rtsp_port}/{device}", flush=True)
        elif s.get_name() == "gb28181-device-unregistered" and device in mounted:
            mounted.discard(device)
            mounts.remove_factory(f"/{device}")
            print(f"[camera-rtsp-server] device {device} unregistered", flush=True)
        return True

    bus = keeper.get_bus()
    bus.add_watch(GLib.PRIORITY_DEFAULT, on_message)

    loop = GLib.MainLoop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    loop.run()
    server.client_filter(lambda _server, _client: GstRtspServer.RTSPFilterResult.REMOVE)
    keeper.set_state(Gst.State.NULL)
    print("[camera-rtsp-server] stopped", flush=True)


if __name__ == "__main__":
    main()
