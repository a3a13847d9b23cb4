"""Estimators of detail and noise on a frame's luma, for zstream.quality: the sampling plan
made once per frame size, the 2x reductions, the octave-ratio sharpness and the noise sigma.

S is the frame reduced by the largest power of two f that keeps it >= MIN_WORK_WIDTH wide (exact
2x area steps, which average sensor noise down by f); S/2 and S/4 are the next octaves; E,
about 1/16 of full size, is what `mean_gradient` reads. Only reads the frame.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

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
IMPULSE_RMS_SQ = 128.0**2  # each impulse counts as a +-128 deviation
_NOISE_ENERGY = 6.0  # squared coefficients of [1, -2, 1]: energy of white noise of sigma 1
_ROUNDING_VAR = 1.0 / 12.0  # variance of rounding to integers, added by every reduction step
_DETAIL_PRIOR = 0.5  # grey levels^2 of detail energy assumed in each octave (see _sharpness)
FINE_NOISE_MAX = 2.5  # noise sigma at S above which the finest octave is not judged


@dataclass(frozen=True, slots=True)
class Plan:
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
def plan_for(h: int, w: int) -> Plan:
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
    return Plan(factor, coarse, sharp, noise_rows, noise_valid, step)


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


def reduce(luma: np.ndarray, factor: int, prefetch: bool = False) -> np.ndarray:
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


def sharpness(octaves: tuple[np.ndarray, np.ndarray, np.ndarray], plan: Plan, sigma: float) -> float:
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


def mean_gradient(coarse: np.ndarray) -> float:
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


def noise(luma: np.ndarray, plan: Plan) -> tuple[float, float]:
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
