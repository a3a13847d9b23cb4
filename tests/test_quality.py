"""Quality metrics, verdicts and per-camera state: the estimators, the limits, bad input.

The accuracy targets on the labelled set are in test_quality_labelled.py; these tests pin
down what each metric means on small, hand-made inputs.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from tests.quality_set import motion_kernel
from zstream.quality import (
    REASONS,
    Assessment,
    CameraQuality,
    QualityMetrics,
    Thresholds,
    aspects,
    judge,
    measure,
    score,
)
from zstream.sources.synthetic import TrafficScene

REPO = Path(__file__).resolve().parent.parent
FIELDS = ["sharpness", "brightness", "clipped_dark", "clipped_bright", "contrast", "noise"]
FIELDS += ["change", "frozen_s", "uniformity", "score"]


def _luma(width: int, height: int, seed: int = 7) -> np.ndarray:
    return TrafficScene(width, height, seed=seed, vehicles=6, label="cam-01").render(42)[:height]


@pytest.fixture(scope="module", params=[(1280, 720), (1920, 1080)], ids=["720p", "1080p"])
def luma(request: pytest.FixtureRequest) -> np.ndarray:
    return _luma(*request.param)


def _scaled(luma: np.ndarray, gain: float, pivot: float = 16.0) -> np.ndarray:
    out = (luma.astype(np.float32) - pivot) * gain + pivot
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _noisy(luma: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, luma.shape)
    return np.clip(luma + noise + 0.5, 0, 255).astype(np.uint8)


def _metrics(**values: float) -> QualityMetrics:
    """Comfortably clean metrics, with some values replaced."""
    clean = dict(
        sharpness=100.0,
        brightness=110.0,
        clipped_dark=0.0,
        clipped_bright=0.0,
        contrast=0.4,
        noise=2.0,
        change=2.0,
        frozen_s=0.0,
        uniformity=0.1,
        score=1.0,
    )
    return QualityMetrics(**{**clean, **values})


# --- the metrics on a clean scene ----------------------------------------------------------------


def test_clean_scene_passes_with_a_high_score(luma: np.ndarray) -> None:
    metrics = measure(_noisy(luma, 1.5))
    assert judge(metrics, Thresholds()) == (), metrics
    assert metrics.score > 0.8


def test_night_scene_passes() -> None:
    """A frame at 35 % exposure with the noise of a high-gain sensor is a night, not a fault."""
    metrics = measure(_noisy(_scaled(_luma(1280, 720), 0.35), 5))
    assert judge(metrics, Thresholds()) == (), metrics


DEGRADATIONS = {
    "exposure 8 %": (lambda y: _scaled(y, 0.08), "too_dark"),
    "exposure x3": (lambda y: _scaled(y, 3.0), "too_bright"),
    "contrast 10 %": (lambda y: _scaled(y, 0.10, float(y.mean())), "low_contrast"),
    "noise sigma 25": (lambda y: _noisy(y, 25), "noisy"),
    "grey frame": (lambda y: np.full_like(y, 126), "blank"),
}


@pytest.mark.parametrize("name", DEGRADATIONS)
def test_degraded_scene_fails_for_the_right_reason(luma: np.ndarray, name: str) -> None:
    degrade, reason = DEGRADATIONS[name]
    metrics = measure(degrade(luma))
    reasons = judge(metrics, Thresholds())
    assert reason in reasons, metrics
    assert metrics.score < 0.5


def _knowing(luma: np.ndarray) -> CameraQuality:
    """A camera whose norm is the sharp scene (warm-up cut to one frame)."""
    camera = CameraQuality(Thresholds(baseline_warmup_s=0.0))
    assert camera.assess(_noisy(luma, 1.5, seed=9), 0.0).reasons == ()
    return camera


@pytest.mark.parametrize("angle", [0, 45, 90, 135, 30])
def test_motion_blur_in_any_direction_is_blurred(luma: np.ndarray, angle: float) -> None:
    """Blur along one direction leaves the others sharp: sharpness takes the weakest."""
    blurred = cv2.filter2D(luma, -1, motion_kernel(15, angle))
    assert "blurred" in _knowing(luma).assess(_noisy(blurred, 1.5), 0.1).reasons


def test_defocus_is_blurred_against_the_norm(luma: np.ndarray) -> None:
    soft = cv2.GaussianBlur(luma, (0, 0), 3)
    assert "blurred" in _knowing(luma).assess(_noisy(soft, 1.5), 0.1).reasons


def test_sharpness_falls_with_blur(luma: np.ndarray) -> None:
    values = [measure(cv2.GaussianBlur(luma, (0, 0), s) if s else luma).sharpness for s in (0, 1, 2, 3)]
    assert values == sorted(values, reverse=True)
    assert values[0] > 3 * values[3]


def test_sharpness_does_not_depend_on_exposure_or_sensor_noise(luma: np.ndarray) -> None:
    """A ratio of octaves, corrected for noise: dim and noisy is not soft."""
    day = measure(luma).sharpness
    assert measure(_scaled(luma, 0.4)).sharpness == pytest.approx(day, rel=0.25)
    assert measure(_noisy(luma, 4)).sharpness == pytest.approx(day, rel=0.25)
    soft = cv2.GaussianBlur(luma, (0, 0), 3)
    limit = Thresholds().min_sharpness_ratio * day
    assert measure(_noisy(soft, 6)).sharpness < limit  # noise does not hide blur


def test_brightness_contrast_and_clipping_match_full_resolution(luma: np.ndarray) -> None:
    """From a point sample of the whole frame (16,000 points): within 2 grey levels."""
    metrics = measure(luma)
    assert metrics.brightness == pytest.approx(float(luma.mean()), abs=2.0)
    assert metrics.contrast == pytest.approx(float(luma.std() / luma.mean()), rel=0.1)
    assert metrics.clipped_dark == pytest.approx(float((luma <= 16).mean()), abs=0.01)
    assert metrics.clipped_bright == pytest.approx(float((luma >= 235).mean()), abs=0.01)
    burnt = _scaled(luma, 3.0)
    assert measure(burnt).clipped_bright == pytest.approx(float((burnt >= 235).mean()), abs=0.02)


def test_uniformity_ignores_noise_and_smooth_shading() -> None:
    """A covered lens: dark, a gradient and vignette, sensor noise. Still uniform."""
    y, x = np.mgrid[0:720, 0:1280].astype(np.float32)
    shading = 30 + 12 * x / 1280 - 8 * ((x / 1280 - 0.5) ** 2 + (y / 720 - 0.5) ** 2)
    covered = _noisy(shading, 4)
    assert measure(covered).uniformity > 0.7
    assert "blank" in judge(measure(covered), Thresholds())
    assert measure(np.full((720, 1280), 16, np.uint8)).uniformity == 1.0


# --- the noise estimator ---------------------------------------------------------------------------


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


@pytest.mark.parametrize("share", [0.05, 0.1])
def test_salt_and_pepper_is_noisy(luma: np.ndarray, share: float) -> None:
    """Impulses leave the median-based sigma almost unmoved; their count makes up for it."""
    hit = np.random.default_rng(3).random(luma.shape)
    salted = luma.copy()
    salted[hit < share / 2] = 0
    salted[(hit >= share / 2) & (hit < share)] = 255
    assert "noisy" in judge(measure(salted), Thresholds())


# --- inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(9, 17), (17, 9), (1, 1), (2, 3), (3, 3), (5, 2000), (2000, 5), (721, 1281), (1081, 1921), (2160, 3840)],
)
def test_odd_tiny_and_large_sizes(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    luma = rng.integers(0, 256, shape, dtype=np.uint8)
    metrics = CameraQuality(Thresholds()).assess(luma, 0.0).metrics
    assert all(math.isfinite(v) and v >= 0 for v in metrics.as_dict().values()), metrics
    assert 0.0 <= metrics.score <= 1.0 and 0.0 <= metrics.uniformity <= 1.0
    assert metrics.brightness == pytest.approx(float(luma.mean()), abs=2.0)
    assert set(judge(metrics, Thresholds())) <= set(REASONS)


def test_input_is_only_read(luma: np.ndarray) -> None:
    frozen = luma.copy()
    frozen.flags.writeable = False  # as a shared-memory view handed out read-only would be
    before = frozen.tobytes()
    CameraQuality(Thresholds()).assess(frozen, 0.0)
    assert frozen.tobytes() == before


def test_padded_view_gives_the_same_metrics(luma: np.ndarray) -> None:
    h, w = luma.shape
    padded = np.zeros((h, w + 64), np.uint8)
    padded[:, :w] = luma
    assert measure(padded[:, :w]) == measure(luma)


@pytest.mark.parametrize(
    "bad", [np.zeros((0, 5), np.uint8), np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32), [[1]]]
)
def test_rejects_non_luma_input(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        measure(bad)
    with pytest.raises(ValueError):
        CameraQuality(Thresholds()).assess(bad, 0.0)


# --- thresholds, verdicts, score -----------------------------------------------------------------


def test_judge_reasons_and_order() -> None:
    t = Thresholds()
    assert judge(_metrics(), t) == ()
    worst = _metrics(sharpness=0, brightness=5, contrast=0, noise=50, frozen_s=10, uniformity=1)
    assert judge(worst, t) == ("blurred", "too_dark", "low_contrast", "noisy", "frozen", "blank")
    assert judge(_metrics(brightness=250), t) == ("too_bright",)
    assert judge(_metrics(clipped_bright=0.5), t) == ("too_bright",)
    assert judge(_metrics(clipped_dark=0.9), t) == ("too_dark",)
    assert REASONS == ("blurred", "too_dark", "too_bright", "low_contrast", "noisy", "frozen", "blank")


def test_limits_are_inclusive() -> None:
    t = Thresholds()
    edge = _metrics(
        sharpness=t.min_sharpness,
        brightness=t.min_brightness,
        clipped_dark=t.max_clipped_dark,
        clipped_bright=t.max_clipped_bright,
        contrast=t.min_contrast,
        noise=t.max_noise,
        uniformity=t.max_uniformity,
        frozen_s=t.frozen_after_s - 1e-9,
    )
    assert judge(edge, t) == ()
    assert judge(replace_frozen(edge, t.frozen_after_s), t) == ("frozen",)


def replace_frozen(m: QualityMetrics, frozen_s: float) -> QualityMetrics:
    return QualityMetrics(**{**m.as_dict(), "frozen_s": frozen_s})


def test_score_is_one_when_clean_and_at_most_half_when_failing() -> None:
    t = Thresholds()
    assert score(_metrics(), t) == 1.0
    for field, bad in [
        ("sharpness", 10),
        ("brightness", 10),
        ("noise", 20),
        ("uniformity", 0.9),
        ("frozen_s", 3),
    ]:
        m = _metrics(**{field: bad})
        assert judge(m, t) and 0.0 <= score(m, t) < 0.5, field
    assert score(_metrics(sharpness=t.min_sharpness), t) == pytest.approx(0.5)
    assert 0.5 < score(_metrics(sharpness=1.5 * t.min_sharpness), t) < 1.0  # mild weakness: a little lower
    assert [reason for reason, _ in aspects(_metrics(), t)] == list(REASONS)


def test_min_score_fails_a_frame_for_its_weakest_aspect() -> None:
    mild = _metrics(noise=9.0, sharpness=40.0)
    assert judge(replace_score(mild), Thresholds()) == ()
    strict = Thresholds(min_score=0.95)
    assert judge(replace_score(mild, strict), strict) == ("noisy",)


def replace_score(m: QualityMetrics, t: Thresholds | None = None) -> QualityMetrics:
    return QualityMetrics(**{**m.as_dict(), "score": score(m, t or Thresholds())})


def test_as_dict() -> None:
    d = _metrics().as_dict()
    assert list(d) == FIELDS
    assert all(type(v) is float for v in measure(np.full((8, 8), 99, np.uint8)).as_dict().values())


def test_thresholds_model() -> None:
    assert Thresholds(max_noise=8).max_noise == 8
    for field in Thresholds.model_fields.values():
        assert field.description
    assert Thresholds().min_score == 0.0  # the score alone rejects nothing by default
    with pytest.raises(ValidationError):
        Thresholds(max_nosie=8)  # typo: extra keys are forbidden
    for bad in (
        {"min_brightness": -1},
        {"max_brightness": 300},
        {"frozen_after_s": 0},
        {"max_uniformity": 2},
    ):
        with pytest.raises(ValidationError):
            Thresholds(**bad)
    with pytest.raises(ValidationError, match="min_brightness"):
        Thresholds(min_brightness=200, max_brightness=100)
    t = Thresholds()
    with pytest.raises(ValidationError):
        t.max_noise = 3  # frozen


# --- per camera: frozen ------------------------------------------------------------------------------


def _feed(
    camera: CameraQuality, frames: list[np.ndarray], fps: float = 10.0, t0: float = 0.0
) -> list[Assessment]:
    return [camera.assess(frame, t0 + i / fps) for i, frame in enumerate(frames)]


@pytest.fixture(scope="module")
def still() -> np.ndarray:
    return _noisy(_luma(1280, 720), 1.5)


def test_repeated_frame_is_frozen_after_frozen_after_s(still: np.ndarray) -> None:
    out = _feed(CameraQuality(Thresholds()), [still] * 31)
    assert [a.metrics.frozen_s for a in out[:3]] == pytest.approx([0.0, 0.1, 0.2])
    assert all("frozen" not in a.reasons for a in out[:20])  # t < 2 s
    assert all("frozen" in a.reasons for a in out[20:])
    assert out[-1].metrics.change == 0.0


def test_live_static_scene_with_sensor_noise_is_never_frozen(still: np.ndarray) -> None:
    base = _scaled(_luma(1280, 720), 0.3)  # an empty road at night
    frames = [_noisy(base, 1.0, seed=i) for i in range(40)]
    out = _feed(CameraQuality(Thresholds()), frames)
    assert all("frozen" not in a.reasons for a in out)
    assert min(a.metrics.change for a in out[1:]) > 2 * Thresholds().max_frozen_change


def test_an_isolated_change_does_not_end_a_freeze(still: np.ndarray) -> None:
    """A stuck picture re-encoded at each key frame: one changed frame a second."""
    versions = [still, _noisy(_luma(1280, 720), 1.5, seed=9)]
    frames = [versions[(i // 10) % 2] for i in range(31)]
    out = _feed(CameraQuality(Thresholds()), frames)
    assert "frozen" in out[-1].reasons and out[-1].metrics.frozen_s == pytest.approx(3.0)


@pytest.mark.parametrize("repeats", [2, 4])
def test_a_live_source_repeating_each_picture_is_not_frozen(repeats: int) -> None:
    """Frame-rate conversion by duplication: each picture delivered `repeats` times."""
    pictures = [_noisy(_luma(1280, 720), 1.5, seed=i) for i in range(40 // repeats)]
    frames = [p for p in pictures for _ in range(repeats)]
    out = _feed(CameraQuality(Thresholds()), frames)
    assert all("frozen" not in a.reasons for a in out)


def test_resolution_change_and_time_going_back_restart(still: np.ndarray) -> None:
    camera = CameraQuality(Thresholds())
    _feed(camera, [still] * 30)
    big = cv2.resize(still, (1920, 1080))
    after = camera.assess(big, 3.0)
    assert after.metrics.frozen_s == 0.0 and after.metrics.change == 0.0 and "frozen" not in after.reasons
    assert camera.assess(big, 3.1).metrics.frozen_s == pytest.approx(0.1)
    assert camera.assess(big, 0.5).metrics.frozen_s == 0.0  # a restarted stream
    assert camera.assess(np.zeros((1, 1), np.uint8), 0.6).metrics.frozen_s == 0.0


def test_bad_time_raises_and_leaves_state_alone(still: np.ndarray) -> None:
    camera = CameraQuality(Thresholds())
    _feed(camera, [still] * 25)
    with pytest.raises(ValueError):
        camera.assess(still, math.nan)
    assert "frozen" in camera.assess(still, 2.5).reasons


def test_thresholds_can_be_replaced(still: np.ndarray) -> None:
    camera = CameraQuality(Thresholds())
    _feed(camera, [still] * 15)
    camera.thresholds = Thresholds(frozen_after_s=1.0)
    assert "frozen" in camera.assess(still, 1.5).reasons


# --- the benchmark ---------------------------------------------------------------------------------


def test_benchmark_quick_run_lists_both_implementations() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_validation.py"), "--quick"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for row in ("CameraQuality.assess 1080p", "measure() 1080p luma", "baseline 1080p", "speed-up"):
        assert any(line.startswith(row) for line in lines), (row, proc.stdout)
    header = next(line for line in lines if line.startswith("class ") and "strengths" in line)
    assert "zstream" in header and "baseline" in header, proc.stdout
    assert any(line.startswith("clean (rejected)") for line in lines), proc.stdout
