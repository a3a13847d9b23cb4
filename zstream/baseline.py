"""A camera's own recent norm of sharpness, contrast, brightness and noise.

A fixed camera watches one scene, so a frame is best judged against what that camera showed
a moment ago: a lens that fogs, is sprayed or refocused lowers sharpness or contrast against
the norm even where an absolute limit still passes it, and a scene that is naturally soft or
flat sets its own norm instead of being rejected for ever. (quality.CameraQuality keeps one
per camera; this module only does the arithmetic and imports nothing of zstream.)

The norm is an exponential mean in time of log sharpness, log contrast, log brightness above
video black and the noise sigma, with time constant `follow_s`. It is bias-corrected: during
the first `follow_s` it is the plain mean of what it has seen, so the first frames count
fully. It judges once it holds `warmup_s` seconds of frames. Which frames it learns from is
the caller's choice (see `learn`): frames that passed, at full rate; frames rejected only
against the norm, at the slow rate of `relearn_s` (a lasting change becomes the new norm);
frames rejected by an absolute limit, not at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BLACK = 16.0  # video-range black: brightness is compared above it
MAX_STEP_S = 1.0  # a gap between frames counts as at most this long
FIRST_WEIGHT_S = 0.1  # what the first frame learnt weighs, in seconds of frames


@dataclass(frozen=True, slots=True)
class NormLimits:
    """How far a frame may fall from the norm (ratios) and how the norm moves (seconds)."""

    warmup_s: float
    follow_s: float  # 0: no norm, nothing judged relatively
    relearn_s: float
    min_sharpness_ratio: float
    min_contrast_ratio: float
    min_brightness_ratio: float  # too_dark below this share of the norm above black
    max_brightness_ratio: float  # too_bright above this multiple (with some clipped white)
    max_noise_ratio: float


@dataclass(frozen=True, slots=True)
class Observed:
    """The values of one frame the norm follows."""

    sharpness: float
    contrast: float
    brightness: float
    noise: float
    clipped_bright: float


_NOISE_SLACK = 3.0  # grey levels: a noise rise smaller than this is never 'noisy'
_CLIPPED_BRIGHT = 0.02  # share at video white a relative 'too_bright' needs as well


class Norm:
    """The norm of one camera; reset on a new resolution or when stream time goes back."""

    def __init__(self) -> None:
        self._mean: tuple[float, float, float, float] | None = None
        self._weight = 0.0  # seconds of frames the mean holds (decayed)
        self._t = 0.0

    @property
    def values(self) -> Observed | None:
        """The norm in the metrics' own units (None before the first frame learnt)."""
        if self._mean is None:
            return None
        s, c, b, n = self._mean
        return Observed(math.exp(s), math.exp(c), BLACK + math.exp(b), n, 0.0)

    def reset(self) -> None:
        self._mean, self._weight = None, 0.0

    def warm(self, limits: NormLimits) -> bool:
        return (
            self._mean is not None
            and limits.follow_s > 0
            and self._weight >= min(limits.warmup_s, 0.9 * limits.follow_s)
        )

    def reasons(self, o: Observed, limits: NormLimits) -> frozenset[str]:
        """The reasons this frame fails against the norm (none until warm)."""
        norm = self.values
        if norm is None or not self.warm(limits):
            return frozenset()
        above, usual = max(o.brightness - BLACK, 0.0), norm.brightness - BLACK
        failed = {
            "blurred": o.sharpness < limits.min_sharpness_ratio * norm.sharpness,
            "low_contrast": o.contrast < limits.min_contrast_ratio * norm.contrast,
            "too_dark": above < limits.min_brightness_ratio * usual,
            "too_bright": above > limits.max_brightness_ratio * usual and o.clipped_bright >= _CLIPPED_BRIGHT,
            "noisy": o.noise > max(limits.max_noise_ratio * norm.noise, norm.noise + _NOISE_SLACK),
        }
        return frozenset(reason for reason, bad in failed.items() if bad)

    def learn(self, o: Observed, t: float, limits: NormLimits, slow: bool = False) -> None:
        """Move the norm towards this frame at time t (s); `slow`: at the rate of relearn_s."""
        if limits.follow_s <= 0:
            return
        x = (
            math.log(max(o.sharpness, 1e-3)),
            math.log(max(o.contrast, 1e-4)),
            math.log(max(o.brightness - BLACK, 0.5)),
            o.noise,
        )
        if self._mean is None:
            self._mean, self._weight, self._t = x, FIRST_WEIGHT_S, t
            return
        dt = min(max(t - self._t, 0.0), MAX_STEP_S)
        self._t = t
        decay = math.exp(-dt / limits.follow_s)
        gain = dt * (limits.follow_s / max(limits.relearn_s, limits.follow_s) if slow else 1.0)
        kept = self._weight * decay
        total = kept + gain
        if total <= 0.0:
            return
        sharpness, contrast, brightness, noise = (
            (m * kept + v * gain) / total for m, v in zip(self._mean, x, strict=True)
        )
        self._mean = (sharpness, contrast, brightness, noise)
        self._weight = total
