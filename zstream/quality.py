"""Per-frame quality metrics on the luma plane, for the validation stage.

Everything works on the Y plane as it sits in shared memory (no colour conversion) and,
except for noise, on a copy reduced to about 960 px wide: blur, exposure and contrast
are visible at that size, and a fixed working width makes the result nearly independent
of the camera's resolution (720p and 1080p views of one scene agree within ~10 %).
Noise is a pixel-level property that downscaling averages away, so it is estimated at
full resolution on a sample of thin row bands instead.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

WORK_WIDTH = 960  # metrics other than noise are computed at about this width
NOISE_BAND_ROWS = 4  # rows per sampled band; the outer two only feed the 3x3 kernel
NOISE_SAMPLE_PIXELS = 32_000  # enough for a median within ~1 % of the true noise sigma
# Immerkaer's kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] has squared coefficients summing to 36,
# so on Gaussian noise of sigma s its response has sigma 6 s, and |response| a median of
# 0.6745 * 6 s.
_MEDIAN_TO_SIGMA = 1.0 / (0.6745 * 6.0)

Reason = str  # one of "blurred", "too_dark", "too_bright", "low_contrast", "noisy"


@dataclass(frozen=True, slots=True)
class QualityMetrics:
    """What `measure` reports for one frame.

    sharpness   variance of cv2.Laplacian(ksize=3), kernel [[2,0,2],[0,-8,0],[2,0,2]], at
                ~960 px width; ~10^4 for a crisp scene, ~10^2 once blurred by sigma 3 px
    brightness  mean luma, 0..255
    contrast    standard deviation of luma at ~960 px width (not a percentile spread:
                cheaper, and a dark or washed-out frame is caught by brightness anyway)
    noise       estimated sigma of additive Gaussian noise on the luma, in grey levels
    """

    sharpness: float
    brightness: float
    contrast: float
    noise: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def measure(luma: np.ndarray) -> QualityMetrics:
    """All four metrics of a (h, w) uint8 luma array; the array is only read."""
    if luma.ndim != 2 or luma.dtype != np.uint8 or luma.size == 0:
        raise ValueError(f"expected a non-empty 2-D uint8 luma plane, got {luma.dtype} {luma.shape}")
    small = _reduce(luma)
    mean, std = cv2.meanStdDev(small)
    return QualityMetrics(
        sharpness=_laplacian_variance(small),
        brightness=float(mean[0, 0]),
        contrast=float(std[0, 0]),
        noise=_noise_sigma(luma),
    )


def _reduce(luma: np.ndarray) -> np.ndarray:
    """Shrink to about WORK_WIDTH: exact 2x area averaging (OpenCV's fast path), then linear.

    Area resizes by other factors are several times slower than the 2x path, and the final
    linear step shrinks by less than 2x, so it does not alias. A frame fresh from shared
    memory is not in cache, and cv2's 2x resize reads it about twice as slowly as a
    sequential copy does: copying first makes the whole reduction ~40 % faster at 1080p.
    """
    h, w = luma.shape
    if w >= 2 * WORK_WIDTH and h >= 2:
        luma = luma.copy()
    while w >= 2 * WORK_WIDTH and h >= 2:
        luma = cv2.resize(luma[: h - h % 2, : w - w % 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        h, w = luma.shape
    if w > WORK_WIDTH:
        size = (WORK_WIDTH, max(1, round(h * WORK_WIDTH / w)))
        luma = cv2.resize(luma, size, interpolation=cv2.INTER_LINEAR)
    return luma


def _laplacian_variance(small: np.ndarray) -> float:
    """Var of the Laplacian as E[L^2] - E[L]^2: cv2.norm is much faster than meanStdDev on int16.

    ksize=3 rather than the 4-neighbour kernel because OpenCV runs it ~3x faster.
    """
    lap = cv2.Laplacian(small, cv2.CV_16S, ksize=3)
    mean = cv2.mean(lap)[0]
    return max(0.0, cv2.norm(lap, cv2.NORM_L2SQR) / lap.size - mean * mean)


def _noise_sigma(luma: np.ndarray) -> float:
    """Immerkaer's noise estimate made robust to edges: median instead of mean of |response|.

    The kernel (a separable second difference, i.e. Sobel dx=2 dy=2) cancels flat areas and
    linear ramps; edges and texture still respond, but they cover a minority of pixels, so
    the median of the absolute response tracks the noise rather than the scene.
    """
    h, w = luma.shape
    if h < 3 or w < 3:
        return 0.0
    rows, mask = _noise_sample(h, w)
    sample = luma if rows is None else luma[rows]
    magnitude = cv2.convertScaleAbs(cv2.Sobel(sample, cv2.CV_16S, 2, 2, ksize=3))
    hist = cv2.calcHist([magnitude], [0], mask, [256], [0, 256]).ravel()
    return _histogram_median(hist) * _MEDIAN_TO_SIGMA


@functools.lru_cache(maxsize=16)
def _noise_sample(h: int, w: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Rows to sample (None: all) and the mask of pixels whose 3x3 window is real image.

    Bands are spread evenly down the frame so sky, road and verge all contribute; their
    first and last rows are masked out because the kernel there would straddle two bands.
    """
    inner = NOISE_BAND_ROWS - 2
    bands = round(NOISE_SAMPLE_PIXELS / (inner * max(1, w - 2)))
    if bands * NOISE_BAND_ROWS >= h // 2:
        rows, band_rows = None, h
    else:
        starts = np.linspace(0, h - NOISE_BAND_ROWS, max(1, bands)).round().astype(np.intp)
        rows, band_rows = (starts[:, None] + np.arange(NOISE_BAND_ROWS)).ravel(), NOISE_BAND_ROWS
        rows.flags.writeable = False  # cached and shared between calls
    mask = np.zeros((h if rows is None else rows.size, w), np.uint8)
    mask.reshape(-1, band_rows, w)[:, 1:-1, 1:-1] = 1
    mask.flags.writeable = False
    return rows, mask


def _histogram_median(hist: np.ndarray) -> float:
    """Median of integer data from its histogram, interpolated within the median's bin."""
    cumulative = np.cumsum(hist)
    half = cumulative[-1] / 2.0
    b = int(np.searchsorted(cumulative, half))
    below = cumulative[b] - hist[b]
    return max(0.0, b - 0.5 + float(half - below) / float(hist[b]))


class Thresholds(BaseModel):
    """Limits a frame must respect to pass validation; see `judge`.

    Defaults, against the synthetic scene (720p/1080p) and two real photos: crisp frames
    score sharpness 4,000-15,000 and a sigma-3 px blur 20-400; mean luma 16 at 15 %
    exposure and 38 at 35 % (a night scene, which passes), 243 when over-exposed 3x;
    contrast ~40 normally, 6 when compressed to 15 %; noise 0.5-2 on clean frames, 5.5,
    10.3 and 20 with added Gaussian noise of sigma 5, 10 and 20.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_sharpness: float = Field(
        600.0, ge=0, le=1_000_000, description="lowest Laplacian variance at ~960 px width; below: 'blurred'"
    )
    min_brightness: float = Field(20.0, ge=0, le=255, description="lowest mean luma; below: 'too_dark'")
    max_brightness: float = Field(225.0, ge=0, le=255, description="highest mean luma; above: 'too_bright'")
    min_contrast: float = Field(
        10.0, ge=0, le=128, description="lowest standard deviation of luma; below: 'low_contrast'"
    )
    max_noise: float = Field(
        12.0, ge=0, le=128, description="highest estimated noise sigma in grey levels; above: 'noisy'"
    )

    @model_validator(mode="after")
    def _brightness_range(self) -> Thresholds:
        if self.min_brightness >= self.max_brightness:
            raise ValueError("min_brightness must be below max_brightness")
        return self


def judge(metrics: QualityMetrics, thresholds: Thresholds) -> tuple[Reason, ...]:
    """Reasons the frame fails, in a fixed order; empty when it passes."""
    checks = (
        ("blurred", metrics.sharpness < thresholds.min_sharpness),
        ("too_dark", metrics.brightness < thresholds.min_brightness),
        ("too_bright", metrics.brightness > thresholds.max_brightness),
        ("low_contrast", metrics.contrast < thresholds.min_contrast),
        ("noisy", metrics.noise > thresholds.max_noise),
    )
    return tuple(reason for reason, failed in checks if failed)
