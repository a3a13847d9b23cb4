"""The labelled quality set: clean frames a real camera could produce, and degraded copies
at declared strengths, all generated here from data bundled in packages (nothing downloaded).

Clean views (video-range luma, 16..235, as a camera's H.264 encoder delivers it):

* photo: a mosaic of 4 x 3 tiles cut at native resolution from the photographs bundled in
  scikit-image (480x360 tiles at 1080p, 320x240 at 720p; random photo, crop and mirror).
  No photo is upscaled: a 512 px photo blown up to 1080p is soft and would teach the
  metrics that a blurred camera is normal. Photos are converted with BT.601 (16 + 219 Y').
* traffic: zstream.sources.synthetic.TrafficScene, several seeds, vehicle counts and times.
* photo-night / traffic-night: the same darkened about video black (gain 0.3-0.5), with
  light sources (luma >= 225: headlamps, lit windows, the counter) kept bright.

Each view is captured the way a sensor does it: picture + Gaussian sensor noise (sigma
1-2.5 by day, 3-6 at night, when the gain is high), clipped to 16..235 and rounded.

Degradations act where they happen physically: blur, exposure and contrast (haze, a dirty
housing) change the picture before the sensor adds its noise; extra Gaussian noise is a
noisier sensor; salt-and-pepper (bit errors, dead pixels) and re-encoding act on the
delivered frame. Each has declared strengths, "must detect" or informational (milder).

Sequences are fed through CameraQuality at FPS with increasing t: frozen ones (one frame
repeated, exactly or re-encoded) must be flagged once frozen for FROZEN_AFTER_S; live ones
(fresh sensor noise every frame: a static view, an empty road at night, moving traffic)
are clean frames and must never be.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import cv2
import numpy as np

from zstream.quality import Assessment, CameraQuality, Thresholds
from zstream.sources.synthetic import TrafficScene

BLACK, WHITE = 16, 235  # video range
SIZES = ((1280, 720), (1920, 1080))
FPS = 10.0
FROZEN_AFTER_S = 2.0  # the default Thresholds.frozen_after_s the sequences are built around
SEQUENCE_S = 3.2  # frozen and live sequences: longer than FROZEN_AFTER_S
LIGHTS = 225  # at night, picture values from here up are light sources and stay bright
_NOISE_PAD = 96  # sensor noise is a window at a random offset in a larger field
_PHOTOS = (  # skimage.data photographs (not its drawings, documents, binary or 3-D data)
    *("astronaut", "camera", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "retina"),
    *("hubble_deep_field", "immunohistochemistry", "moon", "clock", "coins", "cell", "stereo_motorcycle"),
)
_CROPS = {"retina": (260, 1150, 260, 1150)}  # (y0, y1, x0, x1): the fundus, not its black surround


@dataclass(frozen=True, slots=True)
class View:
    """One clean camera view: the light reaching the sensor, and how noisy its sensor is."""

    name: str
    kind: str  # "photo", "photo-night", "traffic", "traffic-night"
    picture: np.ndarray  # float32 (h, w), video-range luma before sensor noise; read-only
    sigma: float  # the sensor's temporal noise, grey levels
    seed: int

    def capture(
        self, picture: np.ndarray | None = None, extra_sigma: float = 0.0, seed: int = 0
    ) -> np.ndarray:
        """What the camera delivers: picture + sensor noise, clipped to video range, uint8."""
        picture = self.picture if picture is None else picture
        sigma = float(np.hypot(self.sigma, extra_sigma))
        noisy = cv2.scaleAdd(_noise(picture.shape, self.seed * 7919 + seed), sigma, picture)
        return _to_uint8(noisy)


@dataclass(frozen=True, slots=True)
class Degradation:
    """One kind of damage at one declared strength."""

    case: str  # e.g. "gaussian blur"
    reason: str  # the reason that must be reported
    strength: str  # e.g. "sigma 3 px"
    must_detect: bool
    apply: Callable[[View, np.random.Generator], np.ndarray]  # -> the delivered uint8 luma
    at_night: bool = True  # False: only on day views (3x the exposure of a night is daylight)


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled frame: reason None means clean."""

    case: str
    strength: str
    reason: str | None
    must_detect: bool
    view: str
    luma: np.ndarray


@dataclass(frozen=True, slots=True)
class Sequence:
    """Frames to feed one CameraQuality in order; from `judged_from_s` on, `reason` is expected
    (None: a live camera, clean throughout)."""

    case: str
    strength: str
    reason: str | None
    must_detect: bool
    view: str
    frames: Iterator[tuple[np.ndarray, float]]
    judged_from_s: float


# --- clean views ------------------------------------------------------------------------------


def clean_views(per_kind: int = 12) -> Iterator[View]:
    """per_kind views of each kind at each of SIZES (photo mosaics twice as many), made lazily:
    a 1080p picture is 8 MB of float32."""
    for width, height in SIZES:
        for k in range(2 * per_kind):
            rng = np.random.default_rng([height, 1, k])
            yield View(
                f"photo-{height}p-{k}", "photo", _mosaic(width, height, rng), _day(rng), 1000 * height + k
            )
        for k in range(per_kind):
            rng = np.random.default_rng([height, 2, k])
            picture = _night(_mosaic(width, height, rng), rng)
            yield View(f"photo-night-{height}p-{k}", "photo-night", picture, _dark(rng), 2000 * height + k)
        for k in range(per_kind):
            rng = np.random.default_rng([height, 3, k])
            picture = _traffic(width, height, seed=k % 4, index=int(rng.integers(0, 5000)))
            yield View(f"traffic-{height}p-{k}", "traffic", picture, _day(rng), 3000 * height + k)
        for k in range(per_kind):
            rng = np.random.default_rng([height, 4, k])
            picture = _night(_traffic(width, height, seed=4 + k % 4, index=int(rng.integers(0, 5000))), rng)
            yield View(
                f"traffic-night-{height}p-{k}", "traffic-night", picture, _dark(rng), 4000 * height + k
            )


def _day(rng: np.random.Generator) -> float:
    return float(rng.uniform(1.0, 2.5))


def _dark(rng: np.random.Generator) -> float:
    return float(rng.uniform(3.0, 6.0))


def _night(picture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Darkened about video black, light sources left bright."""
    dark = exposed(picture, float(rng.uniform(0.3, 0.5)))
    return np.where(picture >= LIGHTS, picture, dark).astype(np.float32)


def _traffic(width: int, height: int, seed: int, index: int) -> np.ndarray:
    """Seeds 0-7 give 0 to 14 vehicles: scenes are few (each takes ~0.2 s to set up), the
    moments `index` many."""
    return _scene(width, height, seed, 2 * seed).render(index)[:height].astype(np.float32)


@functools.lru_cache(maxsize=16)
def _scene(width: int, height: int, seed: int, vehicles: int) -> TrafficScene:
    return TrafficScene(width, height, seed=seed, vehicles=vehicles, label=f"cam-{seed:02d}")


def _mosaic(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """4 x 3 tiles, each a random crop of a random photo at its native resolution."""
    tw, th = width // 4, height // 3
    photos = [p for p in _photos() if p.shape[0] >= th and p.shape[1] >= tw]
    out = np.empty((height, width), np.float32)
    for row in range(3):
        for col in range(4):
            photo = photos[int(rng.integers(len(photos)))]
            y0 = int(rng.integers(0, photo.shape[0] - th + 1))
            x0 = int(rng.integers(0, photo.shape[1] - tw + 1))
            tile = photo[y0 : y0 + th, x0 : x0 + tw]
            out[row * th : (row + 1) * th, col * tw : (col + 1) * tw] = (
                tile[:, ::-1] if rng.random() < 0.5 else tile
            )
    return out


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    """The bundled photographs as float32 video-range luma."""
    import skimage.data  # dev dependency; imported here so that importing this module is cheap

    photos = []
    for name in _PHOTOS:
        image = getattr(skimage.data, name)()
        image = image[0] if isinstance(image, tuple) else image  # stereo pairs
        if (crop := _CROPS.get(name)) is not None:
            image = image[crop[0] : crop[1], crop[2] : crop[3]]
        rgb = image[..., :3].astype(np.float32) if image.ndim == 3 else image.astype(np.float32)[..., None]
        grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32) if rgb.shape[-1] == 3 else rgb[..., 0]
        luma = BLACK + grey * ((WHITE - BLACK) / 255.0)
        luma.flags.writeable = False
        photos.append(luma.astype(np.float32))
    return tuple(photos)


# --- capture ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _noise_field(height: int, width: int) -> np.ndarray:
    field = np.random.default_rng([height, width]).standard_normal(
        (height + _NOISE_PAD, width + _NOISE_PAD), dtype=np.float32
    )
    field.flags.writeable = False
    return field


def _noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Unit Gaussian noise: a window of a fixed field at an offset drawn from `seed`. Windows at
    different offsets are independent pixel by pixel, and this is ~10x cheaper than drawing."""
    h, w = shape
    dy, dx = np.random.default_rng(seed).integers(0, _NOISE_PAD, 2)
    return _noise_field(h, w)[dy : dy + h, dx : dx + w]


def _to_uint8(picture: np.ndarray) -> np.ndarray:
    out = np.clip(picture, BLACK, WHITE)
    out += 0.5
    return out.astype(np.uint8)


# --- degradations -----------------------------------------------------------------------------


def exposed(picture: np.ndarray, gain: float) -> np.ndarray:
    """Exposure times `gain`: luma above video black scales (clipping happens at capture)."""
    return (picture - BLACK) * gain + BLACK


def hazed(picture: np.ndarray, contrast: float) -> np.ndarray:
    """Contrast cut to `contrast` about the mean (fog, haze, a dirty or fogged-up housing)."""
    mean = float(picture.mean())
    return (picture - mean) * contrast + mean


def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised line `length` px long at `angle_deg`: the blur of a camera that moves."""
    kernel = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    dx, dy = np.cos(np.radians(angle_deg)), -np.sin(np.radians(angle_deg))
    for s in np.linspace(-c, c, 4 * length):
        kernel[round(c + s * dy), round(c + s * dx)] = 1.0
    return kernel / kernel.sum()


def _gaussian_blur(sigma: float) -> Callable[[View, np.random.Generator], np.ndarray]:
    return lambda v, rng: v.capture(cv2.GaussianBlur(v.picture, (0, 0), sigma), seed=1)


def _motion_blur(length: int) -> Callable[[View, np.random.Generator], np.ndarray]:
    def apply(v: View, rng: np.random.Generator) -> np.ndarray:
        angle = float(rng.choice([0, 30, 45, 90, 120, 135]))
        return v.capture(cv2.filter2D(v.picture, -1, motion_kernel(length, angle)), seed=2)

    return apply


def _exposure(gain: float) -> Callable[[View, np.random.Generator], np.ndarray]:
    return lambda v, rng: v.capture(exposed(v.picture, gain), seed=3)


def _haze(contrast: float) -> Callable[[View, np.random.Generator], np.ndarray]:
    return lambda v, rng: v.capture(hazed(v.picture, contrast), seed=4)


def _gaussian_noise(sigma: float) -> Callable[[View, np.random.Generator], np.ndarray]:
    return lambda v, rng: v.capture(extra_sigma=sigma, seed=5)


def _salt_and_pepper(fraction: float) -> Callable[[View, np.random.Generator], np.ndarray]:
    def apply(v: View, rng: np.random.Generator) -> np.ndarray:
        luma = v.capture(seed=6)
        hit = rng.random(luma.shape, dtype=np.float32)
        luma[hit < fraction / 2] = 0
        luma[(hit >= fraction / 2) & (hit < fraction)] = 255
        return luma

    return apply


def _flat(level: float, sigma: float) -> Callable[[View, np.random.Generator], np.ndarray]:
    """A uniform frame: decoder black, a grey or solid-colour "no signal" screen (sigma 0),
    or a capped lens (sensor noise only)."""

    def apply(v: View, rng: np.random.Generator) -> np.ndarray:
        flat = np.full(v.picture.shape, level, np.float32)
        return _to_uint8(cv2.scaleAdd(_noise(flat.shape, v.seed), sigma, flat)) if sigma else _to_uint8(flat)

    return apply


def _covered(v: View, rng: np.random.Generator) -> np.ndarray:
    """A hand or bag over the lens: dark, with a smooth gradient and vignette, sensor noise."""
    h, w = v.picture.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = (y - h / 2) / h, (x - w / 2) / w
    angle = rng.uniform(0, 2 * np.pi)
    ramp = float(rng.uniform(4, 14)) * (x * np.cos(angle) + y * np.sin(angle))
    vignette = float(rng.uniform(2, 10)) * (x * x + y * y)
    picture = float(rng.uniform(20, 45)) + ramp - vignette
    return View(v.name, v.kind, picture.astype(np.float32), float(rng.uniform(2, 5)), v.seed).capture()


# The luma of a few "no video" screens: blue, green, red, magenta (BT.601 video range).
_SOLID_LUMA = (41.0, 145.0, 81.0, 106.0)

DEGRADATIONS: tuple[Degradation, ...] = (
    Degradation("gaussian blur", "blurred", "sigma 3 px", True, _gaussian_blur(3.0)),
    Degradation("gaussian blur", "blurred", "sigma 5 px", True, _gaussian_blur(5.0)),
    Degradation("gaussian blur", "blurred", "sigma 1.5 px", False, _gaussian_blur(1.5)),
    Degradation("motion blur", "blurred", "15 px", True, _motion_blur(15)),
    Degradation("motion blur", "blurred", "25 px", True, _motion_blur(25)),
    Degradation("motion blur", "blurred", "7 px", False, _motion_blur(7)),
    Degradation("under-exposure", "too_dark", "gain 0.10", True, _exposure(0.10)),
    Degradation("under-exposure", "too_dark", "gain 0.06", True, _exposure(0.06)),
    Degradation("under-exposure", "too_dark", "gain 0.2", False, _exposure(0.2)),
    Degradation("over-exposure", "too_bright", "gain 3", True, _exposure(3.0), at_night=False),
    Degradation("over-exposure", "too_bright", "gain 4.5", True, _exposure(4.5), at_night=False),
    Degradation("over-exposure", "too_bright", "gain 2", False, _exposure(2.0), at_night=False),
    Degradation("reduced contrast", "low_contrast", "15 %", True, _haze(0.15)),
    Degradation("reduced contrast", "low_contrast", "10 %", True, _haze(0.10)),
    Degradation("reduced contrast", "low_contrast", "30 %", False, _haze(0.30)),
    Degradation("gaussian noise", "noisy", "sigma 20", True, _gaussian_noise(20.0)),
    Degradation("gaussian noise", "noisy", "sigma 30", True, _gaussian_noise(30.0)),
    Degradation("gaussian noise", "noisy", "sigma 12", False, _gaussian_noise(12.0)),
    Degradation("salt and pepper", "noisy", "5 %", True, _salt_and_pepper(0.05)),
    Degradation("salt and pepper", "noisy", "10 %", True, _salt_and_pepper(0.10)),
    Degradation("salt and pepper", "noisy", "1 %", False, _salt_and_pepper(0.01)),
    Degradation("blank", "blank", "black", True, _flat(BLACK, 0.0)),
    Degradation("blank", "blank", "capped lens", True, _flat(BLACK + 2, 3.0)),
    Degradation("blank", "blank", "grey", True, _flat(126.0, 0.0)),
    *(Degradation("blank", "blank", f"solid {y:.0f}", True, _flat(y, 0.0)) for y in _SOLID_LUMA),
    Degradation("blank", "blank", "covered lens", True, _covered),
)


# --- the set ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shares:
    """Which views get what: a degradation goes on every n-th view (offset per degradation, so
    all views take turns), a frozen or live sequence is made from every n-th view."""

    must: int = 2
    informational: int = 4
    blank: int = 4  # per kind of blank frame (eight kinds)
    frozen: int = 3
    live: int = 3


def labelled(per_kind: int = 12, shares: Shares = Shares()) -> Iterator[Sample | Sequence]:
    """The whole set, one view at a time (lazily: nothing is kept), then live traffic."""
    for k, view in enumerate(clean_views(per_kind)):
        yield Sample("clean", view.kind, None, True, view.name, view.capture())
        yield from _degraded(k, view, shares)
        if k % shares.frozen == 0:
            yield from _frozen(view)
        if k % shares.live == 1:
            frames = ((view.capture(seed=100 + i), i / FPS) for i in range(round(SEQUENCE_S * FPS)))
            yield Sequence("live", f"static {view.kind}", None, True, view.name, frames, 0.0)
    yield from _live_traffic()


def _degraded(k: int, view: View, shares: Shares) -> Iterator[Sample]:
    for n, d in enumerate(DEGRADATIONS):
        share = shares.blank if d.case == "blank" else shares.must if d.must_detect else shares.informational
        if (k + n) % share == 0 and (d.at_night or not view.kind.endswith("night")):
            luma = d.apply(view, np.random.default_rng([view.seed, n]))
            yield Sample(d.case, d.strength, d.reason, d.must_detect, view.name, luma)


def _frozen(view: View) -> Iterator[Sequence]:
    """The view frozen three ways (FPS frames a second, SEQUENCE_S long):

    * exact repeat: a decoder or VMS repeating the last picture;
    * re-encoded: a stuck sensor behind a running encoder, which re-encodes the same picture:
      a key frame every second at another JPEG quality (90, 85, 95 in turn), and in between
      each frame refreshes 2 % of its 16 x 16 macroblocks from yet another encoding;
    * JPEG every frame (informational): every frame a different encoding (qualities 88, 93,
      90 in turn). Its frame-to-frame change (~1-4 grey levels) is that of live sensor noise
      of sigma 1-3, so no change measure can tell it from a live static scene.
    """
    frames = round(SEQUENCE_S * FPS)
    still = view.capture()
    encodings = {q: _jpeg(still, q) for q in (85, 88, 90, 93, 95)}
    variants = {
        "exact repeat": (True, (still for _ in range(frames))),
        "re-encoded": (True, _reencoded(encodings, frames, np.random.default_rng(view.seed))),
        "JPEG every frame": (False, (encodings[(88, 93, 90)[i % 3]] for i in range(frames))),
    }
    for strength, (must, pictures) in variants.items():
        stream = ((picture, i / FPS) for i, picture in enumerate(pictures))
        yield Sequence("frozen", strength, "frozen", must, view.name, stream, FROZEN_AFTER_S)


def _reencoded(
    encodings: dict[int, np.ndarray], frames: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Key frames every second at a new quality; P-frames refresh 2 % of the macroblocks."""
    keys = (90, 85, 95)
    current = encodings[keys[0]].copy()
    h, w = current.shape
    for i in range(frames):
        if i % round(FPS) == 0:
            current = encodings[keys[(i // round(FPS)) % len(keys)]].copy()
        else:
            source = encodings[93 if i % 2 else 88]
            for _ in range(max(1, (h // 16) * (w // 16) // 50)):
                y, x = 16 * int(rng.integers(h // 16)), 16 * int(rng.integers(w // 16))
                current[y : y + 16, x : x + 16] = source[y : y + 16, x : x + 16]
        yield current.copy()


def _jpeg(luma: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", luma, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def _live_traffic() -> Iterator[Sequence]:
    """Moving traffic by day, and at night an empty road (nothing moves but the counter and
    the sensor noise) and a quiet one: live, so never frozen."""
    frames = round(SEQUENCE_S * FPS)
    for width, height in SIZES:
        for night, vehicles in ((False, 6), (True, 0), (True, 2)):
            rng = np.random.default_rng([height, night, vehicles])
            gain, sigma = float(rng.uniform(0.3, 0.5)), _dark(rng) if night else _day(rng)
            scene = _scene(width, height, 7 + vehicles, vehicles)
            name = f"live-{height}p-{'night' if night else 'day'}-{vehicles}"
            stream = _live(scene, name, gain if night else None, sigma, frames)
            kind = f"{'night' if night else 'day'} road, {vehicles} vehicles"
            yield Sequence("live", kind, None, True, name, stream, 0.0)


def _live(
    scene: TrafficScene, name: str, night_gain: float | None, sigma: float, frames: int
) -> Iterator[tuple[np.ndarray, float]]:
    for i in range(frames):
        picture = scene.render(i)[: scene.height].astype(np.float32)
        if night_gain is not None:
            picture = np.where(picture >= LIGHTS, picture, exposed(picture, night_gain)).astype(np.float32)
        yield View(name, "live", picture, sigma, i).capture(seed=i), i / FPS


# --- running it -------------------------------------------------------------------------------

T = TypeVar("T")
Observer = Callable[[np.ndarray, float], T]  # (luma, t) -> what it makes of the frame


@dataclass(frozen=True, slots=True)
class Observation(Generic[T]):
    """What one observer made of one labelled frame."""

    case: str
    strength: str
    reason: str | None  # expected; None: clean
    must_detect: bool
    view: str
    value: T


def observe(
    observers: Mapping[str, Callable[[str, str], Observer[Any] | None]],
    per_kind: int = 12,
    shares: Shares = Shares(),
) -> dict[str, list[Observation[Any]]]:
    """Feed the set to every observer in one pass. Each factory is called with the case
    ("clean", "gaussian blur", "frozen", ...) and the view's name for every single frame and
    every sequence (a view's clean frame comes before its degraded ones) and returns an
    observer (a camera), or None to sit that one out. Sequence frames
    before judged_from_s are fed but not recorded."""
    seen: dict[str, list[Observation[Any]]] = {name: [] for name in observers}
    for item in labelled(per_kind, shares):
        cameras = {
            name: camera
            for name, new in observers.items()
            if (camera := new(item.case, item.view)) is not None
        }
        if isinstance(item, Sample):
            for name, camera in cameras.items():
                seen[name].append(_observation(item, camera(item.luma, 0.0)))
            continue
        for luma, t in item.frames:
            for name, camera in cameras.items():
                value = camera(luma, t)
                if t >= item.judged_from_s - 1e-9:
                    seen[name].append(_observation(item, value))
    return seen


class _Norms:
    """Cameras that learn each view's norm from its clean frame (see `norm_camera`)."""

    view = ""
    camera: CameraQuality | None = None
    t = 0.0


def norm_camera(case: str, view: str) -> Observer[Assessment]:
    """The camera a degraded single frame is judged by: the one that saw its view's clean
    frame just before (its norm, with the warm-up cut to that one frame: a fixed camera that
    knows its scene), or a fresh one (absolute limits only) for sequences and clean frames."""
    if case in ("frozen", "live"):
        return CameraQuality(Thresholds()).assess
    if case == "clean":
        _Norms.view, _Norms.camera = view, CameraQuality(Thresholds(baseline_warmup_s=0.0))
    camera = _Norms.camera if _Norms.view == view and _Norms.camera else CameraQuality(Thresholds())

    def observe(luma: np.ndarray, t: float) -> Assessment:
        _Norms.t += 0.1
        return camera.assess(luma, _Norms.t)

    return observe


def _observation(item: Sample | Sequence, value: T) -> Observation[T]:
    return Observation(item.case, item.strength, item.reason, item.must_detect, item.view, value)


@dataclass(frozen=True, slots=True)
class Rate:
    """How often frames of one class got their expected reason (clean: got any reason)."""

    case: str
    must_detect: bool
    hits: int
    frames: int

    @property
    def rate(self) -> float:
        return self.hits / self.frames if self.frames else 0.0


def rates(seen: list[Observation[Any]], reasons: Callable[[Any], tuple[str, ...]]) -> list[Rate]:
    """Per (case, must_detect): detections of the expected reason, or clean frames rejected."""
    tally: dict[tuple[str, bool], list[int]] = {}
    for o in seen:
        got = reasons(o.value)
        hit = bool(got) if o.reason is None else o.reason in got
        counts = tally.setdefault((o.case, o.must_detect), [0, 0])
        counts[0] += hit
        counts[1] += 1
    return [Rate(case, must, hits, frames) for (case, must), (hits, frames) in tally.items()]
