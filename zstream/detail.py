"""Estimators of detail and noise on a frame's luma, for zstream.quality: the sampling plan
made once per frame size, the 2x reductions, the octave-ratio sharpness and the noise sigma.

S is the frame reduced by the largest power of two f that keeps it >= MIN_WORK_WIDTH wide (exact
2x area steps, which average sensor noise down by f); S/2 and S/4 are the next octaves; E,
about 1/16 of full size, is what `mean_gradient` reads. Only reads the frame.

A frame larger than WHOLE_PIXELS is read in STRIPS full-width strips spread evenly down it
(STRIP_ROWS rows of S each, about a third of a 1080p frame): the luma sits in shared memory,
uncached, and reading it is most of the cost. Every octave is made from the same strips, so
the sharpness ratios compare the same parts of the scene; noise and uniformity are read from
them too (brightness and contrast from quality's full-frame point sample). A smaller frame is
read whole.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

MIN_WORK_WIDTH = 640  # S is the frame reduced by the largest power of two that keeps this
COARSE_FACTOR = 16  # E is the frame reduced about this much
WHOLE_PIXELS = 500_000  # a frame up to this size (768x576 and smaller) is read whole
STRIPS = 6  # a larger frame is read in this many strips, or more to read a third of its rows
STRIP_ROWS = 32  # rows of S per strip: S/2 has 16, S/4 8, E 2-8
SHARP_STEP = 3  # at S, every SHARP_STEP-th row centres sharpness windows (odd: every phase of
# an encoder's 8x8 blocks, whose edges are part of the detail)
NOISE_BANDS = 5  # noise is measured on at least this many bands of three rows
OWN_NOISE_PIXELS = 4_000  # windows of S/2 whose own noise is measured
SAMPLE_POINTS = 16_000  # full-resolution point sample: clipping and change
NOISE_SAMPLE_PIXELS = 12_000  # enough for a median within ~1.5 % of the true noise sigma
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
class Bands:
    """Rows read (`rows`: bands of three consecutive rows), and which rows of their stack
    centre 3x3 windows inside one band (`valid`)."""

    rows: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True, slots=True)
class Windows:
    """Where an octave is read: `rows` lists the rows of each 3x3 window (above, centre,
    below) in turn, `count` windows; `noisy`: where the octave's own noise is measured."""

    rows: np.ndarray
    count: int
    noisy: Bands | None


@dataclass(frozen=True, slots=True)
class Plan:
    """How frames of one size are read; made once per size (all arrays read-only)."""

    factor: int  # S = the frame reduced by this (a power of two)
    coarse_steps: int  # 2x steps from S to E
    strips: tuple[int, ...] | None  # first full-resolution row of each strip; None: whole
    strip_rows: int  # full-resolution rows per strip
    windows: tuple[Windows, Windows, Windows]  # sharpness windows of S, S/2 and S/4
    noise: Bands  # full-resolution rows of the noise windows
    coarse_down: tuple[np.ndarray, np.ndarray] | None  # rows of E: vertical neighbours in a strip
    step: int  # the point sample is luma[step // 2 :: step, step // 2 :: step]


@functools.lru_cache(maxsize=16)
def plan_for(h: int, w: int) -> Plan:
    factor = 1
    while w // (2 * factor) >= MIN_WORK_WIDTH and h // (2 * factor) >= 2:
        factor *= 2
    sh, coarse = h // factor, 0
    while factor << coarse < COARSE_FACTOR and sh >> (coarse + 1) >= 3 and (w // factor) >> (coarse + 1) >= 3:
        coarse += 1
    rows = factor * STRIP_ROWS
    n = max(STRIPS, round(h / (3 * rows)))
    if h * w > WHOLE_PIXELS and 2 * h >= 3 * n * rows:
        spacing = (h - rows) // (n - 1)
        starts = (h - rows - spacing * (n - 1)) // 2 + spacing * np.arange(n, dtype=np.intp)
        strips: tuple[int, ...] | None = tuple(int(s) for s in starts)
    else:
        strips, rows, starts = None, h, np.zeros(1, np.intp)
    count = len(starts)
    sw = w // factor
    s, s2, s4 = (
        _windows(count, rows // (factor << k), SHARP_STEP if k == 0 else 1, sw >> k, own=k == 1)
        for k in range(3)
    )
    windows = (s, s2, s4)
    noise = _bands(starts, rows, w, NOISE_SAMPLE_PIXELS)
    e = rows // (factor << coarse)
    down = None
    if strips is not None:
        top = (np.arange(count)[:, None] * e + np.arange(e - 1)).ravel()
        down = (_frozen(top), _frozen(top + 1))
    step = max(1, math.isqrt(h * w // SAMPLE_POINTS))
    return Plan(factor, coarse, strips, rows, windows, noise, down, step)


def _windows(strips: int, rows: int, step: int, width: int, own: bool) -> Windows:
    """Windows centred on every `step`-th inner row of each of `strips` strips of `rows` rows
    (stacked); with `own`, bands for ~OWN_NOISE_PIXELS of the octave's own noise."""
    inner = np.arange(1, rows - 1, step)
    centres = (np.arange(strips)[None, :] * rows + inner[:, None]).ravel()
    noisy = _bands(np.arange(strips) * rows, rows, width, OWN_NOISE_PIXELS) if own and centres.size else None
    return Windows(_frozen(_triplets(centres)), centres.size, noisy)


def _bands(starts: np.ndarray, rows: int, width: int, pixels: int) -> Bands:
    """Bands of three rows (one window each) spread evenly down the strips of `rows` rows at
    `starts`, about `pixels` windows of `width` px in all, at least NOISE_BANDS."""
    if rows < 3 or width < 3:
        return Bands(_frozen(np.zeros(0, np.intp)), _frozen(np.zeros(0, np.intp)))
    wanted = max(NOISE_BANDS, -(-pixels // (width - 2)))
    per_strip = min(-(-wanted // starts.size), rows - 2)
    offsets = np.linspace(0, rows - 3, per_strip).round().astype(np.intp)
    firsts = (starts[None, :] + offsets[:, None]).ravel()[:wanted]  # taking turns over the strips
    taken = (firsts[:, None] + np.arange(3)).ravel().astype(np.intp)
    return Bands(_frozen(taken), _frozen(np.arange(1, taken.size, 3, dtype=np.intp)))


def _triplets(centres: np.ndarray) -> np.ndarray:
    return (centres[:, None] + np.arange(-1, 2)).ravel().astype(np.intp)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


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


def octaves(luma: np.ndarray, plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """S, S/2, S/4 and E of the frame's strips (stacked; the whole frame when it has none)."""
    if plan.strips is None:
        small = reduce(luma, plan.factor, prefetch=True)
    else:
        rows, w = plan.strip_rows, luma.shape[1]
        if plan.factor == 1:
            small = np.concatenate([luma[s : s + rows] for s in plan.strips])
        else:  # each strip's first 2x step straight into the stack: one read of the frame
            strips = plan.strips
            first = np.empty((len(strips) * (rows // 2), w // 2), np.uint8)
            for k, s in enumerate(strips):
                part = luma[s : s + rows, : w - w % 2]
                out = first[k * (rows // 2) : (k + 1) * (rows // 2)]
                cv2.countNonZero(part)  # into cache first: see reduce
                cv2.resize(part, (w // 2, rows // 2), dst=out, interpolation=cv2.INTER_AREA)
            small = reduce(first, plan.factor // 2)
    half = reduce(small, 2)
    quarter = reduce(half, 2)
    steps = plan.coarse_steps
    coarse = (small, half, quarter)[steps] if steps <= 2 else reduce(quarter, 1 << (steps - 2))
    return small, half, quarter, coarse


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
    the rounding of each reduction) and, at S/2, the noise measured on that octave itself (an
    encoder wipes the finest noise and leaves coarser, which full resolution does not show;
    measured at S as well, it changed no verdict on the real set). When
    noise dominates the finest octave (sigma at S above FINE_NOISE_MAX), only the second
    ratio is used.
    """
    variance, detail, raw = sigma * sigma + _ROUNDING_VAR, [], []
    for octave, windows in zip(octaves, plan.windows, strict=True):
        measured = _directional_energy(octave, windows)
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


def _directional_energy(image: np.ndarray, windows: Windows) -> tuple[np.ndarray, float] | None:
    """Mean squared second difference along x, y and both diagonals over the 3x3 windows
    (interior columns), and the noise sigma measured on the octave's `windows.noisy` bands (see
    noise); None if there are none.

    With u = a - b and v = c - b, (a - 2b + c)^2 = 2u^2 + 2v^2 - (a - c)^2: each direction's
    energy is three sums of squared differences between shifted views of the windows' rows
    (exact integers from cv2.norm, no filtered image).
    """
    if windows.count == 0 or image.shape[1] < 3:
        return None
    rows = image.take(windows.rows, axis=0)  # above, centre, below, for each window
    up, mid, down = rows[0::3], rows[1::3], rows[2::3]
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
    own = 0.0
    if windows.noisy is not None and int(windows.noisy.rows[-1]) < image.shape[0]:
        own = _median_sigma(image.take(windows.noisy.rows, axis=0), windows.noisy.valid)
    return energy / centre.size, own


def mean_gradient(coarse: np.ndarray, down: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Mean absolute difference between neighbours of E, across and down (grey levels); down
    only between the rows `down` pairs (neighbours in one strip; None: all)."""
    h, w = coarse.shape
    total, count = 0.0, 0
    if w > 1:
        total += cv2.norm(coarse[:, 1:], coarse[:, :-1], cv2.NORM_L1)
        count += h * (w - 1)
    if down is not None and down[1].size and int(down[1][-1]) < h:
        total += cv2.norm(coarse.take(down[0], axis=0), coarse.take(down[1], axis=0), cv2.NORM_L1)
        count += down[0].size * w
    elif down is None and h > 1:
        total += cv2.norm(coarse[1:], coarse[:-1], cv2.NORM_L1)
        count += (h - 1) * w
    return total / count if count else 0.0


def noise(luma: np.ndarray, plan: Plan) -> tuple[float, float]:
    """(sigma of Gaussian noise, share of impulses) from Immerkaer's operator on windows at
    full resolution, spread down the strips.

    The kernel (a separable second difference, i.e. Sobel dx=2 dy=2) cancels flat areas,
    ramps and straight edges; texture and corners still respond, but they cover a minority of
    pixels, so the median of |response| tracks the noise. Impulses are counted apart (see
    _NOISE_SCALE).
    """
    h, w = luma.shape
    if h < 3 or w < 3 or not plan.noise.valid.size:
        return 0.0, 0.0
    magnitude = _magnitude(luma.take(plan.noise.rows, axis=0), plan.noise.valid)
    hist = cv2.calcHist([magnitude], [0], None, [256], [0, 256]).ravel()
    sigma = _histogram_median(hist) * _MEDIAN_TO_SIGMA / _NOISE_SCALE
    # Strong Gaussian noise saturates some responses too (1 % at sigma 35): only the excess
    # over that share is impulses.
    gaussian = math.erfc(255.0 / _NOISE_SCALE / (6.0 * sigma * math.sqrt(2.0))) if sigma > 0.0 else 0.0
    return sigma, max(0.0, float(hist[255]) / float(hist.sum()) - gaussian)


def _magnitude(stack: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """|Immerkaer's operator| x _NOISE_SCALE (saturated at 255) on the rows `valid` of stack
    (interior columns)."""
    response = cv2.Sobel(stack, cv2.CV_16S, 2, 2, ksize=3)
    return cv2.convertScaleAbs(response[valid, 1:-1], alpha=_NOISE_SCALE)


def _median_sigma(stack: np.ndarray, valid: np.ndarray) -> float:
    hist = cv2.calcHist([_magnitude(stack, valid)], [0], None, [256], [0, 256]).ravel()
    return _histogram_median(hist) * _MEDIAN_TO_SIGMA / _NOISE_SCALE


def _histogram_median(hist: np.ndarray) -> float:
    """Median of integer data from its histogram, interpolated within the median's bin."""
    cumulative = np.cumsum(hist)
    half = cumulative[-1] / 2.0
    b = int(np.searchsorted(cumulative, half))
    below = cumulative[b] - hist[b]
    return max(0.0, b - 0.5 + float(half - below) / float(hist[b]))
