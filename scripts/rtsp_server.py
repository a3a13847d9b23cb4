#!/usr/bin/python3
"""A real RTSP server for tests, on GStreamer's RTSP server (gst-rtsp-server).

Run it with the SYSTEM python (/usr/bin/python3): it needs `gi` and the GStreamer
typelibs from Debian's packages, which the project's venv does not have.

    /usr/bin/python3 scripts/rtsp_server.py --port 0 --file clip.mp4 [--loop]
    /usr/bin/python3 scripts/rtsp_server.py --port 0 --pattern --size 640x360 --fps 10

Once it listens it prints exactly one line to stdout, `READY rtsp://127.0.0.1:PORT/MOUNT`,
and it exits with code 0 on SIGTERM or SIGINT. It listens on 127.0.0.1 only. By default
it serves RTP over the RTSP connection (TCP interleaved) only, so it opens no UDP port;
clients that ask for UDP are refused with 461. With `--transport udp` it serves RTP over
UDP only, from ports it binds on 127.0.0.1 (an address pool), never on other interfaces.

Every client gets its own pipeline, from the start of the file: tests that compare
pixels need to know which frame comes first.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtsp, GstRtspServer  # noqa: E402

HOST = "127.0.0.1"
ROLE = "tester"  # the one role a right user/password pair is given

# h264parse repeats SPS/PPS in band before every keyframe (config-interval=-1): the mp4
# keeps them out of band, and a client should not depend on the SDP alone. It must be
# h264parse, not rtph264pay's own config-interval: the payloader inserts them before
# every IDR *slice*, which splits a multi-slice keyframe (x264 with threads makes
# those) into two pictures for FFmpeg, and every frame after it decodes wrong.
PARSE_AND_PAY = "h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96"
SHALLOW_COPY = (
    Gst.BufferCopyFlags.FLAGS
    | Gst.BufferCopyFlags.TIMESTAMPS
    | Gst.BufferCopyFlags.META
    | Gst.BufferCopyFlags.MEMORY  # referenced, not copied (no DEEP)
)


@dataclass
class AccessUnits:
    """A file's H.264 stream as demuxed access units, kept in memory for looping."""

    caps: Gst.Caps
    buffers: list[Gst.Buffer]
    duration: int  # ns from the first PTS to the end of the last frame: one loop's length


def _gst_quote(text: str) -> str:
    """Quote a property value for a gst-launch description."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def read_access_units(path: Path, keep: bool) -> AccessUnits:
    """Demux the H.264 track of an mp4 (no decoding), failing early on a bad file.

    With keep=False it only prerolls, to check that the file has H.264 at all, so a
    typo in a test fails at start-up rather than as an obscure error in the client.
    """
    pipeline = Gst.parse_launch(
        f"filesrc location={_gst_quote(str(path))} ! qtdemux ! h264parse "
        "! video/x-h264,stream-format=avc,alignment=au ! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PAUSED)
    buffers: list[Gst.Buffer] = []
    caps = None
    try:
        msg = bus.timed_pop_filtered(10 * Gst.SECOND, Gst.MessageType.ASYNC_DONE | Gst.MessageType.ERROR)
        if msg is None or msg.type == Gst.MessageType.ERROR:
            detail = msg.parse_error()[0].message if msg else "timed out"
            raise SystemExit(f"rtsp_server: {path} has no H.264 track qtdemux can read ({detail})")
        if not keep:
            return AccessUnits(caps=Gst.Caps.new_empty(), buffers=[], duration=0)
        pipeline.set_state(Gst.State.PLAYING)
        while (sample := sink.emit("pull-sample")) is not None:
            caps = sample.get_caps()
            buffers.append(sample.get_buffer())
    finally:
        pipeline.set_state(Gst.State.NULL)
    if not buffers or caps is None:
        raise SystemExit(f"rtsp_server: {path} has an empty H.264 track")
    first = min(b.pts for b in buffers)
    end = max(b.pts + (b.duration if b.duration != Gst.CLOCK_TIME_NONE else 0) for b in buffers)
    return AccessUnits(caps=caps, buffers=buffers, duration=end - first)


@dataclass
class _LoopFeeder:
    """Feeds one client's appsrc with the file's access units, again and again.

    Each pass shifts PTS and DTS by one loop's length, so time only moves forward and
    the payloader's RTP timestamps stay continuous; the H.264 bytes are untouched, and
    every pass starts on the file's first frame, a keyframe, so decoding stays exact.
    Only the appsrc's own streaming thread calls need_data, so no lock is needed.
    """

    units: AccessUnits
    index: int = 0
    offset: int = 0

    def need_data(self, src: GstApp.AppSrc, _length: int) -> None:
        original = self.units.buffers[self.index]
        # A new buffer sharing the memory; only the timestamps differ. Not original.copy(): with
        # GStreamer 1.22's bindings its timestamps are the original's, so each pass shifted the
        # file's own buffers again (pass 3 started 3 loops on, and so on: a growing stall).
        buf = original.copy_region(SHALLOW_COPY, 0, original.get_size())
        buf.pts = original.pts + self.offset
        if original.dts != Gst.CLOCK_TIME_NONE:
            buf.dts = original.dts + self.offset
        self.index += 1
        if self.index == len(self.units.buffers):
            self.index = 0
            self.offset += self.units.duration
        src.emit("push-buffer", buf)


def make_factory(args: argparse.Namespace) -> GstRtspServer.RTSPMediaFactory:
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_shared(False)  # one pipeline per client, each from the first frame
    if args.transport == "udp":
        factory.set_protocols(GstRtsp.RTSPLowerTrans.UDP)
        pool = GstRtspServer.RTSPAddressPool()
        pool.add_range(HOST, HOST, 40000, 49999, 0)  # ttl 0: unicast, bound on loopback
        factory.set_address_pool(pool)
    else:
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)  # no UDP sockets at all
    if args.pattern:
        width, height = args.size
        factory.set_launch(
            f"( videotestsrc is-live=true pattern=smpte horizontal-speed=4 "
            f"! video/x-raw,format=I420,width={width},height={height},framerate={args.fps}/1 "
            f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} "
            f"! {PARSE_AND_PAY} )"
        )
    elif not args.loop:
        read_access_units(args.file, keep=False)
        factory.set_launch(f"( filesrc location={_gst_quote(str(args.file))} ! qtdemux ! {PARSE_AND_PAY} )")
    else:
        # qtdemux cannot loop by itself, and a segment seek inside the RTSP server's own
        # pipeline fights with the seek it does on PLAY. So the file is demuxed once,
        # here, and each client's appsrc replays those same access units forever.
        units = read_access_units(args.file, keep=True)
        factory.set_launch(f"( appsrc name=src format=time ! {PARSE_AND_PAY} )")

        def configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
            src = media.get_element().get_by_name_recurse_up("src")
            src.set_property("caps", units.caps)
            # The signal holds the feeder, so it lives exactly as long as this client's appsrc.
            src.connect("need-data", _LoopFeeder(units).need_data)

        factory.connect("media-configure", configure)
    return factory


def add_auth(
    server: GstRtspServer.RTSPServer,
    factory: GstRtspServer.RTSPMediaFactory,
    user: str,
    password: str,
    method: str,
) -> None:
    """Require user/password for this mount; anyone else gets 401 Unauthorized.

    One method at a time: the C API takes Basic|Digest as flags, but the GI binding
    types the argument as an enum and refuses the combined value.
    """
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
    if method == "basic":
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
    else:
        auth.add_digest(user, password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    server.set_auth(auth)
    # Only the role the right credentials carry may see and build this mount's media.
    factory.add_role_from_structure(
        Gst.Structure.new_from_string(
            f"{ROLE}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
        )
    )


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, got {text!r}") from None
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"size must be positive and even, got {text!r}")
    return width, height


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--mount", default="/stream", help="path of the stream (default /stream)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--file", type=Path, help="H.264 mp4 to serve as it is, without re-encoding")
    what.add_argument("--pattern", action="store_true", help="live x264-encoded test pattern")
    parser.add_argument("--loop", action="store_true", help="with --file: start over at the end")
    parser.add_argument("--size", type=parse_size, default=(640, 360), help="with --pattern: WxH")
    parser.add_argument("--fps", type=int, default=10, help="with --pattern: frames per second")
    parser.add_argument(
        "--transport", choices=("tcp", "udp"), default="tcp", help="how RTP reaches clients (one only)"
    )
    parser.add_argument("--user", help="require this user (with --password)")
    parser.add_argument("--password", help="require this password (with --user)")
    parser.add_argument(
        "--auth", choices=("digest", "basic"), default="digest", help="with --user: the method"
    )
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="also exit when stdin closes, so a parent that dies takes the server with it",
    )
    args = parser.parse_args(argv)
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password go together")
    if args.loop and not args.file:
        parser.error("--loop needs --file")
    if not args.mount.startswith("/"):
        args.mount = "/" + args.mount
    if args.file is not None:
        args.file = args.file.resolve()
        if not args.file.is_file():
            parser.error(f"no such file: {args.file}")
    if args.fps <= 0:
        parser.error("--fps must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    loop = GLib.MainLoop()

    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(args.port))
    factory = make_factory(args)
    if args.user is not None:
        add_auth(server, factory, args.user, args.password, args.auth)
    server.get_mount_points().add_factory(args.mount, factory)

    # attach() binds and listens at once; a busy port fails here, not later.
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {HOST}:{args.port}", file=sys.stderr)
        return 1

    def stop(*_: object) -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, stop)
    if args.exit_on_stdin_eof:
        # Any input or EOF on stdin ends the server: the parent only ever closes it.
        GLib.io_add_watch(
            GLib.IOChannel.unix_new(sys.stdin.fileno()),
            GLib.PRIORITY_DEFAULT,
            GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
            stop,
        )

    print(f"READY rtsp://{HOST}:{server.get_bound_port()}{args.mount}", flush=True)
    loop.run()
    # Leave at once: pipelines of connected clients need no orderly teardown in a test
    # server, and waiting for them could hang the exit past the caller's patience.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
