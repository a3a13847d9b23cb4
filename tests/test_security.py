"""Endpoints beyond loopback must be protected, and protection is real: CURVE lets in only the
clients whose keys are allowed, /metrics wants its bearer token."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
import zmq.auth

from tests.conftest import REDIS_URL, REPO, Pipeline, shm_segments, topology_text, wait_until
from tests.redis_server import TLS_PASSWORD, PrivateRedis
from tests.test_pipeline import SYNTH, assert_clean_exit
from tests.test_topology import GOOD_CAMERA, problems_of
from zstream.control import ControlClient, ControlError
from zstream.core.wire import decode_batch_entry
from zstream.security import make_keys
from zstream.tap_viewer import TapSubscriber
from zstream.topology import load_topology

TOKEN = "a-long-enough-test-token-0123456789"


def test_endpoints_beyond_loopback_are_refused_unless_protected(tmp_path: Path) -> None:
    exposed = f"""
[control]
endpoint = "tcp://0.0.0.0:5590"
[tap]
endpoint = "tcp://*:5591"
[metrics]
address = "0.0.0.0:9108"
[[cameras]]
{GOOD_CAMERA}
"""
    problems = problems_of(exposed, tmp_path)
    assert [p.split(":")[0] for p in problems] == ["control.endpoint", "tap.endpoint", "metrics.address"]
    assert "security.curve_keys" in problems[0] and "security.metrics_token_file" in problems[2]

    make_keys(tmp_path / "keys")
    (tmp_path / "token").write_text(TOKEN)
    protected = tmp_path / "protected.toml"
    protected.write_text(f'{exposed}\n[security]\ncurve_keys = "keys"\nmetrics_token_file = "token"\n')
    topology = load_topology(protected)  # relative paths are resolved against the file
    assert topology.security.curve_keys == str(tmp_path / "keys")
    assert problems_of(exposed + '[security]\ncurve_keys = "nowhere"\n', tmp_path)[-1].startswith(
        "security.curve_keys: no server.key_secret in"
    )


def test_curve_and_token_let_in_only_whom_they_should(
    pipeline, run_dir: Path, streams: tuple[str, str], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    make_keys(keys)
    stranger = tmp_path / "stranger"  # a valid key pair, but not in keys/clients/
    stranger.mkdir()
    zmq.auth.create_certificates(stranger, "client")
    shutil.copy(keys / "server.key", stranger / "server.key")
    (tmp_path / "token").write_text(TOKEN + "\n")
    text = topology_text(run_dir, streams, [{"id": "cam", "url": SYNTH}])
    text += f'\n[security]\ncurve_keys = "{keys}"\nmetrics_token_file = "{tmp_path / "token"}"\n'
    running = pipeline(text)
    endpoints = wait_until(
        lambda: (
            {"control", "tap", "metrics"} <= set(running.status().get("endpoints", {}))
            and running.status()["endpoints"]
        ),
        60,
        message="endpoints published",
    )

    allowed = ControlClient(endpoints["control"], timeout_s=5, keys=keys)
    wait_until(lambda: allowed.call("cameras")[0]["state"] == "streaming", 30, message="control over CURVE")
    for outsider in (None, stranger):  # no keys at all; keys the server does not allow
        with pytest.raises(ControlError, match="no answer from the control endpoint"):
            ControlClient(endpoints["control"], timeout_s=2, keys=outsider).call("cameras")

    with TapSubscriber(endpoints["tap"], ["cam"], keys=keys) as subscriber:
        received = subscriber.receive(10)
        assert received is not None and received[0].camera == "cam"
    with TapSubscriber(endpoints["tap"], ["cam"]) as plain:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert plain.receive(0.5) is None, "a subscriber without keys received a frame"

    url = f"http://{endpoints['metrics']}/metrics"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=5)
    assert refused.value.code == 401
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert b"zstream_frames_written_total" in answer.read()
    assert_clean_exit(running)


def test_redis_over_tls_with_a_password_works_and_the_password_stays_masked(
    pipeline, run_dir: Path, streams: tuple[str, str], tmp_path: Path
) -> None:
    directory = tmp_path / "tls-redis"
    directory.mkdir()
    server = PrivateRedis(directory, tls=True)
    server.start()
    try:
        text = topology_text(run_dir, streams, [{"id": "cam", "url": SYNTH}]).replace(REDIS_URL, server.url)
        running = pipeline(text)
        client = redis.Redis.from_url(server.url)
        wait_until(lambda: client.xlen(streams[0]) >= 3, 60, message="batches in the TLS Redis")
        assert_clean_exit(running)
        frames = [f for _, fields in client.xrange(streams[0]) for f in decode_batch_entry(fields)[1]]
        assert [meta.seq for meta, _ in frames] == list(range(len(frames)))
        client.close()
        plain = redis.Redis(port=server.port, socket_connect_timeout=2)  # TLS only: plain text is refused
        with pytest.raises(redis.RedisError):
            plain.ping()
    finally:
        server.kill()
    assert TLS_PASSWORD not in running.log


def test_a_camera_password_appears_nowhere(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    secret = "hunter2-secret"
    cameras = [{"id": "ok", "url": SYNTH}, {"id": "locked", "url": f"rtsp://admin:{secret}@127.0.0.1:9/s"}]
    running = pipeline(topology_text(run_dir, streams, cameras))
    wait_until(lambda: running.camera("locked").get("reconnects", 0) >= 1, 30, message="a failed attempt")
    endpoints = running.status()["endpoints"]
    wait_until(lambda: redis_client.xlen(streams[0]) > 0, 30, message="batches")
    topology = running.topology_file
    seen = [
        json.dumps(running.status()),
        subprocess.run(
            [sys.executable, "-m", "zstream.cli", "status", "--json", "-t", str(topology)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
        ).stdout,
        json.dumps(ControlClient(endpoints["control"]).call("cameras")),
        urllib.request.urlopen(f"http://{endpoints['metrics']}/metrics", timeout=5).read().decode(),
        repr(redis_client.xrange(streams[0])) + repr(redis_client.xrange(streams[1])),
    ]
    assert_clean_exit(running)
    seen.append(running.log)
    assert "admin:****@127.0.0.1:9" in seen[2]  # shown, masked
    for text in seen:
        assert secret not in text


# Run as another local user: every file it can open is searched for the passwords.
SEARCH_AS_ANOTHER_USER = """
import os, sys
secrets = sys.argv[1].encode(), sys.argv[2].encode()
for root in sys.argv[3:]:
    paths = [root] if os.path.isfile(root) else [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    for path in paths:
        try:
            data = open(path, "rb").read()
        except OSError:
            continue
        if any(secret in data for secret in secrets):
            print(path)
"""


def test_no_file_another_local_user_can_read_holds_a_camera_password(
    streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    """The run dir and overlay sit in a world-readable folder, like the default /tmp/zstream."""
    if os.geteuid() != 0:
        pytest.fail("this test reads the run's files as user 'nobody', which needs root (CI runs as root)")
    in_file, added_live = "s3cret-in-file", "s3cret-added-live"
    shared = Path(tempfile.mkdtemp(prefix="zs-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        run_dir = shared / "run"
        cameras = [{"id": "ok", "url": SYNTH}, {"id": "cam", "url": f"rtsp://admin:{in_file}@127.0.0.1:9/s"}]
        topology_file = shared / "topology.toml"
        topology_file.write_text(topology_text(run_dir, streams, cameras))
        topology_file.chmod(0o644)
        running = Pipeline(topology_file, run_dir)
        try:
            wait_until(lambda: redis_client.xlen(streams[0]) > 0, 30, message="batches")
            added = subprocess.run(
                [sys.executable, "-m", "zstream.cli", "cameras", "add", "live", "-t", str(topology_file),
                 f"rtsp://admin:{added_live}@127.0.0.1:9/live"],
                capture_output=True, text=True, timeout=30, cwd=REPO,
            )  # fmt: skip
            assert added.returncode == 0, added.stderr
            wait_until(lambda: running.camera("live").get("reconnects", 0) >= 1, 30, message="live camera")
            run_id = load_topology(topology_file).run_id
            # The operator's own file is theirs to protect: zstream says so.
            assert "other users can read it (mode 644): chmod 600" in running.log
            created = [str(p) for p in shared.iterdir() if p != topology_file] + [
                *map(str, shm_segments(run_id))
            ]
            # Root can read them all: the passwords are there (the workers need them) ...
            assert in_file in (run_dir / "topology.json").read_text()
            assert added_live in (shared / "topology.live.json").read_text()
            # ... and nobody else can read any file that holds one.
            readable = subprocess.run(
                ["/usr/bin/python3", "-c", SEARCH_AS_ANOTHER_USER, in_file, added_live, *created],
                capture_output=True, text=True, timeout=30, user="nobody", group="nogroup", cwd="/",
            )  # fmt: skip
            assert readable.returncode == 0, readable.stderr
            assert readable.stdout == "", f"passwords readable by another user in: {readable.stdout}"
            assert run_dir.stat().st_mode & 0o777 == 0o700
            assert all(p.stat().st_mode & 0o077 == 0 for p in run_dir.iterdir() if p.is_file())
        finally:
            assert running.stop() == 0, running.log
        assert in_file not in running.log and added_live not in running.log
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_run_dir_that_is_a_link_or_another_users_is_refused(tmp_path: Path) -> None:
    from zstream.errors import PreflightError
    from zstream.rundir import make_private_dir

    target = tmp_path / "target"
    target.mkdir(mode=0o755)
    link = tmp_path / "run"
    link.symlink_to(target)
    with pytest.raises(PreflightError, match="is a link or not a directory"):
        make_private_dir(link)
    assert target.stat().st_mode & 0o777 == 0o755  # not narrowed (nor anything else) through the link
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(PreflightError, match="belongs to another user"):
        make_private_dir(theirs)
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    make_private_dir(mine)
    assert mine.stat().st_mode & 0o777 == 0o700
