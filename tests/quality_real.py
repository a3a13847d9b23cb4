"""The labelled set of real pictures: photographs and CCTV footage that Debian packages ship,
captured the way a camera would at 352 to 2560 px wide and 4K, clean and degraded.

Sources (installed by scripts/setup --test, nothing downloaded at test time):

* OpenCV's sample photographs (opencv-doc): buildings, streets, an aerial view, a football
  match, graffiti, calibration shots of a chessboard in an office, objects; 480-1282 px.
* KDE's photographic wallpapers (plasma-workspace-wallpapers) at 2560x1600: a lake pier in
  fog, boats at dusk, a forest path, architecture, leaves with a blurred background, a kite in
  a clear sky (a frame that is mostly flat), cups; the source of 1280, 1920 px and 4K views
  (a 3840x2160 mosaic of four 1920x1080 crops: no picture is ever upscaled, which softens it).
* vtest.avi (opencv-doc): a real, old, noisy 768x576 CCTV clip of people in a square.

Each view is downscaled with area averaging from its original (a sharp original stays sharp),
given sensor noise (sigma 1-2.5 by day; at night gain 0.4-0.6 and sigma 3-5) and encoded as
the camera's encoder would (JPEG quality 85: blocks, ringing, noise partly wiped).

HELD_OUT names sources never looked at while the limits were chosen; rates are reported for
them apart. Strengths of optical degradations scale with the picture: "sigma 2" is 2 px at
640 px wide, 6 px at 1920.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tests.quality_set import motion_kernel

DOC = Path("/usr/share/doc/opencv-doc/examples/data")
WALLPAPERS = Path("/usr/share/wallpapers")
OPENCV_PHOTOS = (
    *("aero1", "aero3", "aloeL", "apple", "basketball1", "board", "box_in_scene", "building"),
    *("butterfly", "chicky_512", "ela_original", "fruits", "graf1", "home", "left", "right"),
    *("leuvenA", "messi5", "orange", "rubberwhale1", "squirrel_cls", "stuff", "sudoku", "baboon"),
    *(f"left{k:02d}" for k in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)),
    *(f"right{k:02d}" for k in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)),
    *("aloeR", "basketball2", "graf3", "leuvenB", "rubberwhale2", "box"),
)
WALLPAPER_PHOTOS = (
    *("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf"),
    *("Grey", "Kite", "OneStandsOut", "Path", "summer_1am"),
)
HELD_OUT = frozenset(
    {"aloeR", "basketball2", "graf3", "leuvenB", "rubberwhale2", "box", "Grey", "OneStandsOut"}
    | {f"right{k:02d}" for k in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)}
)
WIDTHS = (352, 640, 1280, 1920)
UNIT = 640  # optical strengths are in pixels at this width
FPS = 10.0
BLACK, WHITE = 16.0, 235.0


@dataclass(frozen=True, slots=True)
class View:
    """One clean camera view: the light on the sensor (float32 video-range luma) and its noise."""

    name: str
    source: str  # the photograph or clip it comes from
    night: bool
    picture: np.ndarray
    sigma: float
    seed: int

    @property
    def width(self) -> int:
        return self.picture.shape[1]

    @property
    def held_out(self) -> bool:
        return self.source in HELD_OUT

    def capture(
        self, picture: np.ndarray | None = None, sigma: float | None = None, seed: int = 0
    ) -> np.ndarray:
        """What the camera delivers: picture + sensor noise, clipped, JPEG-encoded at 85."""
        picture = self.picture if picture is None else picture
        noise = _noise(picture.shape, [self.seed, seed])
        noisy = cv2.scaleAdd(noise, self.sigma if sigma is None else sigma, picture.astype(np.float32))
        return encoded(_to_uint8(noisy), 85)


_PAD = 64  # sensor noise is a window at a random offset in a larger fixed field


@functools.lru_cache(maxsize=8)
def _noise_field(h: int, w: int) -> np.ndarray:
    field = np.random.default_rng([h, w]).standard_normal((h + _PAD, w + _PAD), np.float32)
    field.flags.writeable = False
    return field


def _noise(shape: tuple[int, ...], seed: list[int]) -> np.ndarray:
    """Unit Gaussian noise, independent pixel by pixel between different offsets; ~10x cheaper
    than drawing it afresh."""
    h, w = shape
    dy, dx = np.random.default_rng(seed).integers(0, _PAD, 2)
    return _noise_field(h, w)[dy : dy + h, dx : dx + w]


def _to_uint8(picture: np.ndarray) -> np.ndarray:
    return (np.clip(picture, BLACK, WHITE) + 0.5).astype(np.uint8)


def encoded(luma: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", luma, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


# --- sources ----------------------------------------------------------------------------------


def _luma(bgr: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
    return (BLACK + grey.astype(np.float32) * ((WHITE - BLACK) / 255.0)).astype(np.float32)


@functools.cache
def photo(name: str) -> np.ndarray:
    """A source photograph as float32 video-range luma at its native size (read-only)."""
    if name in WALLPAPER_PHOTOS:
        path = WALLPAPERS / name / "contents" / "images" / "2560x1600.jpg"
    else:
        path = next(DOC.glob(f"{name}.*"))
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{path}: missing or unreadable; run scripts/setup --test")
    luma = _luma(image)
    luma.flags.writeable = False
    return luma


def downscaled(picture: np.ndarray, width: int) -> np.ndarray:
    if width >= picture.shape[1]:
        return picture
    height = round(picture.shape[0] * width / picture.shape[1])
    return cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)


def mosaic_4k(names: tuple[str, str, str, str]) -> np.ndarray:
    """3840x2160 of real pixels: the centre 1920x1080 of four 2560 px photographs."""
    out = np.empty((2160, 3840), np.float32)
    for k, name in enumerate(names):
        p = photo(name)
        y0, x0 = (p.shape[0] - 1080) // 2, (p.shape[1] - 1920) // 2
        out[(k // 2) * 1080 : (k // 2 + 1) * 1080, (k % 2) * 1920 : (k % 2 + 1) * 1920] = p[
            y0 : y0 + 1080, x0 : x0 + 1920
        ]
    return out


MOSAICS = (
    ("EveningGlow", "Path", "ColorfulCups", "BytheWater"),
    ("ColdRipple", "FallenLeaf", "Kite", "summer_1am"),
    ("Grey", "OneStandsOut", "Path", "EveningGlow"),
)


@functools.cache
def clip_frames(count: int = 64, step: int = 3) -> tuple[np.ndarray, ...]:
    """Frames of vtest.avi (real CCTV, 768x576) as float32 video-range luma."""
    path = DOC / "vtest.avi"
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while len(frames) < count:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(bgr)
    finally:
        capture.release()
    if len(frames) < count:
        raise FileNotFoundError(
            f"{path}: {len(frames)} frames read, {count} needed; run scripts/setup --test"
        )
    return tuple(_luma(f) for f in frames[::step])


def clean_views(stride: int = 1) -> Iterator[View]:
    """Every source at every width up to its own (4K mosaics apart), day; every third also
    at night. stride > 1 keeps every stride-th view (a quicker run)."""
    k = 0
    for source in (*OPENCV_PHOTOS, *WALLPAPER_PHOTOS):
        original = photo(source)
        widths = sorted({w for w in WIDTHS if w < original.shape[1]} | {original.shape[1]})
        for width in widths:
            k += 1
            if k % stride:
                continue
            yield from _day_and_night(f"{source}@{width}", source, downscaled(original, width), k)
    for m, names in enumerate(MOSAICS):
        k += 1
        if k % stride == 0:
            yield from _day_and_night(f"mosaic{m}@3840", "+".join(names), mosaic_4k(names), k)
    for f, frame in enumerate(clip_frames()[:: 4 * stride]):
        yield from _day_and_night(f"vtest{f}@768", "vtest", frame, 5000 + f)


def _day_and_night(name: str, source: str, picture: np.ndarray, k: int) -> Iterator[View]:
    rng = np.random.default_rng(k)
    yield View(name, source, False, picture, float(rng.uniform(1.0, 2.5)), k)
    if k % 3 == 0:
        dark = np.where(picture >= 225, picture, (picture - BLACK) * float(rng.uniform(0.4, 0.6)) + BLACK)
        yield View(f"{name}-night", source, True, dark.astype(np.float32), float(rng.uniform(3, 5)), k + 1)


# --- degradations -----------------------------------------------------------------------------

Apply = Callable[[View, np.random.Generator], np.ndarray]


@dataclass(frozen=True, slots=True)
class Degradation:
    case: str
    reasons: tuple[str, ...]  # any of these counts as detected
    strength: str
    level: float  # the strength as a number, for the "starts to be detected" figure
    must_detect: bool
    apply: Apply
    at_night: bool = True


def _units(view: View, value: float) -> float:
    return value * view.width / UNIT


def blurred(picture: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; a wide one (sigma > 6 px) computed at a reduced size and scaled back,
    which a blur that wide cannot tell apart, at a fraction of the cost."""
    k = int(sigma // 3) if sigma > 6 else 1
    if k == 1:
        return cv2.GaussianBlur(picture, (0, 0), sigma)
    h, w = picture.shape
    small = cv2.resize(picture, (w // k, h // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / k), (w, h), interpolation=cv2.INTER_LINEAR)


def _gaussian(sigma: float) -> Apply:
    return lambda v, rng: v.capture(blurred(v.picture, _units(v, sigma)), seed=1)


def _defocus(radius: float) -> Apply:
    """A defocused lens: a uniform disc (the aperture's image), not a Gaussian."""

    def apply(v: View, rng: np.random.Generator) -> np.ndarray:
        r = _units(v, radius)
        size = 2 * int(np.ceil(r)) + 1
        y, x = np.mgrid[:size, :size] - size // 2
        disc = (x * x + y * y <= r * r).astype(np.float32)
        return v.capture(cv2.filter2D(v.picture, -1, disc / disc.sum()), seed=2)

    return apply


def _motion(length: float) -> Apply:
    def apply(v: View, rng: np.random.Generator) -> np.ndarray:
        n = max(2, round(_units(v, length)))
        kernel = motion_kernel(n, float(rng.choice([0, 30, 45, 90, 120, 160])))
        return v.capture(cv2.filter2D(v.picture, -1, kernel), seed=3)

    return apply


def _haze(transmission: float) -> Apply:
    """Fog: the scene attenuated to `transmission`, the rest bright airlight."""

    def apply(v: View, rng: np.random.Generator) -> np.ndarray:
        air = float(rng.uniform(170, 215))
        return v.capture(v.picture * transmission + air * (1 - transmission), seed=4)

    return apply


def _low_light(gain: float) -> Apply:
    """Too little light: exposure cut, and the sensor's gain up, so its noise with it."""
    return lambda v, rng: v.capture((v.picture - BLACK) * gain + BLACK, sigma=v.sigma + 4.0, seed=5)


def _over(gain: float) -> Apply:
    return lambda v, rng: v.capture((v.picture - BLACK) * gain + BLACK, seed=6)


def _dirty(veil: float, smear: float) -> Apply:
    """A dirty or wet dome: light scattered into a veil over everything, and a smear."""

    def apply(v: View, rng: np.random.Generator) -> np.ndarray:
        soft = blurred(v.picture, _units(v, smear))
        glow = float(rng.uniform(150, 200))
        return v.capture(soft * (1 - veil) + glow * veil, seed=7)

    return apply


def _droplets(share: float) -> Apply:
    """Rain on the lens: blotches where the picture is strongly blurred, clear elsewhere."""

    def apply(v: View, rng: np.random.Generator) -> np.ndarray:
        h, w = v.picture.shape
        field = cv2.GaussianBlur(rng.standard_normal((h * 64 // w, 64), np.float32), (0, 0), 1.6)
        mask = (field > np.quantile(field, 1 - share)).astype(np.float32)
        mask = cv2.GaussianBlur(cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0), w / 200)
        soft = blurred(v.picture, _units(v, 6))
        return v.capture(v.picture * (1 - mask) + soft * mask, seed=8)

    return apply


def _compressed(quality: int) -> Apply:
    """Starved bitrate: the camera's encoder at a very low quality."""
    return lambda v, rng: encoded(v.capture(seed=9), quality)


def _noisy(sigma: float) -> Apply:
    return lambda v, rng: v.capture(sigma=float(np.hypot(v.sigma, sigma)), seed=10)


def _covered(v: View, rng: np.random.Generator) -> np.ndarray:
    """A hand or a bag over the lens: dark, a smooth gradient, sensor noise."""
    h, w = v.picture.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = (y - h / 2) / h, (x - w / 2) / w
    angle = rng.uniform(0, 2 * np.pi)
    level = float(rng.uniform(18, 40)) + float(rng.uniform(4, 14)) * (x * np.cos(angle) + y * np.sin(angle))
    return v.capture(level - float(rng.uniform(2, 10)) * (x * x + y * y), sigma=float(rng.uniform(2, 5)))


DEGRADATIONS: tuple[Degradation, ...] = (
    *(
        Degradation("gaussian blur", ("blurred",), f"sigma {s}", s, s >= 3, _gaussian(s))
        for s in (1, 2, 3, 5)
    ),
    *(Degradation("defocus", ("blurred",), f"radius {r}", r, r >= 4, _defocus(r)) for r in (1.5, 2.5, 4, 6)),
    *(Degradation("motion blur", ("blurred",), f"{n} px", n, n == 12, _motion(n)) for n in (4, 8, 12, 20)),
    *(
        Degradation("haze", ("low_contrast",), f"transmission {t}", t, t <= 0.15, _haze(t))
        for t in (0.4, 0.25, 0.15)
    ),
    *(
        Degradation("low light", ("too_dark", "noisy"), f"gain {g}", g, g <= 0.08, _low_light(g))
        for g in (0.2, 0.12, 0.08)
    ),
    *(
        Degradation("over-exposure", ("too_bright",), f"gain {g}", g, g >= 3.5, _over(g), at_night=False)
        for g in (2.0, 2.5, 3.5)
    ),
    *(
        Degradation("dirty lens", ("blurred", "low_contrast"), f"veil {a}", a, a >= 0.7, _dirty(a, 2.0))
        for a in (0.3, 0.5, 0.7)
    ),
    Degradation("wet lens", ("blurred", "low_contrast"), "drops on 50 %", 0.5, False, _droplets(0.5)),
    *(Degradation("compression", ("blurred",), f"JPEG q{q}", q, False, _compressed(q)) for q in (10, 5, 2)),
    *(Degradation("sensor noise", ("noisy",), f"sigma {s}", s, s >= 25, _noisy(s)) for s in (10, 15, 25)),
    Degradation("covered lens", ("blank", "too_dark", "low_contrast"), "hand or bag", 1.0, True, _covered),
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled frame: reasons empty means clean."""

    case: str
    strength: str
    level: float
    reasons: tuple[str, ...]
    must_detect: bool
    view: View
    luma: np.ndarray


def labelled(stride: int = 1, share: int = 3) -> Iterator[Sample]:
    """Each clean view, then each degradation on every `share`-th view (taking turns)."""
    for k, view in enumerate(clean_views(stride)):
        yield Sample("clean", "night" if view.night else "day", 0.0, (), True, view, view.capture())
        for n, d in enumerate(DEGRADATIONS):
            if (k + n) % share == 0 and (d.at_night or not view.night):
                luma = d.apply(view, np.random.default_rng([view.seed, n]))
                yield Sample(d.case, d.strength, d.level, d.reasons, d.must_detect, view, luma)


# --- fixed cameras ----------------------------------------------------------------------------

LOW_DETAIL = frozenset({"DarkestHour", "apple"})  # almost no fine detail: blur is not measurable
WARMUP_S, CAMERA_FPS = 12.0, 1.0  # longer than the default baseline_warmup_s


@dataclass(frozen=True, slots=True)
class Step:
    """One frame of a fixed camera's run; reasons empty: clean. `judged`: counted in the rates
    (warm-up frames are fed but not judged)."""

    sample: Sample
    t: float
    judged: bool


def camera_runs(
    stride: int = 1, cases: tuple[str, ...] = (), must_only: bool = True
) -> Iterator[tuple[View, Iterator[Step]]]:
    """A fixed camera per view: WARMUP_S of clean frames (fresh sensor noise each), then each
    degradation of `cases` (must-detect ones only, or all) in turn, one frame, each followed
    by a clean frame."""
    chosen = [d for d in DEGRADATIONS if d.case in cases and (d.must_detect or not must_only)]
    for view in clean_views(stride):
        yield view, _run(view, chosen)


def _run(view: View, chosen: list[Degradation]) -> Iterator[Step]:
    t, k = 0.0, 0
    while t < WARMUP_S:
        yield Step(_clean(view, 100 + k), t, False)
        t, k = t + 1 / CAMERA_FPS, k + 1
    for n, d in enumerate(chosen):
        if d.at_night or not view.night:
            luma = d.apply(view, np.random.default_rng([view.seed, n, 7]))
            yield Step(Sample(d.case, d.strength, d.level, d.reasons, d.must_detect, view, luma), t, True)
            yield Step(_clean(view, 500 + n), t + 1 / CAMERA_FPS, True)
            t += 2 / CAMERA_FPS


def _clean(view: View, seed: int) -> Sample:
    return Sample("clean", "night" if view.night else "day", 0.0, (), True, view, view.capture(seed=seed))


def live_clip(frames: int = 240) -> Iterator[tuple[np.ndarray, float]]:
    """vtest.avi as a live camera delivers it: every frame, at 10 fps, JPEG-encoded."""
    for k, frame in enumerate(clip_frames(frames, 1)):
        yield encoded(_to_uint8(frame), 85), k / FPS
