"""The built-in traffic-scene generator behind `synthetic://` URLs.

It lets the whole pipeline run, be tested and be benchmarked without a camera: frames
look like a roadside traffic camera (textured roadside, lane markings, moving vehicles,
a frame counter) and are bit-for-bit reproducible from (URL, camera id, frame index),
so tests can check that what reaches Redis is exactly what was captured.

    synthetic://traffic?size=1280x720&fps=10&vehicles=6&seed=7&count=0
"""

from __future__ import annotations

import functools
import re
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import cv2
import numpy as np

from zstream.core.planes import i420_planes
from zstream.errors import SourceError, mask_url
from zstream.sources.base import DecodedFrame, FrameGate, RealtimeClock

MIN_SIDE, MAX_SIDE = 64, 7680
MAX_FPS = 240.0
MAX_VEHICLES = 24  # six per lane still leaves a gap between the longest trucks
MAX_LAG_S = 1.0  # further behind than this, the schedule restarts instead of bursting
_KNOWN_KEYS = ("count", "fps", "seed", "size", "vehicles")
_SIZE_RE = re.compile(r"(\d+)[xX](\d+)")
_UINT_RE = re.compile(r"\d+")
_DECIMAL_RE = re.compile(r"\d+(\.\d*)?|\.\d+")
_LANES = 4


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """Everything that determines the frames of one synthetic camera."""

    width: int
    height: int
    fps: float
    vehicles: int
    seed: int
    count: int  # frames before end of stream; 0 = endless
    label: str  # drawn next to the frame counter


def parse_synthetic_url(url: str, camera_id: str) -> SyntheticSpec:
    """Parse and check a synthetic:// URL; raises SourceError naming the bad key and value."""
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise SourceError(f"{shown}: unparseable URL ({exc})") from exc
    if parts.scheme.lower() != "synthetic":
        raise SourceError(f"{shown}: not a synthetic:// URL")
    scene = parts.netloc + parts.path.rstrip("/")
    if scene.lower() != "traffic":
        masked = urlsplit(shown)  # the scene as written, but with any password in it masked
        scene = masked.netloc + masked.path.rstrip("/")
        raise SourceError(f"{shown}: unknown synthetic scene {scene!r}; the only scene is 'traffic'")
    query = _query(shown, parts.query)
    width, height = _size(shown, query.get("size", "1280x720"))
    return SyntheticSpec(
        width=width,
        height=height,
        fps=_fps(shown, query.get("fps", "10")),
        vehicles=_uint(shown, "vehicles", query.get("vehicles", "6"), MAX_VEHICLES),
        seed=_uint(shown, "seed", query.get("seed", str(zlib.crc32(camera_id.encode()))), 2**32 - 1),
        count=_uint(shown, "count", query.get("count", "0"), None),
        label=camera_id,
    )


def _query(shown: str, query: str) -> dict[str, str]:
    """The query as a dict; unknown, repeated or value-less keys are errors, not ignored."""
    pairs: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if key not in _KNOWN_KEYS:
            raise SourceError(f"{shown}: unknown query key {key!r} (known: {', '.join(_KNOWN_KEYS)})")
        if not sep:
            raise SourceError(f"{shown}: query key {key!r} has no value")
        if key in pairs:
            raise SourceError(f"{shown}: query key {key!r} given twice")
        pairs[key] = value
    return pairs


def _size(shown: str, raw: str) -> tuple[int, int]:
    match = _SIZE_RE.fullmatch(raw)
    sides = (int(match[1]), int(match[2])) if match else ()
    if not sides or any(s % 2 or not MIN_SIDE <= s <= MAX_SIDE for s in sides):
        raise SourceError(
            f"{shown}: size={raw!r} must be WIDTHxHEIGHT, both even and from {MIN_SIDE} to {MAX_SIDE}"
        )
    return sides[0], sides[1]


def _fps(shown: str, raw: str) -> float:
    fps = float(raw) if _DECIMAL_RE.fullmatch(raw) else 0.0
    if not 0 < fps <= MAX_FPS:
        raise SourceError(f"{shown}: fps={raw!r} must be a number > 0 and <= {MAX_FPS:g}")
    return fps


def _uint(shown: str, key: str, raw: str, limit: int | None) -> int:
    if not _UINT_RE.fullmatch(raw) or (limit is not None and int(raw) > limit):
        bound = "a whole number >= 0" + (f" and <= {limit}" if limit is not None else "")
        raise SourceError(f"{shown}: {key}={raw!r} must be {bound}")
    return int(raw)


# --- the scene -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Vehicle:
    lane: int
    length: int
    width: int
    offset: float  # position along the lane's wrap-around cycle at t = 0, in pixels
    speed: float  # pixels per second, always positive; the lane sets the direction
    body: tuple[int, int, int]  # Y, U, V
    cargo: tuple[int, int, int] | None  # trucks: colour of the load behind the cab


_BODY_BGR = [
    (40, 40, 200), (170, 90, 30), (235, 235, 235), (180, 180, 175), (30, 30, 30),
    (40, 200, 230), (60, 130, 40), (30, 120, 240), (120, 60, 110),
]  # fmt: skip
_CARGO_BGR = [(210, 210, 210), (60, 90, 150), (90, 140, 60)]
_LIT, _DARK = (120, 210, 235), (95, 70, 50)  # windows, BGR


def _yuv(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """A BGR colour in I420 terms, converted by the same cv2 routine as the background."""
    i420 = cv2.cvtColor(np.full((2, 2, 3), bgr, np.uint8), cv2.COLOR_BGR2YUV_I420).ravel()
    return int(i420[0]), int(i420[4]), int(i420[5])


_GLASS = _yuv((60, 45, 35))
_HEADLIGHT = _yuv((200, 245, 250))
_TAILLIGHT = _yuv((30, 30, 220))


class TrafficScene:
    """A roadside traffic camera's view, rendered straight into I420 frames.

    The static background is rendered once (in BGR, converted to I420 once); each frame
    is a copy of it with vehicles and the counter drawn into the planes: about 0.2 ms per
    720p frame, with no colour conversion.
    """

    def __init__(
        self, width: int, height: int, seed: int, vehicles: int, *, label: str = "", fps: float = 10.0
    ) -> None:
        if width % 2 or height % 2 or min(width, height) < MIN_SIDE or vehicles < 0:
            raise ValueError(f"bad scene {width}x{height} with {vehicles} vehicles (sides even, >= 64)")
        self.width, self.height, self.label, self.fps = width, height, label, fps
        self._unit = min(height, width * 9 / 16)  # object scale: the height of a 16:9 view
        lane_h = max(4, round(0.1 * self._unit))
        self._road = (round(0.58 * height) - 2 * lane_h, lane_h)  # top row, lane height
        self._car_width = max(2, round(0.6 * lane_h))
        self._max_length = round(self._car_width * 4.4) + 1  # the longest truck
        rng = np.random.default_rng(seed)
        self._font_scale = max(0.35, 1.1 * self._unit / 720)
        self._font_thick = max(1, round(2.5 * self._unit / 720))
        self.label_box, self._text_origin = self._label_layout()
        background = cv2.cvtColor(self._paint_background(rng), cv2.COLOR_BGR2YUV_I420)
        background.flags.writeable = False
        self._background = background
        self._vehicles = self._make_vehicles(rng, vehicles)

    @classmethod
    def from_spec(cls, spec: SyntheticSpec) -> TrafficScene:
        """The scene a parsed synthetic:// URL describes."""
        return cls(spec.width, spec.height, spec.seed, spec.vehicles, label=spec.label, fps=spec.fps)

    @property
    def road_rows(self) -> slice:
        """Rows of the carriageway: the only rows besides the counter that change over time."""
        top, lane_h = self._road
        return slice(top, top + _LANES * lane_h)

    def render(self, index: int) -> np.ndarray:
        """Frame `index` as a (height*3//2, width) uint8 I420 array, always the same bytes."""
        frame = self._background.copy()
        planes = i420_planes(frame, self.width, self.height)
        seconds = index / self.fps
        for vehicle in self._vehicles:
            self._draw_vehicle(planes, vehicle, seconds)
        text = f"{self.label} #{index:06d}".strip()
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(
            planes[0], text, self._text_origin, font, self._font_scale, 235, self._font_thick, cv2.LINE_AA
        )
        return frame

    def _texture(self, rng: np.random.Generator, cell: float) -> np.ndarray:
        """Zero-mean, unit-ish noise with features about `cell` pixels across (float32, H x W)."""
        gw, gh = max(2, round(self.width / cell)), max(2, round(self.height / cell))
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        return cv2.resize(grid, (self.width, self.height), interpolation=cv2.INTER_CUBIC)

    def _paint_background(self, rng: np.random.Generator) -> np.ndarray:
        w, h, u = self.width, self.height, self._unit
        top, lane_h = self._road
        bottom = top + _LANES * lane_h
        walk = max(2, round(0.05 * u))
        img = np.empty((h, w, 3), np.float32)
        img[:] = (55, 115, 75)  # grass
        img[top - walk : bottom + walk] = (165, 168, 172)  # pavement
        img[top:bottom] = (92, 94, 98)  # asphalt
        self._paint_roadside(img, rng, top - walk, bottom + walk)
        coarse, medium = self._texture(rng, 0.12 * u), self._texture(rng, 0.012 * u)
        grain = rng.standard_normal((h, w)).astype(np.float32)
        img += (coarse * 14 + medium * 9 + grain * 2.5)[..., None]
        self._paint_markings(img, top, lane_h, walk)
        frame = np.clip(img, 0, 255).astype(np.uint8)
        x0, y0, x1, y1 = self.label_box
        frame[y0:y1, x0:x1] = 0  # black plate behind the counter keeps it readable
        return frame

    def _paint_roadside(
        self, img: np.ndarray, rng: np.random.Generator, walk_top: int, walk_bottom: int
    ) -> None:
        """Buildings with windows along the far side, trees on both verges."""
        w, h, u = self.width, self.height, self._unit
        x = int(rng.integers(0, max(1, round(0.05 * u))))
        while x < w and walk_top > 8:
            bw = int(rng.integers(round(0.15 * u), round(0.35 * u)) + 1)
            bh = min(walk_top - 4, int(rng.integers(round(0.15 * u), round(0.3 * u))) + 1)
            colour = tuple(float(c) for c in rng.integers(70, 200, 3))
            y_base = walk_top - 2
            cv2.rectangle(img, (x, y_base - bh), (x + bw, y_base), colour, -1)
            cv2.rectangle(img, (x, y_base - bh), (x + bw, y_base), (40, 40, 40), max(1, round(u / 360)))
            step, side = max(6, round(0.045 * u)), max(3, round(0.025 * u))
            for wy in range(y_base - bh + step // 2, y_base - side, step):
                for wx in range(x + step // 2, x + bw - side, step):
                    lit = (wx * 7 + wy * 13) % 5 == 0  # a fixed scatter of lit windows
                    cv2.rectangle(img, (wx, wy), (wx + side, wy + side), _LIT if lit else _DARK, -1)
            x += bw + int(rng.integers(round(0.03 * u), round(0.12 * u)) + 1)
        for band_top, band_bottom in ((0, walk_top), (walk_bottom, h)):
            if band_bottom - band_top < 8:
                continue
            for _ in range(max(1, round(6 * w / u))):
                centre = (int(rng.integers(0, w)), int(rng.integers(band_top, band_bottom)))
                radius = int(rng.integers(round(0.03 * u), round(0.07 * u)) + 2)
                shade = float(rng.integers(0, 30))
                cv2.circle(img, centre, radius, (30 + shade, 80 + shade, 35), -1, cv2.LINE_AA)
                cv2.circle(img, centre, radius, (20, 50, 25), max(1, round(u / 400)), cv2.LINE_AA)

    def _paint_markings(self, img: np.ndarray, top: int, lane_h: int, walk: int) -> None:
        """Edge lines, a double yellow centre line, dashed lane lines and a zebra crossing."""
        w, u = self.width, self._unit
        line = max(1, round(0.008 * u))
        white, yellow = (235, 235, 235), (40, 200, 230)
        bottom = top + _LANES * lane_h
        for y in (top + line, bottom - 2 * line):
            img[y : y + line] = white
        mid = top + 2 * lane_h
        img[mid - 2 * line : mid - line] = yellow
        img[mid + line : mid + 2 * line] = yellow
        dash = max(4, round(0.09 * u))
        for y in (top + lane_h, top + 3 * lane_h):
            for x in range(0, w, 2 * dash):
                img[y - line // 2 : y - line // 2 + line, x : x + dash] = white
        stripe = max(2, round(0.025 * u))
        cross = round(0.72 * w)
        for x in range(cross, min(w, cross + 12 * stripe), 2 * stripe):
            img[top + 3 * line : bottom - 3 * line, x : x + stripe] = white
        img[top - walk : top - walk + line] = (120, 120, 120)  # kerbs
        img[bottom + walk - line : bottom + walk] = (120, 120, 120)

    def _label_layout(self) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
        """Box (x0, y0, x1, y1) for the counter plate, wide enough for a six-digit counter."""
        text = f"{self.label} #000000".strip()
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, self._font_scale, self._font_thick)
        pad = max(2, round(0.015 * self._unit))
        box = (pad, pad, min(self.width, 3 * pad + tw), min(self.height, 3 * pad + th + base))
        return box, (2 * pad, 2 * pad + th)

    def _make_vehicles(self, rng: np.random.Generator, count: int) -> list[_Vehicle]:
        """Vehicles dealt round the lanes, each in its own slot of the lane's wrap-around cycle.

        One speed per lane (lanes differ) keeps slots from overlapping, so no vehicle drives
        through another.
        """
        lane_speed = [self.width * s for s in rng.uniform(0.12, 0.4, _LANES)]  # widths per second
        vehicles = []
        for lane in range(_LANES):
            members = len(range(lane, count, _LANES))
            slot = self._period() / max(1, members)
            for k in range(members):
                truck = rng.random() < 0.2
                length = round(self._car_width * (rng.uniform(3.6, 4.4) if truck else rng.uniform(2.1, 2.6)))
                body = _yuv(_BODY_BGR[int(rng.integers(len(_BODY_BGR)))])
                cargo = _yuv(_CARGO_BGR[int(rng.integers(len(_CARGO_BGR)))]) if truck else None
                offset = k * slot + rng.uniform(0, max(0.0, slot - self._max_length))
                vehicles.append(
                    _Vehicle(lane, length, self._car_width, offset, lane_speed[lane], body, cargo)
                )
        return vehicles

    def _period(self) -> int:
        """Distance after which a vehicle reappears: off one edge, then in at the other."""
        return self.width + self._max_length

    def vehicle_boxes(self, index: int) -> list[tuple[int, int, int, int]]:
        """(x0, y0, x1, y1) of every vehicle in frame `index`, as drawn (partly or wholly off the
        frame when entering or leaving): the ground truth for tests of what sees vehicles."""
        return [self._box_of(car, index / self.fps) for car in self._vehicles]

    def _box_of(self, car: _Vehicle, seconds: float) -> tuple[int, int, int, int]:
        top, lane_h = self._road
        travel = (car.offset + car.speed * seconds) % self._period()
        x0 = int(travel) - self._max_length if _forward(car) else self.width - int(travel)
        y0 = top + car.lane * lane_h + (lane_h - car.width) // 2
        return x0, y0, x0 + car.length, y0 + car.width

    def _draw_vehicle(self, planes: tuple[np.ndarray, ...], car: _Vehicle, seconds: float) -> None:
        x0, y0, _, y1 = self._box_of(car, seconds)
        forward = _forward(car)
        shadow = max(1, car.width // 6)
        _box(planes[0], x0 + shadow, y0 + shadow, x0 + car.length + shadow, y1 + shadow)[...] >>= 1

        def part(a: float, b: float, rows: tuple[int, int], yuv: tuple[int, int, int]) -> None:
            """Paint span a..b of the vehicle's length, from its rear (0) to its front (1)."""
            lo, hi = round(car.length * a), round(car.length * b)
            xa, xb = (x0 + lo, x0 + hi) if forward else (x0 + car.length - hi, x0 + car.length - lo)
            _fill(planes, xa, rows[0], xb, rows[1], yuv)

        inset, lamp = max(1, car.width // 8), max(1, car.width // 5)
        whole, glass = (y0, y1), (y0 + inset, y1 - inset)
        part(0.0, 1.0, whole, car.body)
        if car.cargo is not None:
            part(0.0, 0.72, whole, car.cargo)
            part(0.8, 0.9, glass, _GLASS)
        else:
            part(0.1, 0.22, glass, _GLASS)
            part(0.62, 0.78, glass, _GLASS)
        for rows in ((y0, y0 + lamp), (y1 - lamp, y1)):
            part(0.96, 1.0, rows, _HEADLIGHT)
            part(0.0, 0.04, rows, _TAILLIGHT)


def _forward(car: _Vehicle) -> bool:
    """Near lanes drive right, far lanes drive left."""
    return car.lane >= _LANES // 2


def _box(plane: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """The part of the rectangle [x0, x1) x [y0, y1) that lies inside `plane`, as a view."""
    h, w = plane.shape
    return plane[max(0, y0) : max(0, min(h, y1)), max(0, x0) : max(0, min(w, x1))]


def _fill(planes: tuple[np.ndarray, ...], x0: int, y0: int, x1: int, y1: int, yuv: tuple[int, ...]) -> None:
    """Fill a rectangle in all three planes; chroma covers it at half resolution."""
    _box(planes[0], x0, y0, x1, y1)[...] = yuv[0]
    for plane, value in zip(planes[1:], yuv[1:], strict=True):
        _box(plane, x0 // 2, y0 // 2, (x1 + 1) // 2, (y1 + 1) // 2)[...] = value


# --- the source ----------------------------------------------------------------------------


_cached_scene = functools.lru_cache(maxsize=8)(TrafficScene.from_spec)


def expected_frame(url: str, camera_id: str, index: int) -> np.ndarray:
    """The I420 array SyntheticSource(url, camera_id) yields as frame `index`, for tests."""
    return _cached_scene(parse_synthetic_url(url, camera_id)).render(index)


class SyntheticSource:
    """FrameSource for synthetic:// URLs, paced in real time at the URL's fps."""

    def __init__(self, url: str, camera_id: str) -> None:
        self.url = url
        self.spec = parse_synthetic_url(url, camera_id)
        self._scene: TrafficScene | None = None

    def open(self) -> None:
        """Pre-render the background (~0.1 s at 720p, ~0.2 s at 1080p) before the first frame."""
        if self._scene is None:
            self._scene = TrafficScene.from_spec(self.spec)

    def frames(self, stop: threading.Event, gate: FrameGate) -> Iterator[DecodedFrame]:
        """Yield frames 0, 1, 2... each at its due time, until `count` frames or `stop`.
        A frame the gate refuses is never rendered."""
        scene = self._scene
        if scene is None:
            raise SourceError(f"{mask_url(self.url)}: frames() called before open()")
        spec, clock, index = self.spec, RealtimeClock(MAX_LAG_S), 0
        while spec.count == 0 or index < spec.count:
            pts = index / spec.fps
            if gate.admit(pts):
                frame = scene.render(index)
                if not clock.wait(pts, stop):
                    return
                y, u, v = i420_planes(frame, spec.width, spec.height)
                yield DecodedFrame(spec.width, spec.height, y, u, v, pts)
            elif not clock.wait(pts, stop):
                return
            index += 1

    def close(self) -> None:
        """Drop the scene; idempotent, and harmless before open()."""
        self._scene = None
