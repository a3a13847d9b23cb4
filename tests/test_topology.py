"""The topology loader: strict keys, every error at once with its key path, clean CLI errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zstream.errors import TopologyError
from zstream.topology import key_path, load_topology, parse_topology

REPO = Path(__file__).resolve().parent.parent
GOOD_CAMERA = 'id = "cam-1"\nurl = "synthetic://traffic?size=640x360&fps=10"'


def problems_of(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "topology.toml"
    path.write_text(text)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    return caught.value.problems


def test_default_topology_is_valid() -> None:
    topology = load_topology(REPO / "topology.toml")
    assert len(topology.cameras) >= 2
    assert all(camera.scheme == "synthetic" for camera in topology.cameras)
    assert topology.run_dir.startswith("/")


def test_every_error_is_reported_at_once_with_its_key_path(tmp_path: Path) -> None:
    problems = problems_of(
        f"""
bogus = 1
[capture]
workers = 0
[batcher]
encoding = "png"
output_width = 641
[[cameras]]
{GOOD_CAMERA}
[[cameras]]
id = "cam-2"
url = "synthetic://traffic"
fps = -1
colour = "red"
output_fps = -5
[[cameras]]
id = "cam-1"
url = "synthetic://traffic"
""",
        tmp_path,
    )
    text = "\n".join(problems)
    assert "bogus: unknown key" in text
    assert any(p.startswith("capture.workers:") and "got 0" in p for p in problems)
    assert any(p.startswith("batcher.encoding:") and "png" in p for p in problems)
    assert any(p.startswith("cameras[1].fps:") and "got -1" in p for p in problems)
    assert "cameras[1].colour: unknown key" in text
    assert any(p.startswith("cameras[2].id: duplicate id 'cam-1'") for p in problems)
    assert any(p.startswith("batcher.output_width:") and "must be even" in p for p in problems)
    assert any(p.startswith("cameras[1].output_fps:") and "got -5" in p for p in problems)
    assert len(problems) == 8


def test_camera_url_problems_name_the_camera_and_mask_passwords(tmp_path: Path) -> None:
    problems = problems_of(
        """
[[cameras]]
id = "a"
url = "gopher://user:hunter2@cam.example/stream"
[[cameras]]
id = "b"
url = "/no/such/file.mp4"
[[cameras]]
id = "c"
url = "synthetic://traffic?size=641x360"
[[cameras]]
id = "d"
url = "rtsp:///stream"
[[cameras]]
id = "e"
url = "https:///feed.m3u8"
[[cameras]]
id = "f"
url = "https://user:pw@vms.example/feed.m3u8"
""",
        tmp_path,
    )
    assert len(problems) == 5
    assert problems[4].startswith("cameras[4].url: no host")
    assert problems[0].startswith("cameras[0].url: unsupported scheme 'gopher'")
    assert "hunter2" not in problems[0] and "****" in problems[0]
    assert problems[1] == "cameras[1].url: file not found: /no/such/file.mp4"
    assert problems[2].startswith("cameras[2].url:") and "size" in problems[2]
    assert problems[3].startswith("cameras[3].url: no host")


def test_sizes_thresholds_and_redis_url_are_checked(tmp_path: Path) -> None:
    problems = problems_of(
        f"""
[redis]
url = "http://:secret@127.0.0.1:6379"
[[cameras]]
{GOOD_CAMERA}
resize = "640by360"
thresholds = {{ min_sharpnes = 3.0 }}
[[cameras]]
id = "cam-2"
url = "synthetic://traffic"
max_size = "8x8"
""",
        tmp_path,
    )
    text = "\n".join(problems)
    assert "redis.url: must start with redis://" in text and "secret" not in text
    assert "cameras[0].resize: expected WIDTHxHEIGHT" in text
    assert "cameras[0].thresholds: unknown threshold(s) ['min_sharpnes']" in text
    assert "cameras[1].max_size: must be between 16x16 and 7680x4320, got 8x8" in text


def test_toml_syntax_error_is_one_clear_problem(tmp_path: Path) -> None:
    problems = problems_of("[[cameras]\nid = 1", tmp_path)
    assert len(problems) == 1 and "not valid TOML" in problems[0]


def test_relative_paths_resolve_against_the_topology_file(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"not really a video, but it exists")
    topology = parse_topology(
        {"run_dir": "run", "cameras": [{"id": "f", "url": "clip.mp4"}]}, base_dir=tmp_path
    )
    assert topology.run_dir == str(tmp_path / "run")
    assert topology.cameras[0].url == str(tmp_path / "clip.mp4")


def test_per_camera_settings_override_stage_defaults() -> None:
    topology = parse_topology(
        {
            "capture": {"ring_slots": 6, "drop_policy": "drop_newest"},
            "validation": {"thresholds": {"min_brightness": 20.0}},
            "cameras": [
                {"id": "a", "url": "synthetic://traffic?size=640x360"},
                {
                    "id": "b",
                    "url": "synthetic://traffic",
                    "ring_slots": 3,
                    "drop_policy": "drop_oldest",
                    "resize": "320x180",
                    "thresholds": {"min_brightness": 5.0},
                    "keyframes_only": True,
                },
            ],
        },
        base_dir=Path("/"),
    )
    a, b = topology.cameras
    assert topology.ring_slots_for(a) == 6 and topology.ring_slots_for(b) == 3
    assert topology.drop_policy_for(a) == "drop_newest" and topology.drop_policy_for(b) == "drop_oldest"
    assert topology.thresholds_for(a).min_brightness == 20.0
    assert topology.thresholds_for(b).min_brightness == 5.0
    assert topology.frame_capacity(a) == (640, 360) and topology.frame_capacity(b) == (320, 180)
    assert (a.keyframes_only, b.keyframes_only) == (False, True)


def test_long_run_dir_is_refused_because_of_socket_path_limits() -> None:
    with pytest.raises(TopologyError) as caught:
        parse_topology(
            {"run_dir": "/tmp/" + "x" * 100, "cameras": [{"id": "a", "url": "synthetic://traffic"}]},
            base_dir=Path("/"),
        )
    assert caught.value.problems[0].startswith("run_dir:") and "too long" in caught.value.problems[0]


def test_key_path_formatting() -> None:
    assert key_path(("cameras", 3, "fps")) == "cameras[3].fps"
    assert key_path(("batcher", "encoding")) == "batcher.encoding"
    assert key_path(()) == "(top level)"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zstream.cli", *args], capture_output=True, text=True, timeout=60, cwd=REPO
    )


def test_cli_validate_prints_ok_or_every_error_and_exits_2(tmp_path: Path) -> None:
    ok = run_cli("validate", "topology.toml")
    assert ok.returncode == 0 and ok.stdout.startswith("OK: ")

    bad = tmp_path / "bad.toml"
    bad.write_text("[[cameras]]\nid = 'x'\nurl = 'synthetic://traffic'\nfps = -1\n[capture]\nworkers = 0\n")
    result = run_cli("validate", str(bad))
    assert result.returncode == 2
    assert "2 problems" in result.stderr
    assert "cameras[0].fps:" in result.stderr and "capture.workers:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_up_refuses_an_invalid_topology_without_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f"run_dir = '{tmp_path}/run'\n[[cameras]]\nid = 'x'\nurl = 'nope://x'\n")
    result = run_cli("up", str(bad))
    assert result.returncode == 2
    assert "cameras[0].url: unsupported scheme 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_cli_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    result = run_cli("validate", str(tmp_path / "absent.toml"))
    assert result.returncode == 2 and "file not found" in result.stderr and "Traceback" not in result.stderr


def test_url_problems_are_reported_together_with_schema_problems(tmp_path: Path) -> None:
    problems = problems_of("[capture]\nworkers = 0\n[[cameras]]\nid = 'a'\nurl = 'nope://x'\n", tmp_path)
    assert len(problems) == 2
    assert any(p.startswith("cameras[0].url: unsupported scheme") for p in problems)
    assert any(p.startswith("capture.workers:") for p in problems)


def test_every_protocol_is_recognised_and_transport_only_goes_with_rtp(tmp_path: Path) -> None:
    cameras = {
        "ip": ("rtsps://user:pw@127.0.0.1:322/s", "rtsp"),
        "mjpeg": ("https://127.0.0.1/video.mjpg", "http"),
        "vms": ("onvif://admin:pw@127.0.0.1:8080/sub", "onvif"),
        "gateway": ("whep+https://127.0.0.1:8443/whep/cam", "whep"),
        "usb": ("/dev/video0", "v4l2"),  # need not exist yet: a USB camera may be plugged in later
    }
    text = "".join(f'[[cameras]]\nid = "{cid}"\nurl = "{url}"\n' for cid, (url, _) in cameras.items())
    path = tmp_path / "topology.toml"
    path.write_text(text + '[[cameras]]\nid = "udp"\nurl = "rtsp://127.0.0.1/s"\ntransport = "udp"\n')
    topology = load_topology(path)
    assert {c.id: c.scheme for c in topology.cameras} == {
        **{cid: scheme for cid, (_, scheme) in cameras.items()},
        "udp": "rtsp",
    }
    assert topology.camera("udp").transport == "udp"

    problems = problems_of(
        f"""
[[cameras]]
{GOOD_CAMERA}
transport = "udp"
[[cameras]]
id = "nohost"
url = "onvif:///profile"
[[cameras]]
id = "sctp"
url = "rtsp://127.0.0.1/s"
transport = "sctp"
""",
        tmp_path,
    )
    assert any(p.startswith("cameras[0].transport: only rtsp:// and onvif://") for p in problems)
    assert any(p.startswith("cameras[1].url: no host") for p in problems)
    assert any(p.startswith("cameras[2].transport:") and "sctp" in p for p in problems)


def test_control_tap_and_metrics_addresses_are_checked_with_their_key_paths(tmp_path: Path) -> None:
    problems = problems_of(
        f"""
[control]
endpoint = "tcp://127.0.0.1"
[tap]
endpoint = "udp://127.0.0.1:5591"
[metrics]
address = "9108"
[[cameras]]
{GOOD_CAMERA}
""",
        tmp_path,
    )
    assert [p.split(":")[0] for p in problems] == ["control.endpoint", "tap.endpoint", "metrics.address"]
    path = tmp_path / "ok.toml"
    path.write_text(
        f'[control]\nendpoint = "tcp://127.0.0.1:*"\n[tap]\nendpoint = ""\n[metrics]\naddress = ""\n'
        f"[[cameras]]\n{GOOD_CAMERA}\n"
    )
    topology = load_topology(path)
    assert (topology.control.endpoint, topology.tap.endpoint, topology.metrics.address) == (
        "tcp://127.0.0.1:*",
        "",
        "",
    )
