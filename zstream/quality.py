"""Per-frame quality of a camera's picture, measured on the luma plane, for the validation stage.

Reads the Y plane where it sits in shared memory (never writes it, never converts colour).
One pass makes S, the frame reduced by the largest power of two f that keeps it >= 640 px
wide (f = 2 at 720p and 1080p, 4 at 4K) by exact 2x area steps, which average sensor noise
down by f; more 2x steps give S/2, S/4 and E, about 1/16 of full size (zstream.detail). A
frame over 500,000 px is read in 6 full-width strips (a third of its rows or more): reading
the uncached frame was most of the cost.
Numbers are on the labelled sets (tests/quality_set.py, tests/quality_real.py).

    sharpness    how much fine detail survives, in the weakest of four directions: 100 x the
                 energy of second differences at S over that at S/2 (and S/2 over S/4, the
                 smaller wins), sensor and encoder noise subtracted (zstream.detail.sharpness).
                 Natural scenes are about scale-invariant, so a sharp frame scores the same
                 at 352 px or 4K, in daylight or at night, with large flat areas or strong
                 edges; blur lowers it. Real photographs: clean >= 16 (median ~40); the floor,
                 with no fine detail left, ~8-15.
    brightness   mean luma, 0..255 (of S/2, or of the point sample when read in strips)
    clipped_dark / clipped_bright
                 shares of a full-resolution point sample at or below 16 / at or above 235,
                 video-range black and white (BT.601/709 limited range, what H.264 cameras
                 send), where sensors clip; full-range sources clip at 0/255, counted too.
    contrast     RMS contrast, std / mean of luma (S/2's, or the point sample's less the
                 sensor noise when read in strips): unlike the std alone, it stays put when
                 a night scene is dimmer (>= 0.24), and drops in fog or haze (<= 0.085).
    noise        sigma of the sensor noise in grey levels: Immerkaer's operator on three-row
                 full-resolution bands (~12,000 points), robust to edges through a median; isolated
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
from dataclasses import dataclass, fields

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from zstream.baseline import Norm, NormLimits, Observed
from zstream.detail import IMPULSE_RMS_SQ, mean_gradient, noise, octaves, plan_for, sharpness

REASONS = ("blurred", "too_dark", "too_bright", "low_contrast", "noisy", "frozen", "blank")
BLACK, WHITE = 16, 235  # video-range luma of black and white


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
        # Not dataclasses.asdict: its deep copy cost 3 % of validation's CPU in the pipeline.
        return {name: getattr(self, name) for name in METRIC_NAMES}


METRIC_NAMES = tuple(f.name for f in fields(QualityMetrics))


class Thresholds(BaseModel):
    """Limits a frame must respect to pass validation; see `judge`. Overridable per camera.

    Each default sits between what the labelled set (tests/quality_set.py) measures on clean
    day and night frames (incl. live sequences) and on the degradations it must detect; those
    two ranges are quoted in the descriptions as "clean ... / must ...".
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_sharpness: float = Field(
        13.0,
        ge=0,
        le=1e5,
        description="below: 'blurred' (real clean >= 16; a backstop: blur is judged against the norm)",
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
        14.0, ge=0, le=255, description="highest noise sigma (clean <= 12.5 / must >= 17)"
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
        0.65, ge=0, le=1, description="above: 'blank' (clean <= 0.60, fog at dusk / must >= 0.73)"
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
        0.78, ge=0, le=1, description="below this share of the camera's norm: 'blurred'"
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


def _measure(luma: np.ndarray) -> tuple[QualityMetrics, np.ndarray]:
    """The frame's own metrics (no change, frozen_s or score yet) and its point sample."""
    if not isinstance(luma, np.ndarray) or luma.ndim != 2 or luma.dtype != np.uint8 or luma.size == 0:
        raise ValueError(
            f"expected a non-empty 2-D uint8 luma plane, got {getattr(luma, 'dtype', type(luma))} "
            f"{getattr(luma, 'shape', '')}"
        )
    plan = plan_for(*luma.shape)
    small, half, quarter, coarse = octaves(luma, plan)
    sigma, impulses = noise(luma, plan)
    gradient = mean_gradient(coarse, plan.coarse_down)
    step = plan.step
    sample = np.ascontiguousarray(luma[step // 2 :: step, step // 2 :: step])
    n = sample.size
    if plan.strips is None:  # read whole: S/2 keeps the mean and most of the spread; a tiny
        # frame is used itself (the 2x steps drop an odd last row and column, which would bias
        # the mean of a 17x9 frame)
        mean, std = cv2.meanStdDev(half if half.size >= 4096 else luma)
        spread = float(std[0, 0])
    else:  # the point sample covers the whole frame (the strips a third of it); its spread,
        # less the sensor noise, is the scene's
        mean, std = cv2.meanStdDev(sample)
        spread = math.sqrt(max(float(std[0, 0]) ** 2 - sigma * sigma, 0.0))
    brightness = float(mean[0, 0])
    metrics = QualityMetrics(
        sharpness=sharpness((small, half, quarter), plan, sigma / plan.factor),
        brightness=brightness,
        clipped_dark=int(np.count_nonzero(sample <= BLACK)) / n,
        clipped_bright=int(np.count_nonzero(sample >= WHITE)) / n,
        contrast=spread / max(brightness, 1.0),
        noise=math.sqrt(sigma * sigma + IMPULSE_RMS_SQ * impulses),
        change=0.0,
        frozen_s=0.0,
        uniformity=1.0 / (1.0 + gradient),
        score=0.0,
    )
    return metrics, sample


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
