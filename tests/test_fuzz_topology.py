"""Fuzzing the topology loader: whatever an operator (or a live change) hands it, the answer is
a usable Topology or a TopologyError listing problems, never a traceback, never a password.

Two kinds of input: TOML-ish text and raw bytes written to a file for `load_topology`, and
raw dicts near the schema (its real keys, with wrong types, junk, huge and non-finite numbers,
odd unicode and URLs with passwords) for `parse_topology`, which live changes go through too.
The runs are derandomized and bounded, so CI sees the same examples every time.
"""

from __future__ import annotations

import datetime
import json
import math
import string
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from zstream.errors import TopologyError, mask_url
from zstream.quality import Thresholds
from zstream.topology import (
    SOURCE_SCHEMES,
    Camera,
    Topology,
    initial_placement,
    load_topology,
    parse_topology,
)

REPO = Path(__file__).resolve().parent.parent
FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Only ever used as the password of a URL: none of them may show in any problem. Computed, not
# written out: Hypothesis feeds the string literals it finds in the test module to text strategies.
PASSWORDS = tuple(f"{word}{n * 7919}" for n, word in enumerate(("hush-", "mum.", "zip~"), 1))
SECRET = PASSWORDS[0]

# Every section of the schema, as it is now (a section added later is fuzzed too).
SECTIONS: dict[str, type[BaseModel]] = {
    name: field.annotation
    for name, field in Topology.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
}
CAMERA_KEYS = sorted(Camera.model_fields)
THRESHOLD_KEYS = sorted(Thresholds.model_fields)
ALL_KEYS = sorted(
    {
        *Topology.model_fields,
        *CAMERA_KEYS,
        *THRESHOLD_KEYS,
        *(k for m in SECTIONS.values() for k in m.model_fields),
    }
)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the fuzzed topology lives, with one real file a file camera may name."""
    path = tmp_path_factory.mktemp("fuzz")
    (path / "clip.mp4").write_bytes(b"not really a clip: only its existence is checked")
    return path


# -- values -------------------------------------------------------------------------------------

SCHEMES = ["rtsp", "rtsps", "http", "https", "onvif", "whep", "whep+https", "redis", "rediss", "unix"]
SCHEMES += ["synthetic", "file", "tcp", "ipc", "ftp"]
HOSTS = ["127.0.0.1", "cam.local", "[::1]", "[::1", "", "h\uff03x", "traffic", "[fe80::1%eth0]", "ho st"]
PORTS = ["", ":554", ":0", ":65535", ":65536", ":99999999", ":x", ":", ":\u00b2"]
safe_text = st.text(alphabet=string.ascii_letters + string.digits + "-._", max_size=8)


@st.composite
def url_with_password(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(SCHEMES) | st.from_regex(r"\A[a-z][a-z0-9+.-]{0,6}\Z"))
    user = draw(safe_text)
    host = draw(st.sampled_from(HOSTS) | safe_text)
    path = draw(st.sampled_from(["", "/", "/stream", "/Streaming/Channels/101", "?size=320x240", "/#x"]))
    return f"{scheme}://{user}:{draw(st.sampled_from(PASSWORDS))}@{host}{draw(st.sampled_from(PORTS))}{path}"


def _odd_url(scheme: str) -> st.SearchStrategy[str]:
    return st.builds(
        lambda host, port, path: f"{scheme}://{host}{port}{path}",
        st.sampled_from(HOSTS),
        st.sampled_from(PORTS),
        safe_text,
    )


camera_urls = st.one_of(
    st.sampled_from(
        [
            "synthetic://traffic",
            "synthetic://traffic?size=320x240&fps=25",
            "synthetic://traffic?size=7680x4320",
            "synthetic://traffic?size=321x240",
            "synthetic://traffic?fps=nan",
            "synthetic://traffic?fps=inf&count=-1",
            "synthetic://park",
            "rtsp://127.0.0.1:8554/cam",
            "onvif://cam.local/main",
            "whep://127.0.0.1:8889/cam/whep",
            "http://127.0.0.1/cam.mjpg",
            "/dev/video0",
            "/dev/video",
            "clip.mp4",
            "./clip.mp4",
            "file://clip.mp4",
            "missing.mp4",
            "~/clip.mp4",
            "~no-such-user-zs/clip.mp4",
            "C:\\clip.mp4",
            "/" + "x" * 5000,
            "clip\x00.mp4",
            "",
        ]
    ),
    url_with_password(),
    st.sampled_from(SCHEMES).flatmap(_odd_url),
    st.text(max_size=40),
)
sizes = st.one_of(
    st.sampled_from(
        ["1280x720", "16x16", "7680x4320", "15x15", "1x", "x", "1280X720", "\u00b2x\u00b2", "9" * 5000 + "x2"]
    ),
    st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=3),
)
numbers = st.one_of(
    st.integers(min_value=-5, max_value=300),
    st.integers(),
    st.just(10**400),
    st.floats(),  # nan and inf included
    st.sampled_from([0, 1, 2, 0.0, -0.0, 1e-300, 1e308, math.inf, -math.inf, math.nan]),
)
scalars = st.one_of(
    numbers,
    st.booleans(),
    st.none(),  # live changes arrive as JSON, which has null
    st.text(max_size=30),
    st.text(min_size=2000, max_size=3000).filter(bool) | st.just("é" * 10000),
    url_with_password(),
    st.sampled_from(["tcp", "udp", "jpeg", "raw", "meta", "wait", "drop_oldest", "yuv420p", "*", "", "\x00"]),
    st.sampled_from(
        ["tcp://127.0.0.1:*", "tcp://127.0.0.1:5590", "ipc:///tmp/x.sock", "127.0.0.1:0", "h:\u00b2"]
    ),
    st.datetimes(),
    st.dates(),
    st.times(),
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(ALL_KEYS) | st.text(max_size=10) | url_with_password(), inner, max_size=4
        )
    ),
    max_leaves=12,
)


def value_for(key: str, default: Any = None, calm: bool = False) -> st.SearchStrategy[Any]:
    """Mostly what the key takes, sometimes anything at all; `calm`: its default or a likely value."""
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "url": camera_urls,
        "id": st.sampled_from(["cam-1", "cam-2", "a", "A.b_c-9", "-bad", "x" * 64, "é", ""]),
        "resize": sizes,
        "max_size": sizes,
        "thresholds": st.dictionaries(
            st.sampled_from(THRESHOLD_KEYS) | st.text(max_size=8), numbers, max_size=3
        ),
        "run_dir": st.sampled_from(
            ["run", "/tmp/zs-fuzz", "~/zs", "~no-such-user-zs/run", "a\x00b", "r" * 200, ""]
        ),
        "endpoint": st.sampled_from(["tcp://127.0.0.1:*", "tcp://127.0.0.1:65536", "ipc://", "tcp://:1", ""]),
        "address": st.sampled_from(["127.0.0.1:0", ":9108", "127.0.0.1:\u00b2", "[::1]:9108", ""]),
    }
    likely = plausible.get(key, numbers)
    if calm:
        return st.just(default)
    if default is None:
        return st.one_of(likely, numbers, junk)
    return st.one_of(st.just(default), likely, numbers, junk)


def default_of(model: type[BaseModel], key: str) -> Any:
    """The key's plain default (None for none, a factory, or an unknown key)."""
    field = model.model_fields.get(key)
    return None if field is None or field.default is PydanticUndefined else field.default


CALM_URLS = ["synthetic://traffic?size=320x240", "clip.mp4", "rtsp://u:{}@127.0.0.1:8554/cam", "/dev/video0"]


@st.composite
def cameras(draw: st.DrawFn, calm: bool = False) -> Any:
    keys = draw(st.lists(st.sampled_from([*CAMERA_KEYS, "colour"]), max_size=5, unique=True))
    if calm:
        url = draw(st.sampled_from(CALM_URLS)).format(draw(st.sampled_from(PASSWORDS)))
        camera = {"id": f"cam-{draw(st.integers(0, 99))}", "url": url}
        keys = [key for key in keys if key in ("fps", "loop", "realtime", "keyframes_only", "drop_policy")]
        defaults = {
            "fps": 5.0,
            "loop": True,
            "realtime": False,
            "keyframes_only": True,
            "drop_policy": "wait",
        }
        return camera | {key: draw(value_for(key, defaults[key], calm=True)) for key in keys}
    camera = {"id": draw(value_for("id")), "url": draw(value_for("url"))}
    for key in ("id", "url"):
        if draw(st.integers(0, 9)) == 0:
            del camera[key]
    camera.update({key: draw(value_for(key, default_of(Camera, key))) for key in keys})
    return camera


@st.composite
def raw_topologies(draw: st.DrawFn) -> dict[str, Any]:
    """A topology near the schema; one in four is calm (defaults and likely values: mostly valid)."""
    calm = draw(st.integers(0, 3)) == 0
    raw: dict[str, Any] = {}
    camera_list = st.lists(cameras(calm=calm) if calm else cameras() | junk, min_size=int(calm), max_size=4)
    raw["cameras"] = (
        draw(camera_list | junk) if not calm and draw(st.integers(0, 5)) == 0 else draw(camera_list)
    )
    for name, model in SECTIONS.items():
        if draw(st.booleans()):
            keys = draw(st.lists(st.sampled_from([*model.model_fields, "bogus"]), max_size=4, unique=True))
            if calm:
                keys = [key for key in keys if default_of(model, key) is not None]
            raw[name] = (
                {key: draw(value_for(key, default_of(model, key), calm)) for key in keys}
                if calm or draw(st.integers(0, 7))
                else draw(junk)
            )
    if draw(st.booleans()):
        raw["run_dir"] = draw(st.just("run") if calm else value_for("run_dir"))
    if not calm and draw(st.integers(0, 5)) == 0:
        raw[draw(st.text(max_size=10) | url_with_password())] = draw(junk)
    return raw


# -- the property -------------------------------------------------------------------------------


def secrets_in(source: Any) -> set[str]:
    """The PASSWORDS that `source` (raw dict, TOML text or bytes) holds, each only as the password
    of a URL: Hypothesis may also paste one into plain text (a key, a path), where it is no
    password and may rightly be quoted."""
    if isinstance(source, bytes | str):
        try:
            text = source.decode("utf-8") if isinstance(source, bytes) else source
            source = tomllib.loads(text)
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
            return set()  # refused before any value is looked at: a syntax error quotes no value
    texts: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            for key, inner in item.items():
                walk(key)
                walk(inner)
        elif isinstance(item, list | tuple):
            for inner in item:
                walk(inner)

    walk(source)
    return {
        password
        for password in PASSWORDS
        if any(password in text for text in texts) and not any(password in mask_url(text) for text in texts)
    }


def check_outcome(load: Any, base_dir: Path, source: Any) -> Topology | None:
    """`load()` gives a usable Topology, or a TopologyError of clean problems; anything else fails.
    `source` is what it reads: no URL password in it may show in a problem."""
    secrets = secrets_in(source)
    try:
        topology = load()
    except TopologyError as exc:
        assert exc.problems, "a TopologyError without problems"
        for problem in exc.problems:
            assert isinstance(problem, str) and problem.strip(), f"empty problem in {exc.problems!r}"
            assert not any(secret in problem for secret in secrets), f"password shown: {problem!r}"
        return None
    assert isinstance(topology, Topology)
    # What the workers derive from it works, and a live change's round trip gives it back.
    assert Path(topology.run_dir).is_absolute() and len(topology.run_id) == 10
    placement = initial_placement(topology)
    assert set(placement.capture) == {camera.id for camera in topology.cameras}
    for camera in topology.cameras:
        assert camera.scheme in SOURCE_SCHEMES
        assert topology.ring_bytes(camera) > 0
        assert topology.drop_policy_for(camera) in ("drop_oldest", "drop_newest", "wait")
        topology.thresholds_for(camera)
        if camera.scheme == "file":
            assert Path(camera.url).is_absolute() and Path(camera.url).is_file()
    again = parse_topology(topology.model_dump(mode="json", exclude_defaults=True), base_dir)
    assert again == topology
    return topology


VALID = (
    'run_dir = "run"\n[capture]\nworkers = 2\n[[cameras]]\nid = "a"\nurl = "synthetic://traffic?size=320x240"\n'
    '[[cameras]]\nid = "b"\nurl = "clip.mp4"\nthresholds = { min_sharpness = 1.5 }\n'
)
toml_lines = st.one_of(
    st.sampled_from(
        [f"[{name}]" for name in SECTIONS]
        + ["[[cameras]]", "[validation.thresholds]", "[cameras]", "[[redis]]"]
    ),
    st.builds(
        lambda key, value: f"{key} = {value}",
        st.sampled_from(ALL_KEYS) | st.text(max_size=6),
        st.one_of(
            st.sampled_from(
                [
                    '"synthetic://traffic"',
                    "nan",
                    "inf",
                    "-inf",
                    "1e400",
                    "0x7fffffffffffffff",
                    "1979-05-27T07:32:00Z",
                ]
            ),
            st.sampled_from(
                [
                    '"1280x720"',
                    "[1, 2]",
                    "{ min_sharpness = nan }",
                    f'"rtsp://u:{SECRET}@[::1/x"',
                    "[[[[[]]]]]",
                ]
            ),
            st.integers().map(str),
            st.text(max_size=20).map(lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'),
            st.text(max_size=12),
        ),
    ),
    st.text(max_size=30),
)


def to_toml(raw: dict[str, Any]) -> str:
    """`raw` as TOML, every value inline (None, which TOML lacks, leaves its key out)."""
    return "".join(f"{_toml_key(key)} = {_toml(value)}\n" for key, value in raw.items() if value is not None)


def _toml_key(key: Any) -> str:
    return json.dumps(str(key), ensure_ascii=False)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # surrogate pairs aside, JSON strings are TOML's
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value if item is not None) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items() if v is not None)
        return "{" + inner + "}"
    raise TypeError(value)


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """`text` with a few lines dropped, doubled or cut short."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        at = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["drop", "double", "cut"]))
        if how == "drop":
            del lines[at]
        elif how == "double":
            lines.insert(at, lines[at])
        else:
            lines[at] = lines[at][: draw(st.integers(0, len(lines[at])))]
    return "\n".join(lines)


toml_texts = st.one_of(
    raw_topologies().map(to_toml),
    raw_topologies().map(to_toml).flatmap(mutated),
    st.lists(toml_lines, max_size=14).map("\n".join),
)


@FUZZ
@given(text=toml_texts)
@example(text=VALID)
@example(text="a = " + "[" * 5000)  # tomllib recurses: RecursionError, not a TOML error
@example(text="x = " + "{ y = " * 2000 + "1" + " }" * 2000)
def test_any_toml_text_loads_or_is_a_clean_error(text: str, base_dir: Path) -> None:
    path = base_dir / "topology.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_outcome(lambda: load_topology(path), base_dir, text)


@FUZZ
@given(
    data=st.binary(max_size=400)
    | st.builds(
        lambda at, junk: (VALID.encode(), at, junk),
        st.integers(0, len(VALID)),
        st.binary(min_size=1, max_size=20),
    )
)
@example(data=b"\xff\xfe\x00garbage")
@example(data=VALID.encode())
def test_any_bytes_load_or_are_a_clean_error(data: Any, base_dir: Path) -> None:
    if isinstance(data, tuple):  # a valid file with a few bytes overwritten
        valid, at, patch = data
        data = valid[:at] + patch + valid[at + len(patch) :]
    path = base_dir / "topology.toml"
    path.write_bytes(data)
    check_outcome(lambda: load_topology(path), base_dir, data)


@FUZZ
@given(raw=raw_topologies())
@example(raw={"cameras": [{"id": "a", "url": "synthetic://traffic"}]})
@example(
    raw={
        "cameras": [
            {"id": "a", "url": f"rtsp://u:{SECRET}@[::1/x"},
            {"id": "b", "url": f"http://u:{SECRET}@h\uff03x/"},
        ]
    }
)
@example(raw={"redis": {"url": f"redis://:{SECRET}@h\uff03x"}, "cameras": [[f"rtsp://u:{SECRET}@h/x"]]})
@example(raw={"run_dir": "~no-such-user-zs/run", "cameras": [{"id": "a", "url": "/" + "x" * 5000}]})
@example(raw={"run_dir": "a\x00b", "cameras": [{"id": "a", "url": f"synthetic://u:{SECRET}@park"}]})
def test_any_raw_topology_parses_or_is_a_clean_error(raw: dict[str, Any], base_dir: Path) -> None:
    check_outcome(lambda: parse_topology(raw, base_dir), base_dir, raw)


def test_the_raw_strategy_reaches_valid_topologies_too(base_dir: Path) -> None:
    """A fuzzer that only ever produced errors would prove little about the valid side."""
    outcomes: list[bool] = []

    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @given(raw=raw_topologies())
    def collect(raw: dict[str, Any]) -> None:
        outcomes.append(check_outcome(lambda: parse_topology(raw, base_dir), base_dir, raw) is not None)

    collect()
    assert 0.1 < sum(outcomes) / len(outcomes) < 0.9, f"{sum(outcomes)} valid of {len(outcomes)}"


NASTY = f"""
run_dir = "~no-such-user-zs/run"
[redis]
url = "redis://:{SECRET}@h\uff03x:6379/0"
[capture]
workers = 1e400
max_size = "\u00b2x\u00b2"
[control]
endpoint = "tcp://u:{SECRET}@127.0.0.1:99999"
[metrics]
address = ["http://u:{SECRET}@127.0.0.1:9108"]
[[cameras]]
id = "ipv6"
url = "rtsp://admin:{SECRET}@[::1/stream"
[[cameras]]
id = "long"
url = "/{"x" * 5000}.mp4"
[[cameras]]
id = "port"
url = "http://admin:{SECRET}@cam:99999999/x"
transport = "udp"
[[cameras]]
id = "ipv6"
url = "synthetic://admin:{SECRET}@park"
thresholds = {{ min_sharpness = nan, "rtsp://u:{SECRET}@h/" = 1 }}
"""


def test_cli_validate_on_a_nasty_file_is_exit_2_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "nasty.toml"
    path.write_text(NASTY, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "zstream.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and SECRET not in output, output
    for expected in (
        "run_dir: no such user's home directory",
        "redis.url: not a valid URL",
        "capture.workers:",
        "capture.max_size:",
        "control.endpoint:",
        "metrics.address:",
        "cameras[0].url: not a valid URL (bad IPv6 address)",
        "cameras[1].url: cannot look up",
        "cameras[2].url: port is not a number",
        "cameras[3].id: duplicate id 'ipv6'",
        "cameras[3].url:",
        "cameras[3].thresholds",
    ):
        assert expected in output, f"{expected!r} missing from:\n{output}"
    assert max(map(len, output.splitlines())) < 600, "a problem quoting a whole 5000-character value"
