"""Per-frame quality of a camera's picture, measured on the luma plane, for the validation stage.

Reads the Y plane where it sits in shared memory (never writes it, never converts colour).
One pass makes S, the frame reduced by the largest power of two f that keeps it >= 640 px
wide (f = 2 at 720p and 1080p, 4 at 4K) by exact 2x area steps, which average sensor noise
down by f; more 2x steps give E, about 1/16 of full size. Numbers are on the labelled set.

    sharpness    fine detail in the weakest direction: on row bands of S (3/16 of its rows),
                 the energy of the second difference along x, y and both diagonals less what
                 sensor noise explains (6 (sigma/f)^2); the smallest of the four (motion blur
                 removes detail along its own direction only), x100 / (d^2 + 1), d being the
                 coarse gradient of `uniformity`. That division makes it independent of
                 exposure and scene: a night is as sharp as the day. Clean >= 57; sigma-3 px
                 or 15 px motion blur <= 15.
    brightness   mean luma, 0..255
    clipped_dark / clipped_bright
                 shares of a full-resolution point sample at or below 16 / at or above 235,
                 video-range black and white (BT.601/709 limited range, what H.264 cameras
                 send), where sensors clip; full-range sources clip at 0/255, counted too.
    contrast     RMS contrast, std / mean of luma: unlike the std alone, it stays put when
                 a night scene is dimmer (>= 0.24), and drops in fog or haze (<= 0.085).
    noise        sigma of the sensor noise in grey levels: Immerkaer's operator on thin
                 full-resolution row bands, robust to edges through a median; isolated
                 impulses (salt and pepper, dead pixels) exceed what edges reach, and their
                 share p adds as sqrt(sigma^2 + 128^2 p). Clean <= 7.1; sigma 20 >= 17.
    change       mean absolute difference to the previous frame on the point sample (grey
                 levels): live sensor noise of sigma 1 gives 1.1, a repeated frame 0; 0 for a
                 camera's first frame
    frozen_s     how long the picture has not changed (see CameraQuality)
    uniformity   1 / (1 + d), d = mean absolute difference between neighbours of E (grey
                 levels): 1 for a flat frame; smooth shading (vignette, a gradient over a
                 covered lens) and sensor noise, averaged away at 1/16, barely lower it.
    score        see `score`
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from zstream.baseline import Norm, NormLimits, Observed

REASONS = ("blurred", "too_dark", "too_bright", "low_contrast", "noisy", "frozen", "blank")
BLACK, WHITE = 16, 235  # video-range luma of black and white
MIN_WORK_WIDTH = 640  # S is the frame reduced by the largest power of two that keeps this
COARSE_FACTOR = 16  # E is the frame reduced about this much
SHARP_BAND_ROWS = 6  # rows of S per sharpness band; the outer two only feed the 3x3 kernels
SHARP_SHARE = 0.1875  # share of S's rows in the sharpness bands
SAMPLE_POINTS = 16_000  # full-resolution point sample: clipping and change
NOISE_BAND_ROWS = 4  # rows per noise band; the outer two only feed the 3x3 kernel
NOISE_SAMPLE_PIXELS = 24_000  # enough for a median within ~1 % of the true noise sigma
# Immerkaer's kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] has squared coefficients summing to 36, so
# on Gaussian noise of sigma s its response has sigma 6 s, and |response| a median of 0.6745 * 6 s.
_MEDIAN_TO_SIGMA = 1.0 / (0.6745 * 6.0)
_NOISE_SCALE = 0.55  # |response| is histogrammed at this scale, so that 255 stands for 464:
# isolated impulses of +-116 or more reach it (4x their height), edges and corners (<= 2x their
# contrast, however sharp) do not; pixel-thin diagonal lines (6x) would, but optics blur them
_IMPULSE_RMS_SQ = 128.0**2  # each impulse counts as a +-128 deviation
_NOISE_ENERGY = 6.0  # squared coefficients of [1, -2, 1]: energy of white noise of sigma 1
_ROUNDING_VAR = 1.0 / 12.0  # variance of rounding to integers, added by every reduction step
_DETAIL_PRIOR = 0.5  # grey levels^2 of detail energy assumed in each octave (see _sharpness)
FINE_NOISE_MAX = 2.5  # noise sigma at S above which the finest octave is not judged


@dataclass(frozen=True, slots=True)
class QualityMetrics:
    """What one frame measured; see the module docstring for each value's meaning."""

    sharpness: float
    brightness: float
    clipped_dark: float
    clipped_bright: float
    contrast: float
    noise: float
    change: float
    frozen_s: float
    uniformity: float
    score: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class Thresholds(BaseModel):
    """Limits a frame must respect to pass validation; see `judge`. Overridable per camera.

    Each default sits between what the labelled set (tests/quality_set.py) measures on clean
    day and night frames (incl. live sequences) and on the degradations it must detect; those
    two ranges are quoted in the descriptions as "clean ... / must ...".
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_sharpness: float = Field(
        12.0, ge=0, le=1e5, description="below: 'blurred' (clean >= 57 / must <= 15)"
    )
    min_brightness: float = Field(
        30.0, ge=0, le=255, description="lowest mean luma (clean >= 42 / must <= 27)"
    )
    max_brightness: float = Field(
        215.0, ge=0, le=255, description="highest mean luma (clean <= 136; snow ~200)"
    )
    max_clipped_dark: float = Field(
        0.5, ge=0, le=1, description="highest share at or below video black, 16 (clean <= 0.06)"
    )
    max_clipped_bright: float = Field(
        0.3,
        ge=0,
        le=1,
        description="highest share at or above video white, 235 (clean <= 0.002 / must >= 0.39)",
    )
    min_contrast: float = Field(
        0.14, ge=0, le=10, description="lowest RMS contrast, std / mean luma (clean >= 0.24 / must <= 0.085)"
    )
    max_noise: float = Field(
        14.0, ge=0, le=255, description="highest noise sigma (clean <= 7.1 / must >= 17)"
    )
    frozen_after_s: float = Field(2.0, gt=0, le=3600, description="seconds unchanged after which: 'frozen'")
    max_frozen_change: float = Field(
        0.35,
        ge=0,
        le=255,
        description="mean absolute change up to which a frame counts as unchanged (live sensor noise of "
        "sigma 0.7 gives 0.78, sigma 1 1.1; a P-frame refreshing a stuck picture < 0.1)",
    )
    max_uniformity: float = Field(
        0.65, ge=0, le=1, description="above: 'blank' (clean <= 0.28 / must >= 0.73)"
    )
    min_score: float = Field(
        0.0, ge=0, le=1, description="below, a frame fails for its weakest aspect; 0: off"
    )
    baseline_follow_s: float = Field(
        300.0, ge=0, le=86400, description="time constant of each camera's norm (s); 0: no per-camera norm"
    )
    baseline_warmup_s: float = Field(
        10.0, ge=0, le=86400, description="seconds of accepted frames a camera's norm learns before it judges"
    )
    baseline_relearn_s: float = Field(
        900.0,
        ge=0,
        le=86400,
        description="time constant at which frames rejected only against the norm still move it (s)",
    )
    min_sharpness_ratio: float = Field(
        0.7, ge=0, le=1, description="below this share of the camera's norm: 'blurred'"
    )
    min_contrast_ratio: float = Field(
        0.5, ge=0, le=1, description="below this share of the camera's norm: 'low_contrast'"
    )
    min_brightness_ratio: float = Field(
        0.35,
        ge=0,
        le=1,
        description="brightness above black below this share of the camera's norm: 'too_dark'",
    )
    max_brightness_ratio: float = Field(
        2.0,
        ge=1,
        le=100,
        description="brightness above black above this multiple of the norm, with >= 2 % at video "
        "white: 'too_bright'",
    )
    max_noise_ratio: float = Field(
        2.5, ge=1, le=100, description="noise above this multiple of the norm (and +3 levels): 'noisy'"
    )

    @model_validator(mode="after")
    def _brightness_range(self) -> Thresholds:
        if self.min_brightness >= self.max_brightness:
            raise ValueError("min_brightness must be below max_brightness")
        return self

    @functools.cached_property
    def norm_limits(self) -> NormLimits:
        """The per-camera norm's settings (made once: thresholds are frozen)."""
        return NormLimits(
            *(self.baseline_warmup_s, self.baseline_follow_s, self.baseline_relearn_s),
            *(self.min_sharpness_ratio, self.min_contrast_ratio, self.min_brightness_ratio),
            *(self.max_brightness_ratio, self.max_noise_ratio),
        )


@dataclass(frozen=True, slots=True)
class Assessment:
    """A frame's metrics and the reasons it fails, in REASONS order (empty: it passes)."""

    metrics: QualityMetrics
    reasons: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.reasons


# --- measuring one frame ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """How frames of one size are sampled; made once per size (all arrays read-only)."""

    factor: int  # S = the frame reduced by this (a power of two)
    coarse_steps: int  # 2x steps from S to E
    sharp_rows: tuple[_Windows | None, _Windows | None]  # sharpness bands of S and of S/2
    noise_rows: np.ndarray | None  # full-resolution rows of the noise bands; None: all
    noise_valid: np.ndarray  # rows of the noise sample whose 3x3 window lies inside one band
    step: int  # the point sample is luma[step // 2 :: step, step // 2 :: step]


_Windows = tuple[np.ndarray, np.ndarray]  # rows of the bands, and which rows of their stack
# are the centres of 3x3 windows lying inside one band


@functools.lru_cache(maxsize=16)
def _plan(h: int, w: int) -> _Plan:
    factor = 1
    while w // (2 * factor) >= MIN_WORK_WIDTH and h // (2 * factor) >= 2:
        factor *= 2
    sh, coarse = h // factor, 0
    while factor << coarse < COARSE_FACTOR and sh >> (coarse + 1) >= 3 and (w // factor) >> (coarse + 1) >= 3:
        coarse += 1
    bands = max(1, round(SHARP_SHARE * sh / SHARP_BAND_ROWS))
    sharp = (_windows(sh, bands), _windows(sh // 2, bands))  # S/2: the same bands' places
    noise_bands = round(NOISE_SAMPLE_PIXELS / ((NOISE_BAND_ROWS - 2) * max(1, w - 2)))
    noise_rows, noise_valid = _bands(h, NOISE_BAND_ROWS, max(1, noise_bands))
    step = max(1, math.isqrt(h * w // SAMPLE_POINTS))
    noise_valid.flags.writeable = False
    return _Plan(factor, coarse, sharp, noise_rows, noise_valid, step)


def _windows(h: int, count: int) -> _Windows | None:
    """`count` sharpness bands down h rows (see _Windows); None: all rows."""
    rows, valid = _bands(h, SHARP_BAND_ROWS, count)
    if rows is None:
        return None
    valid.flags.writeable = False
    return rows, valid


def _bands(h: int, rows: int, count: int) -> tuple[np.ndarray | None, np.ndarray]:
    """`count` bands of `rows` rows spread evenly down h rows (None: take all rows), and which
    rows of their stack have both neighbours in the same band."""
    if count * rows >= h // 2:
        return None, np.arange(1, h - 1)
    starts = np.linspace(0, h - rows, count).round().astype(np.intp)
    taken = (starts[:, None] + np.arange(rows)).ravel()
    taken.flags.writeable = False
    valid = (np.arange(count)[:, None] * rows + np.arange(1, rows - 1)).ravel()
    return taken, valid


def _measure(luma: np.ndarray) -> tuple[QualityMetrics, np.ndarray]:
    """The frame's own metrics (no change, frozen_s or score yet) and its point sample."""
    if not isinstance(luma, np.ndarray) or luma.ndim != 2 or luma.dtype != np.uint8 or luma.size == 0:
        raise ValueError(
            f"expected a non-empty 2-D uint8 luma plane, got {getattr(luma, 'dtype', type(luma))} "
            f"{getattr(luma, 'shape', '')}"
        )
    plan = _plan(*luma.shape)
    small = _reduce(luma, plan.factor, prefetch=True)
    half = _reduce(small, 2)
    quarter = _reduce(half, 2)
    coarse = _reduce(quarter, 1 << max(0, plan.coarse_steps - 2)) if plan.coarse_steps > 2 else quarter
    if plan.coarse_steps < 2:
        coarse = half if plan.coarse_steps == 1 else small
    # S/2 keeps the mean and most of the spread; a tiny frame is used whole (the 2x steps drop
    # an odd last row and column, which would bias the mean of a 17x9 frame)
    mean, std = cv2.meanStdDev(half if half.size >= 4096 else luma)
    sigma, impulses = _noise(luma, plan)
    gradient = _mean_gradient(coarse)
    step = plan.step
    sample = np.ascontiguousarray(luma[step // 2 :: step, step // 2 :: step])
    n = sample.size
    brightness = float(mean[0, 0])
    metrics = QualityMetrics(
        sharpness=_sharpness((small, half, quarter), plan, sigma / plan.factor),
        brightness=brightness,
        clipped_dark=int(np.count_nonzero(sample <= BLACK)) / n,
        clipped_bright=int(np.count_nonzero(sample >= WHITE)) / n,
        contrast=float(std[0, 0]) / max(brightness, 1.0),
        noise=math.sqrt(sigma * sigma + _IMPULSE_RMS_SQ * impulses),
        change=0.0,
        frozen_s=0.0,
        uniformity=1.0 / (1.0 + gradient),
        score=0.0,
    )
    return metrics, sample


def _reduce(luma: np.ndarray, factor: int, prefetch: bool = False) -> np.ndarray:
    """Shrink by `factor` (a power of two) in exact 2x area steps, OpenCV's fast path.

    A frame fresh from shared memory is not in cache, and cv2's 2x resize reads it about
    twice as slowly as a sequential pass does. With `prefetch`, one cheap sequential read
    (cv2.countNonZero, result unused) first pulls the frame into cache: the first step then
    costs ~45 % less at 1080p, ~10 % less than copying the frame first (no writes). An odd
    last row or column is dropped at each step; a frame 1 px high or wide stays as it is.
    """
    if factor > 1 and prefetch:
        cv2.countNonZero(luma)
    while factor > 1 and min(luma.shape) >= 2:
        h, w = luma.shape
        luma = cv2.resize(luma[: h - h % 2, : w - w % 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        factor //= 2
    return luma


def _sharpness(octaves: tuple[np.ndarray, np.ndarray, np.ndarray], plan: _Plan, sigma: float) -> float:
    """100 x the weakest direction's ratio of detail energy between adjacent octaves.

    Natural scenes are about scale-invariant: a sharp picture has about as much
    second-difference energy per pixel at S as at S/2 and S/4, whatever its content, exposure
    or size (flat areas add nothing to either side; a lone strong edge adds to both). Blur
    removes the finest octave first, so fine / coarse falls steadily as it grows; a picture
    downscaled from a sharp original stays sharp, one upscaled turns soft. Both ratios
    (S : S/2 and S/2 : S/4) count and the smaller wins: the first sees mild blur, the second
    strong blur, where the finest octave holds little but noise. Each octave's noise energy
    is subtracted: the larger of the sensor noise carried down from full resolution (plus
    the rounding of each reduction) and the noise measured on that octave itself (an encoder
    wipes the finest noise and leaves coarser, which full resolution does not show). When
    noise dominates the finest octave (sigma at S above FINE_NOISE_MAX), only the second
    ratio is used.
    """
    windows = (*plan.sharp_rows, None)
    variance, detail, raw = sigma * sigma + _ROUNDING_VAR, [], []
    for k, (octave, bands) in enumerate(zip(octaves, windows, strict=True)):
        measured = _directional_energy(octave, bands, own_noise=k < 2)  # S/4: little is left
        if measured is None:
            break
        energy, own_sigma = measured
        raw.append(energy)
        detail.append(np.maximum(energy - _NOISE_ENERGY * max(variance, own_sigma * own_sigma), 0.0))
        variance = variance / 4.0 + _ROUNDING_VAR
    # detail over everything the coarser octave holds, noise included (never a ratio of two
    # small remainders; noise can only lower it), both with _DETAIL_PRIOR added: where an
    # octave holds far less than that (fog at dusk, a sky) the frame has no detail for blur
    # to remove, and the ratio tends to 1, not to 0: such a scene cannot look blurred
    ratios = [
        (fine + _DETAIL_PRIOR) / (coarse + _DETAIL_PRIOR)
        for fine, coarse in zip(detail, raw[1:], strict=False)
    ]
    if not ratios:
        return 0.0
    if len(ratios) == 2 and sigma > FINE_NOISE_MAX:
        ratios = ratios[1:]
    return 100.0 * float(min(r.min() for r in ratios))


def _directional_energy(
    image: np.ndarray, bands: _Windows | None, own_noise: bool = True
) -> tuple[np.ndarray, float] | None:
    """Mean squared second difference along x, y and both diagonals over the 3x3 windows
    inside `bands` (None: the whole image) and interior columns, and the noise sigma measured
    there (see _noise); None if the image is too small.

    With u = a - b and v = c - b, (a - 2b + c)^2 = 2u^2 + 2v^2 - (a - c)^2: each direction's
    energy is three sums of squared differences between shifted views (exact integers from
    cv2.norm, no filtered image).
    """
    if image.shape[0] < 3 or image.shape[1] < 3:
        return None
    if bands is None:
        stack, up, mid, down = image, image[:-2], image[1:-1], image[2:]
        valid = slice(1, -1)
    else:
        rows, valid = bands
        stack = np.take(image, rows, axis=0)
        up, mid, down = stack[valid - 1], stack[valid], stack[valid + 1]
    norm, sq = cv2.norm, cv2.NORM_L2SQR
    centre, left, right = mid[:, 1:-1], mid[:, :-2], mid[:, 2:]
    pairs = (
        (left, right),
        (up[:, 1:-1], down[:, 1:-1]),
        (up[:, :-2], down[:, 2:]),
        (up[:, 2:], down[:, :-2]),
    )
    energy = np.empty(4)
    for i, (a, c) in enumerate(pairs):
        energy[i] = 2.0 * (norm(a, centre, sq) + norm(c, centre, sq)) - norm(a, c, sq)
    return energy / centre.size, (_median_sigma(stack, valid) if own_noise else 0.0)


def _mean_gradient(coarse: np.ndarray) -> float:
    """Mean absolute difference between neighbours of E, across and down (grey levels)."""
    h, w = coarse.shape
    total, count = 0.0, 0
    if w > 1:
        total += cv2.norm(coarse[:, 1:], coarse[:, :-1], cv2.NORM_L1)
        count += h * (w - 1)
    if h > 1:
        total += cv2.norm(coarse[1:], coarse[:-1], cv2.NORM_L1)
        count += (h - 1) * w
    return total / count if count else 0.0


def _noise(luma: np.ndarray, plan: _Plan) -> tuple[float, float]:
    """(sigma of Gaussian noise, share of impulses) from Immerkaer's operator on row bands.

    The kernel (a separable second difference, i.e. Sobel dx=2 dy=2) cancels flat areas,
    ramps and straight edges; texture and corners still respond, but they cover a minority of
    pixels, so the median of |response| tracks the noise. Impulses are counted apart (see
    _NOISE_SCALE).
    """
    h, w = luma.shape
    if h < 3 or w < 3:
        return 0.0, 0.0
    sample = luma if plan.noise_rows is None else luma[plan.noise_rows]
    magnitude = _magnitude(sample, plan.noise_valid)
    hist = cv2.calcHist([magnitude], [0], None, [256], [0, 256]).ravel()
    sigma = _histogram_median(hist) * _MEDIAN_TO_SIGMA / _NOISE_SCALE
    # Strong Gaussian noise saturates some responses too (1 % at sigma 35): only the excess
    # over that share is impulses.
    gaussian = math.erfc(255.0 / _NOISE_SCALE / (6.0 * sigma * math.sqrt(2.0))) if sigma > 0.0 else 0.0
    return sigma, max(0.0, float(hist[255]) / float(hist.sum()) - gaussian)


def _magnitude(stack: np.ndarray, valid: np.ndarray | slice) -> np.ndarray:
    """|Immerkaer's operator| x _NOISE_SCALE (saturated at 255) on the rows `valid` of stack."""
    response = cv2.Sobel(stack, cv2.CV_16S, 2, 2, ksize=3)
    return cv2.convertScaleAbs(response, alpha=_NOISE_SCALE)[valid, 1:-1]


def _median_sigma(stack: np.ndarray, valid: np.ndarray | slice) -> float:
    hist = cv2.calcHist([_magnitude(stack, valid)], [0], None, [256], [0, 256]).ravel()
    return _histogram_median(hist) * _MEDIAN_TO_SIGMA / _NOISE_SCALE


def _histogram_median(hist: np.ndarray) -> float:
    """Median of integer data from its histogram, interpolated within the median's bin."""
    cumulative = np.cumsum(hist)
    half = cumulative[-1] / 2.0
    b = int(np.searchsorted(cumulative, half))
    below = cumulative[b] - hist[b]
    return max(0.0, b - 0.5 + float(half - below) / float(hist[b]))


# --- verdicts ----------------------------------------------------------------------------------

_RAMP_LEVELS = 20.0  # grey levels of mean luma from a brightness limit to full marks


def _ramp(margin: float) -> float:
    """0.5 at the limit (margin 0), 1 at a margin of 1 inside it, 0 at 1 beyond it."""
    return min(1.0, max(0.0, 0.5 + 0.5 * margin))


def _ratio(value: float, limit: float) -> float:
    """log2(value / limit): doublings above a lower limit, or, as _ratio(limit, value), below
    an upper one; +inf when the divisor is 0."""
    if limit <= 0.0:
        return math.inf
    return math.log2(value / limit) if value > 0.0 else -math.inf


def _share(value: float, limit: float) -> float:
    """(limit - value) / limit for an upper limit on a share: 1 at 0, 0 at the limit."""
    return (limit - value) / limit if limit > 0.0 else (math.inf if value <= 0.0 else -math.inf)


def aspects(m: QualityMetrics, t: Thresholds) -> tuple[tuple[str, float], ...]:
    """Each reason's factor in the score: 1 comfortably inside its limits, 0.5 at a limit,
    0 as far beyond it. The margins, in each metric's natural unit:

        blurred       log2(sharpness / min_sharpness): full marks at twice the limit
        too_dark      (brightness - min_brightness) / 20 levels, and the clipped-dark share
                      against its limit ((max - share) / max: 1 with nothing clipped)
        too_bright    the same against max_brightness and max_clipped_bright
        low_contrast  log2(contrast / min_contrast)
        noisy         log2(max_noise / noise): full marks at half the limit
        frozen        (frozen_after_s - frozen_s) / frozen_after_s
        blank         (max_uniformity - uniformity) / (max_uniformity / 2)
    """
    dark = min((m.brightness - t.min_brightness) / _RAMP_LEVELS, _share(m.clipped_dark, t.max_clipped_dark))
    bright = min(
        (t.max_brightness - m.brightness) / _RAMP_LEVELS, _share(m.clipped_bright, t.max_clipped_bright)
    )
    return (
        ("blurred", _ramp(_ratio(m.sharpness, t.min_sharpness))),
        ("too_dark", _ramp(dark)),
        ("too_bright", _ramp(bright)),
        ("low_contrast", _ramp(_ratio(m.contrast, t.min_contrast))),
        ("noisy", _ramp(_ratio(t.max_noise, m.noise))),
        ("frozen", _ramp(_share(m.frozen_s, t.frozen_after_s))),
        ("blank", _ramp(2.0 * _share(m.uniformity, t.max_uniformity))),
    )


def score(m: QualityMetrics, t: Thresholds) -> float:
    """Combined quality in [0, 1]: the product of the aspects' factors (see `aspects`).

    1 for a frame comfortably inside every limit; every mild weakness lowers it a little, and
    a frame that fails any limit scores at most 0.5.
    """
    return float(math.prod(factor for _, factor in aspects(m, t)))


def judge(metrics: QualityMetrics, t: Thresholds) -> tuple[str, ...]:
    """Reasons the frame fails, in REASONS order; empty when it passes. Limits are inclusive.

    A frame within every limit but scoring below min_score fails for its weakest aspect.
    """
    m = metrics
    failed = {
        "blurred": m.sharpness < t.min_sharpness,
        "too_dark": m.brightness < t.min_brightness or m.clipped_dark > t.max_clipped_dark,
        "too_bright": m.brightness > t.max_brightness or m.clipped_bright > t.max_clipped_bright,
        "low_contrast": m.contrast < t.min_contrast,
        "noisy": m.noise > t.max_noise,
        "frozen": m.frozen_s >= t.frozen_after_s,
        "blank": m.uniformity > t.max_uniformity,
    }
    reasons = tuple(reason for reason in REASONS if failed[reason])
    if not reasons and m.score < t.min_score:
        reasons = (min(aspects(m, t), key=lambda aspect: aspect[1])[0],)
    return reasons


def measure(luma: np.ndarray, thresholds: Thresholds | None = None) -> QualityMetrics:
    """The metrics of one frame on its own: change and frozen_s are 0 (they need the camera's
    previous frames: use CameraQuality), the score is against `thresholds` (default limits).

    luma is a (h, w) uint8 array, only read; anything else raises ValueError.
    """
    metrics, _ = _measure(luma)
    return _scored(metrics, thresholds or _DEFAULTS)


def _scored(
    metrics: QualityMetrics, t: Thresholds, change: float = 0.0, frozen_s: float = 0.0
) -> QualityMetrics:
    """metrics with the camera's state and the score (direct construction: dataclasses.replace
    costs ~2.5 us a call)."""
    m = metrics
    values = (m.sharpness, m.brightness, m.clipped_dark, m.clipped_bright, m.contrast, m.noise)
    m = QualityMetrics(*values, change, frozen_s, m.uniformity, 0.0)
    return QualityMetrics(*values, change, frozen_s, m.uniformity, score(m, t))


_DEFAULTS = Thresholds()


# --- per camera ----------------------------------------------------------------------------------

LIFE_WINDOW = 4  # a change counts as life when another came within this many frames before it


class CameraQuality:
    """Quality of one camera's frames, with the state frozen detection and the camera's norm need.

    One instance per camera, kept by the one validation worker that camera is routed to, so
    it sees every frame in order. `thresholds` may be replaced at any time (the state stays).

    Frozen: consecutive frames of a live camera always differ (sensor noise), while a stuck
    encoder or decoder repeats one picture. A frame is unchanged when its change is at most
    max_frozen_change. A change counts as life only when another came within LIFE_WINDOW
    frames before it: a single changed frame between unchanged ones (an encoder's periodic
    key frame re-encoding the stuck picture, a glitch) does not end a freeze, while a live
    stream whose source repeats each picture up to four times still shows life. frozen_s is
    the time since the last life; a camera's first frame, a new resolution or time going
    backwards (a restarted stream) start afresh, the norm too.

    Norm (zstream.baseline): each frame is also judged against the camera's own recent norm
    of sharpness, contrast, brightness and noise, once it is warm; the absolute limits stay,
    as a backstop for a camera that starts degraded.
    """

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self.norm = Norm()
        self._sample: np.ndarray | None = None
        self._t = 0.0
        self._alive_t = 0.0
        self._recent = 0  # bit i: the frame i+1 frames ago had changed

    def assess(self, luma: np.ndarray, t: float) -> Assessment:
        """Measure and judge one frame; t is its time in seconds (stream pts, or capture time).

        Raises ValueError for an array that is not a non-empty 2-D uint8 plane, or a t that is
        not finite; the camera's state is then left as it was.
        """
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"frame time must be finite, got {t}")
        metrics, sample = _measure(luma)
        change, frozen_s = self._track(sample, t)
        limits = self.thresholds
        metrics = _scored(metrics, limits, change=change, frozen_s=frozen_s)
        absolute = judge(metrics, limits)
        m = metrics
        observed = Observed(m.sharpness, m.contrast, m.brightness, m.noise, m.clipped_bright)
        relative = self.norm.reasons(observed, limits.norm_limits)
        if not absolute:  # what an absolute limit rejects never becomes the norm
            self.norm.learn(observed, t, limits.norm_limits, slow=bool(relative))
        return Assessment(metrics, tuple(r for r in REASONS if r in relative or r in absolute))

    def _track(self, sample: np.ndarray, t: float) -> tuple[float, float]:
        """(change to the previous frame, seconds since the last life) after this frame."""
        previous, self._sample = self._sample, sample
        if previous is None or previous.shape != sample.shape or t < self._t:
            self._t = self._alive_t = t
            self._recent = 0
            self.norm.reset()
            return 0.0, 0.0
        change = cv2.norm(sample, previous, cv2.NORM_L1) / sample.size
        changed = change > self.thresholds.max_frozen_change
        if changed and self._recent:
            self._alive_t = t
        self._recent = ((self._recent << 1) | changed) & ((1 << LIFE_WINDOW) - 1)
        self._t = t
        return change, t - self._alive_t
