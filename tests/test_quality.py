"""Quality metrics and verdicts: clean traffic scenes pass, degraded copies fail for the right reason."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from zstream.quality import QualityMetrics, Thresholds, judge, measure
from zstream.sources.synthetic import TrafficScene

REASONS = ("blurred", "too_dark", "too_bright", "low_contrast", "noisy")


def _luma(width: int, height: int, seed: int = 7) -> np.ndarray:
    return TrafficScene(width, height, seed=seed, vehicles=6, label="cam-01").render(42)[:height]


@pytest.fixture(scope="module", params=[(1280, 720), (1920, 1080)], ids=["720p", "1080p"])
def luma(request: pytest.FixtureRequest) -> np.ndarray:
    return _luma(*request.param)


def _scaled(luma: np.ndarray, gain: float, pivot: float = 0.0) -> np.ndarray:
    out = (luma.astype(np.float32) - pivot) * gain + pivot
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _noisy(luma: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, luma.shape)
    return np.clip(luma + noise + 0.5, 0, 255).astype(np.uint8)


DEGRADATIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "gaussian blur sigma 3": (lambda y: cv2.GaussianBlur(y, (0, 0), 3), "blurred"),
    "gaussian blur sigma 5": (lambda y: cv2.GaussianBlur(y, (0, 0), 5), "blurred"),
    "exposure 15 %": (lambda y: _scaled(y, 0.15), "too_dark"),
    "exposure 8 %": (lambda y: _scaled(y, 0.08), "too_dark"),
    "exposure x3": (lambda y: _scaled(y, 3.0), "too_bright"),
    "exposure +160": (lambda y: np.clip(y.astype(int) + 160, 0, 255).astype(np.uint8), "too_bright"),
    "contrast 15 %": (lambda y: _scaled(y, 0.15, float(y.mean())), "low_contrast"),
    "contrast 10 %": (lambda y: _scaled(y, 0.10, float(y.mean())), "low_contrast"),
    "noise sigma 20": (lambda y: _noisy(y, 20), "noisy"),
    "noise sigma 30": (lambda y: _noisy(y, 30), "noisy"),
}


def test_clean_scene_passes_defaults(luma: np.ndarray) -> None:
    metrics = measure(luma)
    assert judge(metrics, Thresholds()) == (), metrics


@pytest.mark.parametrize("name", DEGRADATIONS)
def test_degraded_scene_fails_for_the_right_reason(luma: np.ndarray, name: str) -> None:
    degrade, reason = DEGRADATIONS[name]
    metrics = measure(degrade(luma))
    reasons = judge(metrics, Thresholds())
    assert reason in reasons, metrics
    if reason != "noisy":
        assert "noisy" not in reasons, metrics


@pytest.mark.parametrize("sigma", [0, 3, 6])
def test_ordinary_frames_are_not_noisy(luma: np.ndarray, sigma: float) -> None:
    metrics = measure(_noisy(luma, sigma) if sigma else luma)
    assert "noisy" not in judge(metrics, Thresholds()), metrics


def test_night_scene_passes() -> None:
    """A frame at 35 % exposure (dim, lower contrast) is a normal night, not a fault."""
    metrics = measure(_scaled(_luma(1280, 720), 0.35))
    assert judge(metrics, Thresholds()) == (), metrics


# --- the estimators --------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [2.0, 5.0, 10.0, 20.0])
def test_noise_estimate_on_flat_frame(sigma: float) -> None:
    flat = np.full((720, 1280), 120, np.uint8)
    assert measure(_noisy(flat, sigma)).noise == pytest.approx(sigma, rel=0.1)


@pytest.mark.parametrize("sigma", [5.0, 10.0, 20.0])
def test_noise_estimate_is_robust_to_edges(sigma: float) -> None:
    """Large steps everywhere (a checkerboard of 8 px squares) barely move the estimate."""
    board = (np.indices((720, 1280)) // 8).sum(axis=0) % 2
    edges = (60 + 120 * board).astype(np.uint8)
    assert measure(edges).noise < 1.0
    assert measure(_noisy(edges, sigma)).noise == pytest.approx(sigma, rel=0.15)


def test_noise_estimate_on_scene(luma: np.ndarray) -> None:
    base = measure(luma).noise
    assert base < 4
    assert measure(_noisy(luma, 10)).noise == pytest.approx(math.hypot(10, base), rel=0.15)


def test_brightness_and_contrast_match_full_resolution(luma: np.ndarray) -> None:
    metrics = measure(luma)
    assert metrics.brightness == pytest.approx(float(luma.mean()), abs=0.5)
    assert metrics.contrast == pytest.approx(float(luma.std()), rel=0.1)


def test_sharpness_barely_depends_on_resolution() -> None:
    small, large = measure(_luma(1280, 720)).sharpness, measure(_luma(1920, 1080)).sharpness
    assert 0.67 < small / large < 1.5


def test_sharpness_falls_with_blur(luma: np.ndarray) -> None:
    values = [measure(cv2.GaussianBlur(luma, (0, 0), s) if s else luma).sharpness for s in (0, 1, 2, 3)]
    assert values == sorted(values, reverse=True)
    assert values[0] > 10 * values[3]


# --- inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(9, 17), (17, 9), (1, 1), (2, 3), (3, 3), (5, 2000), (2000, 5), (721, 1281), (1081, 1921)]
)
def test_odd_and_tiny_sizes(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    luma = rng.integers(0, 256, shape, dtype=np.uint8)
    metrics = measure(luma)
    assert all(math.isfinite(v) and v >= 0 for v in metrics.as_dict().values())
    assert metrics.brightness == pytest.approx(float(luma.mean()), abs=1.0)
    assert set(judge(metrics, Thresholds())) <= {"blurred", "too_dark", "too_bright", "low_contrast", "noisy"}


def test_input_is_only_read(luma: np.ndarray) -> None:
    frozen = luma.copy()
    frozen.flags.writeable = False  # as a shared-memory view handed out read-only would be
    before = frozen.tobytes()
    measure(frozen)
    assert frozen.tobytes() == before


def test_padded_view_gives_the_same_metrics(luma: np.ndarray) -> None:
    h, w = luma.shape
    padded = np.zeros((h, w + 64), np.uint8)
    padded[:, :w] = luma
    assert measure(padded[:, :w]) == measure(luma)


@pytest.mark.parametrize(
    "bad", [np.zeros((0, 5), np.uint8), np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32)]
)
def test_rejects_non_luma_input(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        measure(bad)


# --- thresholds and verdicts -------------------------------------------------------------------


def test_judge_reasons_and_order() -> None:
    t = Thresholds()
    good = QualityMetrics(sharpness=5000, brightness=110, contrast=40, noise=2)
    assert judge(good, t) == ()
    dark = QualityMetrics(sharpness=0, brightness=5, contrast=1, noise=50)
    assert judge(dark, t) == ("blurred", "too_dark", "low_contrast", "noisy")
    assert judge(QualityMetrics(5000, 250, 40, 2), t) == ("too_bright",)
    assert set(judge(dark, t)) | set(judge(QualityMetrics(5000, 250, 40, 2), t)) == set(REASONS)


def test_limits_are_inclusive() -> None:
    t = Thresholds()
    edge = QualityMetrics(t.min_sharpness, t.min_brightness, t.min_contrast, t.max_noise)
    assert judge(edge, t) == ()


def test_as_dict() -> None:
    m = QualityMetrics(1.0, 2.0, 3.0, 4.0)
    assert m.as_dict() == {"sharpness": 1.0, "brightness": 2.0, "contrast": 3.0, "noise": 4.0}


def test_thresholds_model() -> None:
    assert Thresholds(max_noise=8).max_noise == 8
    for field in Thresholds.model_fields.values():
        assert field.description
    with pytest.raises(ValidationError):
        Thresholds(max_nosie=8)  # typo: extra keys are forbidden
    with pytest.raises(ValidationError):
        Thresholds(min_brightness=-1)
    with pytest.raises(ValidationError):
        Thresholds(max_brightness=300)
    with pytest.raises(ValidationError, match="min_brightness"):
        Thresholds(min_brightness=200, max_brightness=100)
    t = Thresholds()
    with pytest.raises(ValidationError):
        t.max_noise = 3  # frozen
