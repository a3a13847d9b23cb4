"""Output work: a validated frame scaled and encoded for Redis (and for the tap), in its worker.

This is the most expensive work after decoding (scaling, then JPEG). It is done by the
validation workers, which hold the frame's slot already and of which there are N, so that
it scales with their number; the single batcher only groups the encoded frames and writes
them (see zstream.batch). What the tap needs beyond the batch payload (raw pixels while
Redis gets JPEG, or JPEG of another quality) is made here too, and only for cameras that
someone watches: the batcher, which binds the tap, publishes its subscribers' prefixes in
RUN_DIR/tap.wanted (`write_tap_interest`), and `TapInterest` reads them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zstream.core.files import replace_file
from zstream.core.planes import i420_shape
from zstream.pixels import i420_bytes, i420_to_color, jpeg_encode, output_size, scale_i420
from zstream.rundir import TAP_WANTED_FILE

if TYPE_CHECKING:
    from zstream.core.ring import Ring
    from zstream.core.wire import FrameRef
    from zstream.topology import Topology

Planes = tuple[np.ndarray, np.ndarray, np.ndarray]
INTEREST_CHECK_S = 0.1  # how often validation looks whether the tap's subscribers changed
# The tap's own payloads may take this share of a validation worker's time, in bursts of up to
# BURST_S; beyond it they are shed (counted as `tap:busy`) rather than delaying validation.
TAP_TIME_SHARE = 0.25
TAP_BURST_S = 0.25


@dataclass(frozen=True, slots=True)
class Encoded:
    """A frame as it goes to Redis: its payload and what a consumer decodes it to."""

    data: bytes
    encoding: str
    pixel_format: str
    shape: tuple[int, ...]
    width: int
    height: int


def tap_payload_format(topology: Topology) -> str | None:
    """The tap's payload when the batch payload cannot serve as it ("jpeg" or "raw"), else None."""
    tap, batch = topology.tap, topology.batcher
    if not tap.endpoint or tap.payload == "meta":
        return None
    if tap.payload == "raw":
        return None if batch.encoding == "raw" and batch.pixel_format == "yuv420p" else "raw"
    same_jpeg = batch.encoding == "jpeg" and tap.jpeg_quality in (None, batch.jpeg_quality)
    return None if same_jpeg else "jpeg"


def tap_jpeg_quality(topology: Topology) -> int:
    """The tap's JPEG quality: its own, or the batch's when it has none."""
    return topology.tap.jpeg_quality or topology.batcher.jpeg_quality


class Encoder:
    """Scales and encodes frames by the topology's batcher settings (followed live)."""

    def __init__(self, topology: Topology) -> None:
        self.apply(topology)

    def apply(self, topology: Topology) -> None:
        self.settings = topology.batcher
        self._width = {camera.id: topology.output_width_for(camera) for camera in topology.cameras}
        self.tap_format = tap_payload_format(topology)
        self.tap_quality = tap_jpeg_quality(topology)

    def encode(self, ring: Ring, ref: FrameRef) -> tuple[Encoded, Planes]:
        """The frame in `ref`'s slot at its camera's output size and encoding, and the scaled
        planes (views into the slot when unscaled: read them before releasing it)."""
        width, height = output_size(ref.width, ref.height, self._width.get(ref.camera, 0))
        planes = scale_i420(*ring.planes(ref.slot), width, height)
        settings = self.settings
        if settings.encoding == "jpeg":
            data, shape = jpeg_encode(*planes, settings.jpeg_quality)
            return Encoded(data, "jpeg", "bgr24", tuple(shape), width, height), planes
        if settings.pixel_format == "yuv420p":
            # Unscaled, the slot is Y, U, V back to back: one copy out, the one the transport needs.
            unscaled = planes[0].shape == (ref.height, ref.width)
            data = ring.frame(ref.slot).tobytes() if unscaled else i420_bytes(*planes)
            return Encoded(data, "raw", "yuv420p", i420_shape(width, height), width, height), planes
        color = i420_to_color(*planes, settings.pixel_format)
        return Encoded(color.tobytes(), "raw", settings.pixel_format, color.shape, width, height), planes

    def tap_payload(self, planes: Planes) -> bytes:
        """The tap's own payload (see tap_payload_format) of the scaled planes."""
        if self.tap_format == "raw":
            return i420_bytes(*planes)
        return jpeg_encode(*planes, self.tap_quality)[0]


class TimeShare:
    """Lets a side task take at most `share` of the time, in bursts of up to `burst_s`."""

    def __init__(self, share: float = TAP_TIME_SHARE, burst_s: float = TAP_BURST_S) -> None:
        self.share = share
        self.burst_s = burst_s
        self._budget_s = burst_s
        self._at = time.monotonic()

    def allows(self) -> bool:
        now = time.monotonic()
        self._budget_s = min(self.burst_s, self._budget_s + (now - self._at) * self.share)
        self._at = now
        return self._budget_s > 0

    def spent(self, seconds: float) -> None:
        self._budget_s -= seconds


class CameraTopics:
    """Tap subscribers' camera prefixes, and which cameras they select ("" selects every
    camera; a prefix also selects longer ids), cached per camera until the prefixes change."""

    def __init__(self, topics: frozenset[bytes] = frozenset()) -> None:
        self.topics = topics
        self._selected: dict[str, bool] = {}

    def replace(self, topics: frozenset[bytes]) -> None:
        self.topics = topics
        self._selected.clear()

    def select(self, camera: str) -> bool:
        selected = self._selected.get(camera)
        if selected is None:
            key = camera.encode()
            selected = self._selected[camera] = any(key.startswith(topic) for topic in self.topics)
        return selected


def write_tap_interest(run_dir: Path, topics: frozenset[bytes]) -> None:
    """Publish the tap subscribers' prefixes for the validation workers (see TapInterest)."""
    # "=" then hex: the empty prefix (every camera) must still make a line.
    replace_file(run_dir / TAP_WANTED_FILE, "".join(f"={topic.hex()}\n" for topic in sorted(topics)))


def clear_tap_interest(run_dir: Path) -> None:
    (run_dir / TAP_WANTED_FILE).unlink(missing_ok=True)


class TapInterest:
    """Whether anyone watches a camera on the tap, read from RUN_DIR/tap.wanted (at most every
    INTEREST_CHECK_S): a subscriber is served from its next validated frame after that."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / TAP_WANTED_FILE
        self._checked = 0.0
        self._stamp: tuple[int, int] | None = None
        self._topics = CameraTopics()

    def wants(self, camera: str) -> bool:
        self._refresh()
        return self._topics.select(camera)

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < INTEREST_CHECK_S:
            return
        self._checked = now
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_ino)
            if stamp == self._stamp:
                return
            text = self.path.read_text()
        except OSError:  # the batcher has not written it yet, or it stopped
            stamp, text = None, ""
        self._stamp = stamp
        try:
            self._topics.replace(frozenset(bytes.fromhex(line[1:]) for line in text.split()))
        except ValueError:  # not ours: nobody is served rather than everyone
            self._topics.replace(frozenset())
