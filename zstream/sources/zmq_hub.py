"""Cameras that push: `zmq://HOST:PORT` is an imagezmq hub that senders send frames to.

    zmq://127.0.0.1:5555                     REP, bound here: imagezmq ImageSender (REQ) connects
    zmq://127.0.0.1:5555?name=pi-north       this camera takes the frames sent as "pi-north"
    zmq://10.0.0.7:5555?pattern=sub          SUB, connects to an ImageSender(REQ_REP=False) there

Senders are told apart by the name they send (`send_image(name, image)`): each camera takes
the frames sent under its `name` query key, or under its camera id when it has none. Cameras
whose URLs share HOST:PORT (and pattern) share one socket: the topology puts them on the same
capture worker and refuses two that take the same name. A frame sent under a name no camera
takes is refused and counted (dropped `ingest:unknown_sender`) on the first camera of the url.

Every REQ is answered as soon as its frame is decoded: b"OK", or b"ERROR <reason>: <why>"
for a frame refused (counted as dropped `ingest:<reason>`: bad_message, bad_shape, too_large,
undecodable, unknown_sender). A message over twice the camera's largest raw frame is cut off
by ZeroMQ itself (MAXMSGSIZE: the connection is dropped unread, so memory stays bounded). A
sender that goes quiet leaves the camera `stalled` (the capture worker's watchdog), never
`failed`: the hub keeps listening. With `security.curve_keys` the REP socket is a CURVE server
whose clients must be in `clients/`, as for the tap.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import zmq

from zstream.core.vocabulary import DropReason
from zstream.errors import SourceError, mask_url
from zstream.security import CurveServer, is_loopback
from zstream.sources.base import DecodedFrame, FrameGate
from zstream.sources.zmq_intake import MAX_HEADER_BYTES, Message, Refused, decode, parse_message

log = logging.getLogger(__name__)
PATTERNS = ("rep", "sub")
FRAMES_QUEUED = 4  # per camera; a camera thread further behind loses its oldest (counted)
POLL_MS = 100  # how soon the hub notices it is asked to stop
SUB_HWM = 4  # a subscriber that falls behind keeps the newest frames, not a growing backlog
BIND_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ZmqSpec:
    host: str
    port: int
    pattern: str  # rep (bind, answer each frame) | sub (connect to a publishing sender)
    name: str | None  # the sender name this camera takes; None: its camera id

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    @property
    def key(self) -> tuple[str, str]:
        """Cameras with the same key share one socket."""
        return self.pattern, self.endpoint


def parse_zmq_url(url: str) -> ZmqSpec:
    """Parse and check a zmq:// URL; raises SourceError naming what is wrong."""
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise SourceError(f"{shown}: not a valid zmq:// URL ({str(exc)[:80]})") from None
    if not parts.hostname or port is None or port == 0:
        raise SourceError(f"{shown}: zmq:// needs HOST:PORT with a port from 1 to 65535")
    if parts.path not in ("", "/") or parts.username is not None:
        raise SourceError(f"{shown}: zmq://HOST:PORT takes no path and no user, only ?name= and ?pattern=")
    options = dict(query)
    unknown = sorted(set(options) - {"name", "pattern"})
    if unknown or len(options) != len(query):
        raise SourceError(f"{shown}: query keys are name and pattern, each once; got {[k for k, _ in query]}")
    pattern = options.get("pattern", "rep")
    if pattern not in PATTERNS:
        raise SourceError(f"{shown}: pattern={pattern!r} must be one of {list(PATTERNS)}")
    name = options.get("name")
    if name == "":
        raise SourceError(f"{shown}: name= is empty")
    return ZmqSpec(parts.hostname, port, pattern, name)


class Inbox:
    """The newest frames sent to one camera, handed from the hub's thread to the camera's."""

    def __init__(self, camera_id: str, name: str, max_size: tuple[int, int]) -> None:
        self.camera_id, self.name, self.max_size = camera_id, name, max_size
        self._frames: collections.deque[DecodedFrame] = collections.deque(maxlen=FRAMES_QUEUED)
        self._arrived = threading.Condition()
        self._gate: FrameGate | None = None
        self._unreported: collections.Counter[str] = collections.Counter()  # refusals before a gate

    def listen(self, gate: FrameGate) -> None:
        """Count refusals on `gate` from now on, including those held since the inbox opened."""
        with self._arrived:
            self._gate = gate
            held, self._unreported = self._unreported, collections.Counter()
        for reason, n in held.items():
            for _ in range(n):
                gate.reject(reason)

    def reject(self, reason: str) -> None:
        with self._arrived:
            gate = self._gate
            if gate is None:
                self._unreported[reason] += 1
        if gate is not None:
            gate.reject(reason)

    def put(self, frame: DecodedFrame) -> None:
        """Queue a frame for the camera's thread; when it is that far behind, the oldest goes."""
        with self._arrived:
            superseded = len(self._frames) == FRAMES_QUEUED
            self._frames.append(frame)  # a full deque drops its oldest
            self._arrived.notify()
        if superseded:
            self.reject(DropReason.SUPERSEDED)

    def get(self, timeout: float) -> DecodedFrame | None:
        with self._arrived:
            if not self._frames:
                self._arrived.wait(timeout)
            return self._frames.popleft() if self._frames else None


class Hub(threading.Thread):
    """One socket serving the cameras of one zmq:// HOST:PORT; runs in its own thread, which
    alone touches the socket."""

    def __init__(self, spec: ZmqSpec, curve_keys: str, message_limit: int) -> None:
        super().__init__(name=f"zmq-hub-{spec.port}", daemon=True)
        self.spec, self.curve_keys, self.message_limit = spec, curve_keys, message_limit
        self.inboxes: dict[str, Inbox] = {}
        self.error: str | None = None
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self._logged: set[str] = set()

    def start_listening(self) -> None:
        """Start the thread and wait for its socket; SourceError if it cannot bind or connect."""
        self.start()
        if not self._listening.wait(BIND_TIMEOUT_S):
            self.error = f"socket not ready within {BIND_TIMEOUT_S:.0f}s"
        if self.error is not None:
            self.stop()
            raise SourceError(f"{self.spec.endpoint}: {self.error}")

    def attach(self, inbox: Inbox) -> None:
        with self._lock:
            if inbox.name in self.inboxes:
                raise SourceError(f"{self.spec.endpoint}: sender name {inbox.name!r} is taken twice")
            self.inboxes[inbox.name] = inbox

    def detach(self, inbox: Inbox) -> int:
        """Remove a camera; how many are left."""
        with self._lock:
            if self.inboxes.get(inbox.name) is inbox:
                del self.inboxes[inbox.name]
            return len(self.inboxes)

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(2 * POLL_MS / 1000 + 1)

    def run(self) -> None:
        context = zmq.Context(1)
        curve: CurveServer | None = None
        socket: zmq.Socket | None = None
        try:
            if self.curve_keys and self.spec.pattern == "rep":
                curve = CurveServer(context, Path(self.curve_keys))
            socket = self._open(context, curve)
            self._listening.set()
            self._serve(socket)
        except (zmq.ZMQError, OSError) as exc:
            self.error = str(exc)
            log.warning("zmq hub %s: %s", self.spec.endpoint, exc)
        finally:
            self._listening.set()
            if socket is not None:
                socket.close(linger=0)
            if curve is not None:
                curve.stop()
            context.term()

    def _open(self, context: zmq.Context, curve: CurveServer | None) -> zmq.Socket:
        rep = self.spec.pattern == "rep"
        socket = context.socket(zmq.REP if rep else zmq.SUB)
        socket.setsockopt(zmq.MAXMSGSIZE, self.message_limit)
        socket.setsockopt(zmq.IPV6, ":" in self.spec.host)
        try:
            if rep:
                if curve is not None:
                    curve.protect(socket)
                socket.bind(self.spec.endpoint)
            else:
                socket.setsockopt(zmq.RCVHWM, SUB_HWM)
                socket.setsockopt(zmq.SUBSCRIBE, b"")
                socket.connect(self.spec.endpoint)
        except zmq.ZMQError:
            socket.close(linger=0)
            raise
        return socket

    def _serve(self, socket: zmq.Socket) -> None:
        rep = self.spec.pattern == "rep"
        while not self._stopping.is_set():
            if not socket.poll(POLL_MS):
                continue
            parts = socket.recv_multipart(copy=False)
            try:
                reply = self._take([part.buffer for part in parts])
            except Exception:  # a bug: the sender still gets its answer, the hub stays up
                log.exception("zmq hub %s: unexpected error on a message", self.spec.endpoint)
                reply = b"ERROR internal: see the pipeline's log"
            if rep:
                socket.send(reply)

    def _take(self, parts: list[memoryview]) -> bytes:
        """Route one message to its camera; the reply a REQ sender gets."""
        inbox: Inbox | None = None
        try:
            message = parse_message(parts)
            inbox = self._inbox_for(message)
            inbox.put(decode(message, inbox.max_size))
            return b"OK"
        except Refused as refused:
            inbox = inbox or self._first_inbox()
            if inbox is not None:
                inbox.reject(refused.reason)
            self._log_once(refused)
            return f"ERROR {refused.reason}: {refused.detail}".encode()[:300]

    def _inbox_for(self, message: Message) -> Inbox:
        with self._lock:
            inbox = self.inboxes.get(message.name)
        if inbox is None:  # (the reply does not list the names that are taken: senders need not know)
            raise Refused(DropReason.UNKNOWN_SENDER, f"no camera here takes sender {message.name[:40]!r}")
        return inbox

    def _first_inbox(self) -> Inbox | None:
        with self._lock:
            return next(iter(self.inboxes.values()), None)

    def _log_once(self, refused: Refused) -> None:
        """One warning per reason and hub: a hostile sender must not flood the log."""
        if refused.reason not in self._logged:
            self._logged.add(refused.reason)
            log.warning(
                "zmq hub %s refused a frame: %s (further ones counted only)", self.spec.endpoint, refused
            )


_hubs: dict[tuple[str, str], Hub] = {}
_hubs_lock = threading.Lock()


def _attach(spec: ZmqSpec, inbox: Inbox, curve_keys: str, message_limit: int) -> Hub:
    """The running hub of this url, started on first use, with `inbox` attached."""
    with _hubs_lock:
        hub = _hubs.get(spec.key)
        if hub is None or hub.error is not None or not hub.is_alive():
            hub = Hub(spec, curve_keys, message_limit)
            hub.start_listening()
            _hubs[spec.key] = hub
        hub.attach(inbox)
        return hub


def _detach(hub: Hub, inbox: Inbox) -> None:
    """Remove `inbox`; the last camera of a hub stops it and frees its port."""
    with _hubs_lock:
        if hub.detach(inbox) == 0:
            if _hubs.get(hub.spec.key) is hub:
                del _hubs[hub.spec.key]
            hub.stop()


class ZmqSource:
    """FrameSource for zmq:// URLs: the frames senders push to this camera's name."""

    def __init__(
        self, url: str, camera_id: str, *, max_size: tuple[int, int], curve_keys: str = "", message_limit: int
    ) -> None:
        self.url = url
        self.spec = parse_zmq_url(url)
        self.inbox = Inbox(camera_id, self.spec.name or camera_id, max_size)
        self.curve_keys, self.message_limit = curve_keys, message_limit
        self._hub: Hub | None = None

    def open(self) -> None:
        if self._hub is None:
            self._hub = _attach(self.spec, self.inbox, self.curve_keys, self.message_limit)

    def frames(self, stop: threading.Event, gate: FrameGate) -> Iterator[DecodedFrame]:
        """Frames as senders push them, until `stop`; silence is not an end (the camera stalls)."""
        hub = self._hub
        if hub is None:
            raise SourceError(f"{mask_url(self.url)}: frames() called before open()")
        self.inbox.listen(gate)
        while not stop.is_set():
            frame = self.inbox.get(POLL_MS / 1000)
            if frame is None:
                if hub.error is not None or not hub.is_alive():
                    raise SourceError(f"{mask_url(self.url)}: the hub stopped: {hub.error or 'unknown'}")
                continue
            if gate.admit(frame.pts):
                yield frame

    def close(self) -> None:
        if self._hub is not None:
            _detach(self._hub, self.inbox)
            self._hub = None


def message_limit(max_sizes: list[tuple[int, int]]) -> int:
    """MAXMSGSIZE of a hub: twice the largest raw BGR frame its cameras take, so that a frame
    somewhat too large is answered and counted, and a huge one is cut off unread."""
    return 2 * max(width * height * 3 for width, height in max_sizes) + MAX_HEADER_BYTES


def camera_problems(cameras: list[tuple[int, str, str]], curve_keys: str) -> list[str]:
    """Topology problems of zmq:// cameras, given (index, camera id, url) of each: two cameras
    taking the same sender name on one url, and a REP hub beyond loopback without CURVE."""
    problems: list[str] = []
    taken: dict[tuple[tuple[str, str], str], str] = {}  # (hub, sender name) -> camera id
    for index, camera_id, url in cameras:
        try:
            spec = parse_zmq_url(url)
        except SourceError:
            continue  # reported with the url's other problems
        name = spec.name or camera_id
        other = taken.setdefault((spec.key, name), camera_id)
        if other != camera_id:
            problems.append(
                f"cameras[{index}].url: sender name {name!r} on {spec.endpoint} is already taken by "
                f"camera {other!r}; give one of them ?name=SENDER"
            )
        if spec.pattern == "rep" and not is_loopback(spec.host) and not curve_keys:
            problems.append(
                f"cameras[{index}].url: {spec.endpoint} is reachable beyond this machine: set "
                "security.curve_keys (`zstream keys DIR` makes them), or bind it to 127.0.0.1"
            )
    return problems


def hub_key(url: str) -> tuple[str, str] | None:
    """Which socket a camera's URL shares with others (None: not a valid zmq:// URL)."""
    try:
        return parse_zmq_url(url).key
    except SourceError:
        return None
