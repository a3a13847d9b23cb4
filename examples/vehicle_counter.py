"""Count moving vehicles per camera and minute from zstream's batches, with OpenCV alone.

    .venv/bin/python examples/vehicle_counter.py --stream zstream:frames --counts zstream:vehicle_counts

It reads batches through a consumer group (run several copies under one group to share the
cameras' batches; a crashed copy's batches are claimed by the others). Per camera: MOG2
background subtraction on a 320-pixel-wide grey picture, foreground blobs, a nearest-neighbour
tracker with constant-velocity prediction, and a vehicle is counted when its track crosses
the counting line (a vertical line, the middle of the picture by default) in either direction.
No model, nothing to download.

Counts go to a Redis stream, one entry per camera and minute of capture time as soon as the
camera's frames have moved on to the next minute: fields camera, minute (epoch seconds of its
start), vehicles, frames. Minutes still open when it stops are written with partial=1.
A camera's tracks assume its frames in order: keep one copy per camera, or one group copy
per set of cameras, if order matters more than sharing.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zstream.consumer import BatchConsumer, Frame
from zstream.tensor import batch_tensor

WORK_WIDTH = 320  # pixels across the picture the counter looks at: plenty for vehicles, cheap
PRIME_ROUNDS = 50  # times the warm-up's median background is fed to the model


@dataclass
class Track:
    id: int
    x: float
    y: float
    vx: float = 0.0
    vy: float = 0.0
    missed: int = 0
    hits: int = 1
    counted: bool = False


@dataclass
class CameraCounter:
    """One camera's background model, tracks and count."""

    line: float = 0.5  # the counting line, as a fraction of the width
    max_jump: float = 0.1  # the farthest a new track's vehicle moves in a frame, fraction of the width
    max_error: float = 0.06  # how far along its motion a moving track's vehicle may be from the prediction
    max_across: float = 0.02  # ... and across its motion (lanes are farther apart)
    min_area: float = 0.0004  # the smallest blob, as a fraction of the picture's area
    max_missed: int = 2  # frames a track survives without its vehicle
    warm_up: int = 20  # a camera's first frames make its background; nothing is counted in them
    frames: int = 0
    tracks: list[Track] = field(default_factory=list)
    counted: int = 0
    _next_id: int = 0
    _shape: tuple[int, ...] = ()
    _first: list[np.ndarray] = field(default_factory=list)  # the warm-up pictures
    _subtractor: cv2.BackgroundSubtractor | None = None

    def update(self, picture: np.ndarray) -> int:
        """Feed one picture; how many vehicles crossed the line since the previous one."""
        if picture.shape != self._shape:  # a new camera, or one that changed resolution: start over
            self._restart(picture.shape)
        self.frames += 1
        if self.frames <= self.warm_up:
            self._first.append(picture)
            if self.frames == self.warm_up:
                self._prime()
            return 0
        crossed = self._track(self._blobs(picture), picture.shape[1])
        self.counted += crossed
        return crossed

    def _restart(self, shape: tuple[int, ...]) -> None:
        self._shape, self.frames, self.tracks, self._first = shape, 0, [], []
        self._subtractor = cv2.createBackgroundSubtractorMOG2(
            history=150, varThreshold=25, detectShadows=False
        )

    def _prime(self) -> None:
        """Teach the model the median of the warm-up pictures: the road without its vehicles.
        Learning from the first picture instead leaves ghosts of the vehicles in it for minutes."""
        background = np.median(np.stack(self._first), axis=0).astype(np.uint8)
        for _ in range(PRIME_ROUNDS):
            self._subtractor.apply(background)
        self._first = []

    def _blobs(self, picture: np.ndarray) -> np.ndarray:
        """(n, 2) centroids of the moving blobs."""
        mask = self._subtractor.apply(picture)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((1, 9), np.uint8))  # along the road only
        _, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
        keep = stats[1:, cv2.CC_STAT_AREA] >= self.min_area * mask.size
        return centroids[1:][keep]

    def _track(self, blobs: np.ndarray, width: int) -> int:
        """Greedy nearest-neighbour matching of predicted tracks to blobs; count line crossings."""
        line, pairs = self.line * width, []
        for t, track in enumerate(self.tracks):
            for b, (x, y) in enumerate(blobs):
                error = self._error(track, x, y, width)
                if error is not None:
                    pairs.append((error, t, b))
        used_tracks, used_blobs, crossed = set(), set(), 0
        for _, t, b in sorted(pairs):
            if t in used_tracks or b in used_blobs:
                continue
            used_tracks.add(t)
            used_blobs.add(b)
            crossed += self._move(self.tracks[t], *blobs[b], line)
        for t, track in enumerate(self.tracks):
            if t not in used_tracks:
                track.missed += 1
                track.x, track.y = track.x + track.vx, track.y + track.vy
        self.tracks = [track for track in self.tracks if track.missed <= self.max_missed]
        for b, (x, y) in enumerate(blobs):
            if b not in used_blobs:
                self.tracks.append(Track(self._next_id, float(x), float(y)))
                self._next_id += 1
        return crossed

    def _error(self, track: Track, x: float, y: float, width: int) -> float | None:
        """How far a blob is from where the track should be; None when out of its reach. A
        moving track's gate is long along its motion (blob centroids wobble as vehicles enter,
        leave and pass each other) and tight across it, so it cannot jump to the next lane."""
        ex, ey = x - track.x - track.vx, y - track.y - track.vy
        speed = float(np.hypot(track.vx, track.vy))
        if track.hits < 2 or speed < 1.0:
            distance = float(np.hypot(ex, ey))
            return distance if distance <= self.max_jump * width else None
        along = abs(ex * track.vx + ey * track.vy) / speed
        across = abs(ey * track.vx - ex * track.vy) / speed
        if along > self.max_error * width or across > self.max_across * width:
            return None
        return float(np.hypot(ex, ey))

    @staticmethod
    def _move(track: Track, x: float, y: float, line: float) -> int:
        crossed = not track.counted and (track.x - line) * (x - line) < 0
        if track.hits < 2:
            track.vx, track.vy = x - track.x, y - track.y
        else:  # smoothed: one wobbly centroid must not throw the next prediction off
            track.vx, track.vy = (track.vx + x - track.x) / 2, (track.vy + y - track.y) / 2
        track.x, track.y, track.missed, track.hits = float(x), float(y), 0, track.hits + 1
        track.counted = track.counted or crossed
        return int(crossed)


def small_picture(frame: Frame) -> np.ndarray:
    """The frame in BGR, WORK_WIDTH wide, by the tensor path: a JPEG decoded at reduced scale,
    raw I420 scaled plane by plane before its conversion. Colour, not grey: a red or green car
    can have the luma of the asphalt."""
    height = max(2, round(frame.height * WORK_WIDTH / frame.width))
    tensor = batch_tensor(
        [frame], (WORK_WIDTH, height), letterbox=False, layout="NHWC", dtype="uint8", color="bgr"
    )
    return tensor.array[0]


class MinuteCounts:
    """Vehicles per camera and capture minute, written to a stream when a minute closes."""

    def __init__(self, client: redis.Redis, stream: str) -> None:
        self.client, self.stream = client, stream
        self.open: dict[str, list[int]] = {}  # camera -> [minute, vehicles, frames]
        self.written = 0

    def add(self, camera: str, capture_ts: float, vehicles: int) -> None:
        minute = int(capture_ts // 60) * 60
        current = self.open.get(camera)
        if current is not None and current[0] < minute:
            self._write(camera, current, partial=False)
            current = None
        if current is None or current[0] > minute:  # (a late frame of a closed minute: counted now)
            current = self.open.setdefault(camera, [minute, 0, 0])
        current[1] += vehicles
        current[2] += 1

    def close(self) -> None:
        for camera, current in list(self.open.items()):
            self._write(camera, current, partial=True)

    def _write(self, camera: str, current: list[int], partial: bool) -> None:
        minute, vehicles, frames = current
        fields = {"camera": camera, "minute": minute, "vehicles": vehicles, "frames": frames}
        self.client.xadd(self.stream, {**fields, "partial": int(partial)}, maxlen=100000, approximate=True)
        del self.open[camera]
        self.written += 1


def run(args: argparse.Namespace) -> dict[str, int]:
    """Count until stopped (or idle for --until-idle s); per-camera totals."""
    counters: dict[str, CameraCounter] = {}
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    client = redis.Redis.from_url(args.redis)
    minutes = MinuteCounts(client, args.counts)
    consumer = BatchConsumer(args.redis, stream=args.stream, group=args.group, start=args.start, count=4)
    last_batch: float | None = None  # monotonic time of the latest batch
    try:
        while not stop["now"]:
            batches = consumer.read(block_ms=500)
            for batch in batches:
                for frame in batch.frames:
                    counter = counters.setdefault(frame.camera, CameraCounter(line=args.line))
                    minutes.add(frame.camera, frame.capture_ts, counter.update(small_picture(frame)))
                consumer.ack(batch)
            last_batch = time.monotonic() if batches else last_batch
            if args.until_idle and last_batch and time.monotonic() - last_batch > args.until_idle:
                break
    except KeyboardInterrupt:
        pass
    finally:
        minutes.close()
        consumer.close()
        client.close()
    return {camera: counter.counted for camera, counter in sorted(counters.items())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--stream", default="zstream:frames", help="the pipeline's batch stream")
    parser.add_argument("--group", default="vehicle-counter", help="consumer group")
    parser.add_argument(
        "--start", default="$", help='where a new group starts: "$" new batches, "0" all kept'
    )
    parser.add_argument("--counts", default="zstream:vehicle_counts", help="stream the counts go to")
    parser.add_argument("--line", type=float, default=0.5, help="counting line, fraction of the width")
    parser.add_argument(
        "--until-idle", type=float, default=0.0, help="stop after this many s without batches"
    )
    args = parser.parse_args()
    print(json.dumps({"vehicles": run(args)}))


if __name__ == "__main__":
    main()
