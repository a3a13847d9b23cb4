"""The synthetic traffic source: URL parsing, deterministic rendering, real-time pacing."""

from __future__ import annotations

import threading
import time
import zlib

import cv2
import numpy as np
import pytest

from zstream.core.planes import chroma_size
from zstream.errors import SourceError
from zstream.sources.base import AdmitAll, DecodedFrame
from zstream.sources.synthetic import (
    SyntheticSource,
    SyntheticSpec,
    TrafficScene,
    expected_frame,
    parse_synthetic_url,
)

W, H = 320, 180  # small frames keep the suite fast; the renderer is size-independent


@pytest.fixture(scope="module")
def scene() -> TrafficScene:
    return TrafficScene(W, H, seed=7, vehicles=6, label="cam-01")


def outside_box(frame: np.ndarray, box: tuple[int, int, int, int], height: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    y = frame[:height].copy()
    y[y0:y1, x0:x1] = 0
    return y


# --- URL parsing -------------------------------------------------------------------------------


def test_defaults_and_seed_from_camera_id() -> None:
    spec = parse_synthetic_url("synthetic://traffic", "cam-01")
    assert spec == SyntheticSpec(1280, 720, 10.0, 6, zlib.crc32(b"cam-01"), 0, "cam-01")
    assert parse_synthetic_url("synthetic://traffic", "cam-02").seed != spec.seed


def test_all_keys() -> None:
    url = "synthetic://traffic?size=640x360&fps=12.5&vehicles=0&seed=7&count=30"
    assert parse_synthetic_url(url, "c") == SyntheticSpec(640, 360, 12.5, 0, 7, 30, "c")


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("colour=red", "'colour'"),
        ("size=1281x720", "size='1281x720'"),
        ("size=1280x719", "size='1280x719'"),
        ("size=62x62", "size='62x62'"),
        ("size=7682x720", "size='7682x720'"),
        ("size=big", "size='big'"),
        ("fps=0", "fps='0'"),
        ("fps=-5", "fps='-5'"),
        ("fps=241", "fps='241'"),
        ("fps=nan", "fps='nan'"),
        ("fps=fast", "fps='fast'"),
        ("vehicles=25", "vehicles='25'"),
        ("seed=-1", "seed='-1'"),
        ("count=1.5", "count='1.5'"),
        ("fps=10&fps=20", "'fps' given twice"),
        ("fps", "'fps' has no value"),
    ],
)
def test_bad_query_names_key_and_value(query: str, named: str) -> None:
    with pytest.raises(SourceError, match="synthetic://traffic") as info:
        parse_synthetic_url(f"synthetic://traffic?{query}", "cam-01")
    assert named in str(info.value)


@pytest.mark.parametrize("url", ["synthetic://highway", "rtsp://traffic", "synthetic://traffic/x"])
def test_bad_scene_or_scheme(url: str) -> None:
    with pytest.raises(SourceError):
        parse_synthetic_url(url, "cam-01")


def test_source_rejects_bad_url_at_construction() -> None:
    with pytest.raises(SourceError, match="fps='0'"):
        SyntheticSource("synthetic://traffic?fps=0", "cam-01")


# --- rendering ---------------------------------------------------------------------------------


def test_frame_layout(scene: TrafficScene) -> None:
    frame = scene.render(0)
    assert frame.shape == (H * 3 // 2, W) and frame.dtype == np.uint8 and frame.flags.c_contiguous
    bgr = cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420).astype(int)
    verge = bgr[H - 5 :, W // 2 :].reshape(-1, 3).mean(axis=0)  # grass along the bottom edge
    assert verge[1] > verge[0] + 20 and verge[1] > verge[2] + 20
    road = bgr[scene.road_rows].reshape(-1, 3).mean(axis=0)
    assert np.ptp(road) < 25  # asphalt is grey: chroma planes are where they belong


@pytest.mark.parametrize("size", [(322, 182), (64, 64), (7680, 64), (64, 7680)])
def test_planes_of_any_valid_size(size: tuple[int, int]) -> None:
    """Heights with h % 4 == 2 leave the chroma planes misaligned with rows of the array."""
    w, h = size
    url = f"synthetic://traffic?size={w}x{h}&vehicles=24&fps=240&count=1"
    frame = expected_frame(url, "cam-01", 0)
    assert frame.shape == (h * 3 // 2, w)
    src = SyntheticSource(url, "cam-01")
    src.open()
    (decoded,) = src.frames(threading.Event(), AdmitAll())
    cw, ch = chroma_size(w, h)
    assert decoded.u.shape == decoded.v.shape == (ch, cw)
    assert np.array_equal(decoded.v.reshape(-1), frame.reshape(-1)[w * h + cw * ch :])
    assert cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420).shape == (h, w, 3)


def test_render_is_deterministic(scene: TrafficScene) -> None:
    twin = TrafficScene(W, H, seed=7, vehicles=6, label="cam-01")
    for index in (0, 1, 99, 123_456):
        assert scene.render(index).tobytes() == twin.render(index).tobytes()
        assert scene.render(index).tobytes() == scene.render(index).tobytes()


def test_seed_changes_the_picture(scene: TrafficScene) -> None:
    other = TrafficScene(W, H, seed=8, vehicles=6, label="cam-01")
    assert not np.array_equal(scene.render(0), other.render(0))


def test_vehicles_move_and_nothing_else_does(scene: TrafficScene) -> None:
    a, b = (outside_box(scene.render(i), scene.label_box, H) for i in (10, 11))
    changed = np.argwhere(a != b)
    assert len(changed) > 50
    rows = scene.road_rows
    assert changed[:, 0].min() >= rows.start and changed[:, 0].max() < rows.stop


def test_empty_road_is_static_but_counter_changes() -> None:
    empty = TrafficScene(W, H, seed=7, vehicles=0, label="cam-01")
    a, b = empty.render(1), empty.render(2)
    assert np.array_equal(outside_box(a, empty.label_box, H), outside_box(b, empty.label_box, H))
    x0, y0, x1, y1 = empty.label_box
    assert not np.array_equal(a[y0:y1, x0:x1], b[y0:y1, x0:x1])


def test_counter_is_legible(scene: TrafficScene) -> None:
    x0, y0, x1, y1 = scene.label_box
    plate = scene.render(123)[y0:y1, x0:x1]
    assert plate.min() <= 20 and plate.max() >= 200  # light text on a dark plate
    assert (plate > 128).mean() > 0.05


def test_vehicles_stay_on_screen_over_time(scene: TrafficScene) -> None:
    """Vehicles wrap around: hours into the stream the road still differs from an empty one."""
    empty = TrafficScene(W, H, seed=7, vehicles=0, label="cam-01")
    rows = scene.road_rows
    for index in (0, 500, 36_000, 360_000):
        diff = scene.render(index)[rows] != empty.render(index)[rows]
        assert diff.mean() > 0.02, index


def test_scene_has_texture(scene: TrafficScene) -> None:
    y = scene.render(0)[:H]
    verge = y[H - H // 8 :].astype(float)
    assert verge.std() > 5  # seeded texture, not a flat fill
    assert np.abs(np.diff(verge, axis=1)).mean() > 1.5


def test_bad_scene_size() -> None:
    with pytest.raises(ValueError):
        TrafficScene(321, 180, seed=1, vehicles=1)


# --- the source --------------------------------------------------------------------------------


def source(query: str, camera: str = "cam-01") -> SyntheticSource:
    src = SyntheticSource(f"synthetic://traffic?size={W}x{H}&{query}", camera)
    src.open()
    return src


def test_frames_match_expected_frame() -> None:
    url = f"synthetic://traffic?size={W}x{H}&fps=200&count=4&seed=3"
    src = SyntheticSource(url, "cam-07")
    src.open()
    frames = list(src.frames(threading.Event(), AdmitAll()))
    src.close()
    assert len(frames) == 4
    cw, ch = chroma_size(W, H)
    for index, frame in enumerate(frames):
        assert isinstance(frame, DecodedFrame)
        assert (frame.width, frame.height, frame.pts) == (W, H, index / 200)
        assert frame.y.shape == (H, W) and frame.u.shape == frame.v.shape == (ch, cw)
        delivered = frame.y.tobytes() + frame.u.tobytes() + frame.v.tobytes()
        assert delivered == expected_frame(url, "cam-07", index).tobytes()


def test_pacing_follows_fps() -> None:
    n, fps = 20, 40.0
    src = source(f"fps={fps}&count={n}")
    start = time.monotonic()
    assert sum(1 for _ in src.frames(threading.Event(), AdmitAll())) == n
    elapsed = time.monotonic() - start
    ideal = (n - 1) / fps  # the first frame is due at once
    assert 0.8 * ideal <= elapsed <= 4 * ideal  # loose above: CI machines are noisy


def test_stop_ends_a_long_wait_promptly() -> None:
    stop = threading.Event()
    frames = source("fps=0.5").frames(stop, AdmitAll())
    next(frames)
    threading.Timer(0.1, stop.set).start()
    start = time.monotonic()
    assert next(frames, None) is None
    assert time.monotonic() - start < 0.5  # the next frame was due 2 s later


def test_stop_before_first_frame() -> None:
    stop = threading.Event()
    stop.set()
    assert list(source("fps=10").frames(stop, AdmitAll())) == []


def test_resynchronises_after_a_stall_instead_of_bursting() -> None:
    fps = 20.0
    frames = source(f"fps={fps}").frames(threading.Event(), AdmitAll())
    next(frames)
    time.sleep(1.3)  # the consumer stalls for 26 frame periods
    next(frames)  # late frame: delivered at once, and the schedule restarts from it
    start = time.monotonic()
    for _ in range(4):
        next(frames)
    assert time.monotonic() - start >= 0.8 * 4 / fps


def test_frames_before_open_and_double_close() -> None:
    src = SyntheticSource("synthetic://traffic", "cam-01")
    src.close()  # before open: harmless
    with pytest.raises(SourceError, match="before open"):
        next(src.frames(threading.Event(), AdmitAll()))
    src.open()
    src.close()
    src.close()
