"""ONVIF cameras: the real client asks a stand-in device for the stream URI, then RTSP is decoded
frame for frame against a reference decode, as for rtsp:// cameras."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import topology_text, wait_until
from tests.media import decode_i420_frames, make_h264_clip
from tests.onvif_device import onvif_device
from tests.rtsp import rtsp_server
from tests.test_pipeline import assert_clean_exit, read_frames
from tests.test_sources import take
from zstream.errors import SourceError, SourceRejected
from zstream.sources.onvif import OnvifSource, parse_onvif_url, with_credentials

USER = "admin"
PASSWORD = "s3cr:t@/pw"  # needs percent-encoding in a URL, and FFmpeg must decode it back
QUOTED = "s3cr%3At%40%2Fpw"
DUMMY_RTSP = "rtsp://127.0.0.1:9/never-opened"


def onvif_url(address: object, profile: str = "", password: str = QUOTED) -> str:
    return f"onvif://{USER}:{password}@{address}/{profile}"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two clips that cannot be mistaken for one another (other size, other noise)."""
    media = tmp_path_factory.mktemp("media")
    main = make_h264_clip(media / "main.mp4", width=320, height=240, fps=25, frames=12, gop=6)
    sub = make_h264_clip(media / "sub.mp4", width=160, height=120, fps=25, frames=12, gop=6, seed=99)
    return main, sub


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pictures(source: OnvifSource, count: int) -> list[bytes]:
    return [data for _, data in take(source, count)]


def test_onvif_camera_streams_the_rtsp_uri_the_device_gives_with_the_url_credentials(
    clips: tuple[Path, Path],
) -> None:
    main, _ = clips
    reference = [r.tobytes() for r in decode_i420_frames(main)]
    # The RTSP server wants the same credentials; the device's URI carries none.
    with (
        rtsp_server(file=main, user=USER, password=PASSWORD) as rtsp,
        onvif_device({"main": rtsp}, USER, PASSWORD) as device,
    ):
        source = OnvifSource(onvif_url(device), open_timeout_s=10, read_timeout_s=10)
        frames = pictures(source, 12)
        assert source.url == rtsp.replace("rtsp://", f"rtsp://{USER}:{QUOTED}@")
    assert frames == reference
    assert device.calls.count("GetProfiles") == 1 and device.calls.count("GetStreamUri") == 1


def test_profile_in_the_path_picks_that_profile_by_name_or_token(clips: tuple[Path, Path]) -> None:
    main, sub = clips
    main_ref = [r.tobytes() for r in decode_i420_frames(main)[:4]]
    sub_ref = [r.tobytes() for r in decode_i420_frames(sub)[:4]]
    with (
        rtsp_server(file=main) as main_rtsp,
        rtsp_server(file=sub) as sub_rtsp,
        onvif_device(
            {"Profile_1": main_rtsp, "Profile_2": sub_rtsp},
            USER,
            PASSWORD,
            names={"Profile_1": "mainStream", "Profile_2": "subStream"},
        ) as device,
    ):
        by_name = pictures(OnvifSource(onvif_url(device, "subStream")), 4)
        by_token = pictures(OnvifSource(onvif_url(device, "Profile_2")), 4)
        first = pictures(OnvifSource(onvif_url(device)), 4)
    assert by_name == sub_ref
    assert by_token == sub_ref
    assert first == main_ref


@pytest.mark.parametrize("refusal", ["fault", "http401"])
def test_wrong_password_is_refused_with_the_password_masked(refusal: str) -> None:
    with onvif_device({"main": DUMMY_RTSP}, USER, PASSWORD, auth_failure=refusal) as device:
        source = OnvifSource(onvif_url(device, password="wr0ng-pw"), open_timeout_s=5)
        with pytest.raises(SourceRejected) as caught:
            source.open()
    message = str(caught.value)
    assert "authentication refused" in message
    assert f"{USER}:****@{device}" in message
    assert "wr0ng-pw" not in message
    assert "GetProfiles" in device.calls and "GetStreamUri" not in device.calls


def test_unknown_profile_is_refused_listing_the_profiles() -> None:
    with (
        onvif_device({"main": DUMMY_RTSP, "sub": DUMMY_RTSP}, USER, PASSWORD) as device,
        pytest.raises(SourceRejected, match="no profile 'third'; its profiles are main, sub"),
    ):
        OnvifSource(onvif_url(device, "third"), open_timeout_s=5).open()
    assert "GetStreamUri" not in device.calls


@pytest.mark.parametrize(("media", "expected"), [(False, "no media service"), (True, "no media profiles")])
def test_a_device_without_video_is_refused(media: bool, expected: str) -> None:
    with (
        onvif_device({}, USER, PASSWORD, media=media) as device,
        pytest.raises(SourceRejected, match=expected),
    ):
        OnvifSource(onvif_url(device), open_timeout_s=5).open()


@pytest.mark.parametrize("given", ["http://127.0.0.1/snapshot.jpg", "rtsp://127.0.0.1:99999/x", ""])
def test_a_profile_without_a_usable_rtsp_uri_is_refused(given: str) -> None:
    with (
        onvif_device({"main": given}, USER, PASSWORD) as device,
        pytest.raises(SourceRejected, match="profile 'main' gave no usable RTSP URI"),
    ):
        OnvifSource(onvif_url(device), open_timeout_s=5).open()


def test_nobody_listening_is_a_prompt_source_error_not_a_rejection(closed_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        OnvifSource(onvif_url(f"127.0.0.1:{closed_port}"), open_timeout_s=5).open()
    assert time.monotonic() - started < 3
    assert not isinstance(caught.value, SourceRejected)  # worth retrying soon
    assert f"onvif://{USER}:****@127.0.0.1:{closed_port}/" in str(caught.value)
    assert PASSWORD not in str(caught.value) and QUOTED not in str(caught.value)


def test_a_device_that_never_answers_times_out_after_open_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"did not answer within 1\.5 s") as caught:
            OnvifSource(onvif_url(address), open_timeout_s=1.5).open()
        elapsed = time.monotonic() - started
    assert not isinstance(caught.value, SourceRejected)
    assert 1.4 < elapsed < 4


def test_the_resolved_uri_is_logged_once_per_open_with_the_password_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with onvif_device({"main": "rtsp://127.0.0.1:9/cam", "sub": DUMMY_RTSP}, USER, PASSWORD) as device:
        source = OnvifSource(onvif_url(device), open_timeout_s=5)
        with caplog.at_level(logging.INFO, logger="zstream.sources.onvif"):
            for _ in range(2):  # the RTSP URI is dead: each open resolves, then fails on RTSP
                with pytest.raises(SourceError, match=r"rtsp://admin:\*\*\*\*@127\.0\.0\.1:9/cam"):
                    source.open()
    resolved = [r.getMessage() for r in caplog.records if "rtsp://" in r.getMessage()]
    assert (
        resolved
        == [f"onvif://{USER}:****@{device}/: profile 'main' streams at rtsp://admin:****@127.0.0.1:9/cam"] * 2
    )
    assert PASSWORD not in caplog.text and QUOTED not in caplog.text
    assert device.calls.count("GetStreamUri") == 2


def test_credentials_are_percent_encoded_into_the_stream_uri_unless_it_has_its_own() -> None:
    target = parse_onvif_url(f"onvif://{USER}:{QUOTED}@cam.local:8080/sub")
    assert (target.host, target.port, target.user, target.password, target.profile) == (
        "cam.local",
        8080,
        USER,
        PASSWORD,
        "sub",
    )
    assert parse_onvif_url("onvif://cam.local").port == 80
    assert (
        with_credentials("rtsp://10.0.0.5:554/s1", USER, PASSWORD)
        == f"rtsp://{USER}:{QUOTED}@10.0.0.5:554/s1"
    )
    assert with_credentials("rtsp://other:pw@10.0.0.5/s1", USER, PASSWORD) == "rtsp://other:pw@10.0.0.5/s1"
    assert with_credentials("rtsp://10.0.0.5/s1", None, None) == "rtsp://10.0.0.5/s1"
    with pytest.raises(SourceRejected, match="not an onvif://"):
        parse_onvif_url("rtsp://cam.local/x")


def test_an_onvif_camera_runs_in_the_pipeline_with_its_resolved_uri_masked(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, clips: tuple[Path, Path]
) -> None:
    main, _ = clips
    reference = [r.tobytes() for r in decode_i420_frames(main)]
    with (
        rtsp_server(file=main, user=USER, password=PASSWORD) as rtsp,
        onvif_device({"main": rtsp}, USER, PASSWORD) as device,
    ):
        cameras = [{"id": "junction", "url": onvif_url(device, "main")}]
        running = pipeline(topology_text(run_dir, streams, cameras))
        wait_until(lambda: len(read_frames(redis_client, streams[0])) >= 12, 60, message="12 frames")
        assert_clean_exit(running)
    frames = read_frames(redis_client, streams[0])
    assert [meta.seq for meta, _ in frames[:12]] == list(range(12))
    assert [data for _, data in frames[:12]] == reference
    assert f"streams at rtsp://{USER}:****@{rtsp.removeprefix('rtsp://')}" in running.log
    assert "s3cr" not in running.log and QUOTED not in running.log
