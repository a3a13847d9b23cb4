"""The topology file: schema, defaults and validation.

One TOML file describes a whole pipeline. Every model forbids unknown keys, and loading
reports every problem at once, each with its key path (`cameras[3].fps: ...`), so an
operator fixes a file in one pass instead of one error per restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from zstream.core.address import is_port, split_host_port
from zstream.core.planes import i420_size
from zstream.errors import SourceError, TopologyError, mask_url
from zstream.quality import Thresholds

# sun_path of a Unix socket holds 107 bytes; our longest socket name is "validate-NN.sock".
MAX_RUN_DIR_LENGTH = 80
CAMERA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# A V4L2 device node; whether it exists is checked when the camera opens (USB cameras come and go).
V4L2_DEVICE = re.compile(r"^/dev/video\d+$")
SOURCE_SCHEMES = ("synthetic", "rtsp", "http", "onvif", "whep", "v4l2", "zmq", "file")
NETWORK_SCHEMES = ("rtsp", "http", "onvif", "whep", "zmq")  # need a host
RTP_SCHEMES = ("rtsp", "onvif")  # have a choice of RTP transport


def _parse_size(value: Any) -> Any:
    """Accept "1280x720" or [1280, 720]; anything else is left for pydantic to reject."""
    if isinstance(value, str):
        width, sep, height = value.lower().partition("x")
        if not sep or not (width + height).isascii() or not width.isdigit() or not height.isdigit():
            raise ValueError(f"expected WIDTHxHEIGHT such as 1280x720, got {_shown(value)}")
        return (int(width), int(height))
    return value


def _check_size(value: tuple[int, int]) -> tuple[int, int]:
    width, height = value
    if not (16 <= width <= 7680 and 16 <= height <= 4320):
        raise ValueError(f"must be between 16x16 and 7680x4320, got {width}x{height}")
    return value


Size = Annotated[tuple[int, int], BeforeValidator(_parse_size)]
# drop_oldest / drop_newest keep a live camera live; wait applies back-pressure instead, which
# only makes sense for a file read as fast as possible (no frame is lost, nothing live is late).
DropPolicy = Literal["drop_oldest", "drop_newest", "wait"]


class Strict(BaseModel):
    """Base of every section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(Strict):
    url: str = Field("redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL")
    stream: str = Field("zstream:frames", min_length=1, description="stream of validated batches")
    qc_stream: str = Field("zstream:qc", min_length=1, description="stream of frames that failed QC")
    maxlen: int = Field(1000, gt=0, description="approximate MAXLEN of the batch stream, in entries")
    qc_maxlen: int = Field(10000, gt=0, description="approximate MAXLEN of the QC stream")
    connect_timeout_s: float = Field(2.0, gt=0, le=60)
    cluster: bool = Field(
        False, description="url is a node of a Redis Cluster (keys go to their slot's node)"
    )

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        try:
            scheme = urlsplit(url).scheme
        except ValueError as exc:  # its message quotes the netloc, password and all
            raise ValueError(f"not a valid URL ({_url_error(exc)})") from None
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"must start with redis://, rediss:// or unix://, got {mask_url(url)!r}")
        return url


class CaptureSettings(Strict):
    workers: int = Field(1, ge=1, le=64, description="capture processes; cameras are spread over them")
    ring_slots: int = Field(8, ge=2, le=1024, description="frames each camera's shared-memory ring holds")
    drop_policy: DropPolicy = Field(
        "drop_oldest",
        description="when downstream lags: overwrite the oldest frame, drop the new one, or wait",
    )
    queue_depth: int = Field(
        4, ge=1, le=10000, description="frame references queued per camera and hop; keep 2x below ring_slots"
    )
    decoder_threads: int = Field(1, ge=0, le=32, description="PyAV decoder threads per camera, 0 = auto")
    nice: int = Field(
        19,
        ge=0,
        le=19,
        description="scheduling niceness of the capture processes: when the CPU is short, decoding "
        "yields to validation and batching, so frames are dropped before work is spent on them",
    )
    max_size: Size = Field((1920, 1080), description="largest frame a ring slot holds when not resizing")
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    read_timeout_s: float = Field(10.0, gt=0, le=300)
    stall_timeout_s: float = Field(
        5.0, gt=0, le=600, description="streaming with no frame this long: stalled"
    )
    reconnect_initial_s: float = Field(1.0, gt=0, le=600)
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)

    @field_validator("max_size")
    @classmethod
    def _max_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        return _check_size(value)


class ValidationSettings(Strict):
    workers: int = Field(1, ge=1, le=64, description="validation processes; each camera sticks to one")
    frames: Literal["output", "all"] = Field(
        "output",
        description='which frames are measured: "output", those the output rate sends on (README, '
        'Validation: what it changes); "all", every captured frame',
    )
    thresholds: Thresholds = Field(default_factory=Thresholds)


class BatcherSettings(Strict):
    batch_size: int = Field(8, ge=1, le=1024, description="frames per Redis entry at most")
    batch_timeout_ms: int = Field(
        200,
        ge=1,
        le=60000,
        description="write a partial batch once its oldest frame was captured this long ago",
    )
    encoding: Literal["jpeg", "raw"] = Field("jpeg", description="how pixels are stored in Redis")
    pixel_format: Literal["yuv420p", "bgr24", "rgb24"] = Field(
        "yuv420p", description="layout of raw pixels; yuv420p is bit-identical to what was decoded"
    )
    jpeg_quality: int = Field(90, ge=1, le=100)
    max_pending_batches: int = Field(64, ge=1, le=100000, description="batches held while Redis is down")
    output_fps: float = Field(
        5.0,
        ge=0,
        le=240,
        description="frames per second per camera written to Redis (every frame is still decoded); "
        "0: every frame",
    )
    output_width: int = Field(
        640, ge=0, le=16384, description="frames written to Redis are scaled down to this width; 0: unscaled"
    )

    @field_validator("output_width")
    @classmethod
    def _output_width(cls, value: int) -> int:
        return _check_output_width(value)


class SupervisorSettings(Strict):
    shutdown_timeout_s: float = Field(20.0, gt=0, le=600, description="bound on a graceful drain")
    restart_initial_s: float = Field(0.5, gt=0, le=600, description="first restart delay of a worker")
    restart_max_s: float = Field(30.0, gt=0, le=3600, description="cap of the restart back-off")
    stats_interval_s: float = Field(1.0, gt=0, le=60, description="how often workers report counters")
    log_interval_s: float = Field(10.0, gt=0, le=3600, description="how often the summary is logged")

    def drain_budget_s(self, stage: str) -> float:
        """Each stage's share of the shutdown timeout, upstream first; the batcher gets the most
        because it may be waiting for Redis."""
        return self.shutdown_timeout_s * {"capture": 0.25, "validate": 0.25, "batch": 0.5}[stage]


def _check_output_width(value: int) -> int:
    if value % 2:
        raise ValueError(f"must be even (frames are I420, chroma is half the width), got {value}")
    return value


def _zmq_endpoint(value: str, *, optional: bool = False) -> str:
    """tcp://HOST:PORT (PORT may be *) or ipc://PATH; "" too where the endpoint is optional."""
    if optional and value == "":
        return value
    scheme, sep, rest = value.partition("://")
    if scheme == "ipc" and sep and rest:
        return value
    host, port = split_host_port(rest) or ("", "")
    if scheme == "tcp" and sep and host and (port == "*" or is_port(port)):
        return value
    wanted = "tcp://HOST:PORT (PORT may be *), ipc://PATH" + (' or ""' if optional else "")
    raise ValueError(f"expected {wanted}, got {_shown(value)}")


def _host_port(value: str) -> str:
    if value == "":
        return value
    host, port = split_host_port(value) or ("", "")
    if not (host and is_port(port)):
        raise ValueError(f'expected HOST:PORT (PORT 0 picks a free one) or "", got {_shown(value)}')
    return value


class ControlSettings(Strict):
    endpoint: str = Field(
        "tcp://127.0.0.1:5590",
        description="ZeroMQ endpoint of the control plane of `zstream up`; port * picks a free one",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return _zmq_endpoint(value)


class TapSettings(Strict):
    endpoint: str = Field(
        "tcp://127.0.0.1:5591",
        description="ZeroMQ PUB endpoint publishing every validated frame; empty string: no tap",
    )
    payload: Literal["meta", "jpeg", "raw"] = Field("jpeg", description="what each tap message carries")
    jpeg_quality: int | None = Field(
        None, ge=1, le=100, description="default: the batch's, so that the tap reuses its JPEG"
    )
    hwm: int = Field(
        100, ge=1, le=100000, description="frames queued per subscriber; beyond it the tap sheds (counted)"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return _zmq_endpoint(value, optional=True)


class MetricsSettings(Strict):
    address: str = Field(
        "127.0.0.1:9108", description="host:port of the Prometheus /metrics endpoint; port 0 picks a free one"
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _host_port(value)


class SecuritySettings(Strict):
    curve_keys: str = Field(
        "", description="directory made by `zstream keys`: CURVE for control and tap, clients/ allowed"
    )
    metrics_token_file: str = Field("", description="file holding the bearer token /metrics requires")


class Camera(Strict):
    id: str = Field(pattern=CAMERA_ID_PATTERN, description="unique; letters, digits, _ . -")
    url: str = Field(
        min_length=1,
        description="synthetic://, rtsp(s)://, http(s)://, onvif://, whep(+https)://, zmq:// (pushed "
        "frames), /dev/videoN, or a file",
    )
    transport: Literal["tcp", "udp"] | None = Field(
        None, description="rtsp:// and onvif:// cameras: RTP over the RTSP connection (tcp, default) or udp"
    )
    fps: float | None = Field(
        None, gt=0, le=240, description="cap on frames decoded per second (see output_fps for Redis)"
    )
    output_fps: float | None = Field(None, ge=0, le=240, description="overrides batcher.output_fps")
    output_width: int | None = Field(None, ge=0, le=16384, description="overrides batcher.output_width")
    resize: Size | None = Field(None, description="scale every frame to WIDTHxHEIGHT at capture")
    max_size: Size | None = Field(None, description="overrides capture.max_size for this camera")
    loop: bool = Field(False, description="files: start again at the end")
    keyframes_only: bool = Field(False, description="decode key frames only (a fraction of the CPU)")
    skip_loop_filter: bool = Field(
        False, description="skip H.264/HEVC deblocking: ~20 % less decoding CPU, softer pictures"
    )
    realtime: bool = Field(True, description="files and recordings over HTTP: pace to their timestamps")
    ring_slots: int | None = Field(None, ge=2, le=1024)
    drop_policy: DropPolicy | None = None
    decoder_threads: int | None = Field(None, ge=0, le=32)
    thresholds: dict[str, float] = Field(default_factory=dict, description="overrides of validation")

    @field_validator("resize", "max_size")
    @classmethod
    def _sizes(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        return None if value is None else _check_size(value)

    @field_validator("output_width")
    @classmethod
    def _output_width(cls, value: int | None) -> int | None:
        return None if value is None else _check_output_width(value)

    @field_validator("thresholds")
    @classmethod
    def _known_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(Thresholds.model_fields))
        if unknown:
            raise ValueError(
                f"unknown threshold(s) {_shown(unknown)}; known: {sorted(Thresholds.model_fields)}"
            )
        Thresholds(**value)
        return value

    @property
    def scheme(self) -> str:
        return source_scheme(self.url)


class Topology(Strict):
    run_dir: str = Field("/tmp/zstream", description="sockets, lock and status files of this pipeline")
    redis: RedisSettings = Field(default_factory=RedisSettings)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    batcher: BatcherSettings = Field(default_factory=BatcherSettings)
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    tap: TapSettings = Field(default_factory=TapSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    # At least one in a file (checked when loading); a shard may own none of them yet.
    cameras: list[Camera] = Field(description="the cameras; ids are unique")

    # What the workers derive from the topology lives here, so every process agrees.

    @property
    def run_id(self) -> str:
        """Short stable id of the run dir: names this pipeline's shared memory."""
        return hashlib.sha1(os.path.realpath(self.run_dir).encode()).hexdigest()[:10]

    def camera(self, camera_id: str) -> Camera:
        for camera in self.cameras:
            if camera.id == camera_id:
                return camera
        raise KeyError(camera_id)

    def thresholds_for(self, camera: Camera) -> Thresholds:
        return self.validation.thresholds.model_copy(update=camera.thresholds)

    def output_fps_for(self, camera: Camera) -> float:
        return self.batcher.output_fps if camera.output_fps is None else camera.output_fps

    def output_width_for(self, camera: Camera) -> int:
        return self.batcher.output_width if camera.output_width is None else camera.output_width

    def ring_slots_for(self, camera: Camera) -> int:
        return camera.ring_slots or self.capture.ring_slots

    def drop_policy_for(self, camera: Camera) -> DropPolicy:
        """The camera's own policy; else "wait" for a file not paced in real time; else the stage's."""
        if camera.drop_policy:
            return camera.drop_policy
        if camera.scheme == "file" and not camera.realtime:
            return "wait"
        return self.capture.drop_policy

    def decoder_threads_for(self, camera: Camera) -> int:
        return self.capture.decoder_threads if camera.decoder_threads is None else camera.decoder_threads

    def frame_capacity(self, camera: Camera) -> tuple[int, int]:
        """Largest frame the camera's ring must hold: the resize target, else its max size."""
        if camera.resize:
            return camera.resize
        if camera.max_size:
            return camera.max_size
        if camera.scheme == "synthetic":
            from zstream.sources.synthetic import parse_synthetic_url

            spec = parse_synthetic_url(camera.url, camera.id)
            return (spec.width, spec.height)
        return self.capture.max_size

    def ring_bytes(self, camera: Camera) -> int:
        from zstream.core.ring import ring_segment_size

        width, height = self.frame_capacity(camera)
        return ring_segment_size(self.ring_slots_for(camera), i420_size(width, height))

    def endpoint(self, name: str) -> str:
        """ZeroMQ address of a socket in the run dir: "stats", "batch" or "validate-N"."""
        return f"ipc://{self.socket_path(name)}"

    def socket_path(self, name: str) -> Path:
        return Path(self.run_dir) / f"{name}.sock"

    def initial_placement(self) -> Placement:
        """Cameras spread round-robin over the capture and validation workers, in file order;
        zmq:// cameras sharing a socket go to the capture worker of the first of them."""
        capture: dict[str, int] = {}
        for i, camera in enumerate(self.cameras):
            capture[camera.id] = self.shared_capture_worker(camera, capture)
            if capture[camera.id] < 0:
                capture[camera.id] = i % self.capture.workers
        return Placement(
            capture=capture,
            validate={c.id: i % self.validation.workers for i, c in enumerate(self.cameras)},
        )

    def shared_capture_worker(self, camera: Camera, placed: dict[str, int]) -> int:
        """The capture worker of a placed camera whose zmq:// socket `camera` shares; -1: none.
        One socket can only be bound by one process."""
        if not camera.url.lower().startswith("zmq://"):
            return -1
        from zstream.sources.zmq_hub import hub_key

        key = hub_key(camera.url)
        for other in self.cameras:
            if other.id in placed and other.id != camera.id and hub_key(other.url) == key:
                return placed[other.id]
        return -1


@dataclass(frozen=True)
class Placement:
    """Which capture worker runs each camera, and which validation worker checks it.

    Each camera sticks to one validation worker: that keeps its order and its per-camera
    state. The supervisor owns the placement and keeps it stable while cameras are added
    and removed live: a camera never moves because another one came or went.
    """

    capture: dict[str, int]
    validate: dict[str, int]

    def with_camera(self, camera_id: str, topology: Topology) -> Placement:
        """Place a new camera on the least loaded worker of each stage."""
        shared = topology.shared_capture_worker(topology.camera(camera_id), self.capture)
        return Placement(
            {
                **self.capture,
                camera_id: shared if shared >= 0 else _least_loaded(self.capture, topology.capture.workers),
            },
            {**self.validate, camera_id: _least_loaded(self.validate, topology.validation.workers)},
        )

    def without(self, camera_id: str) -> Placement:
        return Placement(
            {c: w for c, w in self.capture.items() if c != camera_id},
            {c: w for c, w in self.validate.items() if c != camera_id},
        )

    def to_json(self) -> str:
        return json.dumps({"capture": self.capture, "validate": self.validate})

    @classmethod
    def from_json(cls, text: str) -> Placement:
        data = json.loads(text)
        return cls(dict(data["capture"]), dict(data["validate"]))


def _least_loaded(assigned: dict[str, int], workers: int) -> int:
    load = [0] * workers
    for worker in assigned.values():
        load[worker] += 1
    return load.index(min(load))


def source_scheme(url: str) -> str:
    """The source protocol of a camera URL ('rtsp' for rtsps:// too), or the unknown scheme as written."""
    if V4L2_DEVICE.match(url):
        return "v4l2"
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and url[1:3] in (":\\", ":/")):
        return "file"
    if scheme in ("rtsps", "https"):
        return scheme[:-1]
    if scheme == "whep+https":
        return "whep"
    return scheme


def file_path(url: str) -> str:
    return urlsplit(url).path if url.lower().startswith("file://") else url


def load_topology(path: str | os.PathLike[str], with_live_changes: bool = True) -> Topology:
    """Read and validate a topology file, with the cameras changed live since (see `live`);
    raises TopologyError listing every problem."""
    source = Path(path)
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TopologyError([f"{source}: file not found"]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError([f"{source}: cannot read: {exc}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError([f"{source}: not valid TOML: {exc}"]) from exc
    except RecursionError as exc:  # tomllib recurses into nested arrays and inline tables
        raise TopologyError([f"{source}: not valid TOML: arrays or tables nested too deeply"]) from exc
    if with_live_changes:
        from zstream.live import merge_overlay, overlay_path, read_overlay

        raw = merge_overlay(raw, read_overlay(overlay_path(source)))
    return parse_topology(raw, base_dir=source.resolve().parent)


def parse_topology(raw: dict[str, Any], base_dir: Path) -> Topology:
    """Validate already-parsed TOML; relative paths are resolved against `base_dir`."""
    # Checks of values the schema cannot judge run on the raw file too, so that their
    # problems are reported together with the schema's instead of on the next attempt.
    problems = _duplicate_camera_ids(raw) + _semantic_problems(raw, base_dir)
    if raw.get("cameras") == []:
        problems.append("cameras: at least one camera is needed, got []")
    try:
        topology = _resolve_paths(Topology.model_validate(raw), base_dir)
    except ValidationError as exc:
        problems.extend(_format_error(error) for error in exc.errors())
    else:
        problems.extend(_exposure_problems(topology))
    if problems:
        raise TopologyError(problems)
    return topology


def _exposure_problems(topology: Topology) -> list[str]:
    """Endpoints beyond loopback need their protection configured (see zstream.security)."""
    from zstream.security import CLIENTS_DIR, SERVER_KEY, endpoint_is_local, is_loopback

    security, problems = topology.security, []
    for key, endpoint in (
        ("control.endpoint", topology.control.endpoint),
        ("tap.endpoint", topology.tap.endpoint),
    ):
        if not endpoint_is_local(endpoint) and not security.curve_keys:
            problems.append(
                f"{key}: {endpoint} is reachable beyond this machine: set security.curve_keys "
                "(`zstream keys DIR` makes them), or bind it to 127.0.0.1"
            )
    host = (split_host_port(topology.metrics.address) or ("", ""))[0]
    if topology.metrics.address and not is_loopback(host) and not security.metrics_token_file:
        problems.append(
            f"metrics.address: {topology.metrics.address} is reachable beyond this machine: set "
            "security.metrics_token_file (a file holding a token), or bind it to 127.0.0.1"
        )
    pushed = [(i, c.id, c.url) for i, c in enumerate(topology.cameras) if c.url.lower().startswith("zmq://")]
    if pushed:
        from zstream.sources.zmq_hub import camera_problems

        problems.extend(camera_problems(pushed, security.curve_keys))
    keys = Path(security.curve_keys)
    if security.curve_keys and not (keys / f"{SERVER_KEY}_secret").is_file():
        problems.append(
            f"security.curve_keys: no {SERVER_KEY}_secret in {keys} (make keys with `zstream keys {keys}`)"
        )
    elif security.curve_keys and not (keys / CLIENTS_DIR).is_dir():
        problems.append(f"security.curve_keys: no {CLIENTS_DIR}/ directory of allowed client keys in {keys}")
    if security.metrics_token_file and not Path(security.metrics_token_file).is_file():
        problems.append(f"security.metrics_token_file: file not found: {security.metrics_token_file}")
    return problems


def key_path(loc: tuple[Any, ...]) -> str:
    """('cameras', 3, 'fps') -> 'cameras[3].fps'."""
    text = ""
    for part in loc:
        part = mask_url(part) if isinstance(part, str) and "://" in part else part  # an unknown key
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _format_error(error: dict[str, Any]) -> str:
    loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key_path(loc)}: unknown key"
    if kind == "missing":
        return f"{key_path(loc)}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if "got" in message or kind.startswith("value_error"):
        return f"{key_path(loc)}: {message}"
    value = error.get("input")
    shown = _cut(mask_url(value)) if isinstance(value, str) and "://" in value else _shown(value)
    return f"{key_path(loc)}: {message}, got {shown}"


SHOWN_MAX = 200  # characters of a bad value quoted in a problem


def _shown(value: Any) -> str:
    """A bad value as quoted in a problem: any URL password in it masked, cut when very long."""
    return _cut(repr(_masked(value)))


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_MAX else f"{text[:SHOWN_MAX]}... ({len(text)} characters)"


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_url(value) if "://" in value else value
    if isinstance(value, list | tuple):
        return type(value)(_masked(item) for item in value)
    if isinstance(value, dict):
        return {_masked(key): _masked(item) for key, item in value.items()}
    return value


def _url_error(exc: ValueError) -> str:
    """Why urlsplit refused a URL, without its message (which quotes the netloc, password and all)."""
    return "bad IPv6 address" if "IPv6" in str(exc) else "invalid characters in the host"


def _duplicate_camera_ids(raw: dict[str, Any]) -> list[str]:
    cameras = raw.get("cameras")
    if not isinstance(cameras, list):
        return []
    seen: dict[str, int] = {}
    problems = []
    for index, camera in enumerate(cameras):
        camera_id = camera.get("id") if isinstance(camera, dict) else None
        if not isinstance(camera_id, str):
            continue
        if camera_id in seen:
            problems.append(
                f"cameras[{index}].id: duplicate id {camera_id!r} (also cameras[{seen[camera_id]}])"
            )
        else:
            seen[camera_id] = index
    return problems


def _resolve_paths(topology: Topology, base_dir: Path) -> Topology:
    """Make run_dir and file cameras absolute, so workers need not know where the file was."""
    cameras = [
        camera.model_copy(update={"url": str(_absolute(file_path(camera.url), base_dir))})
        if _is_file_url(camera.url)
        else camera
        for camera in topology.cameras
    ]
    security = topology.security
    paths = {
        key: str(_absolute(value, base_dir)) if value else value
        for key, value in (
            ("curve_keys", security.curve_keys),
            ("metrics_token_file", security.metrics_token_file),
        )
    }
    return topology.model_copy(
        update={
            "cameras": cameras,
            "run_dir": str(_absolute(topology.run_dir, base_dir)),
            "security": security.model_copy(update=paths),
        }
    )


def _semantic_problems(raw: dict[str, Any], base_dir: Path) -> list[str]:
    problems = []
    run_dir = raw.get("run_dir", Topology.model_fields["run_dir"].default)
    if isinstance(run_dir, str) and (problem := _path_problem(run_dir)):
        problems.append(f"run_dir: {problem}")
    elif isinstance(run_dir, str) and len(resolved := str(_absolute(run_dir, base_dir))) > MAX_RUN_DIR_LENGTH:
        problems.append(
            f"run_dir: {len(resolved)} characters is too long for Unix socket paths "
            f"(at most {MAX_RUN_DIR_LENGTH}), got {_shown(str(_absolute(_masked(run_dir), base_dir)))}"
        )
    cameras = raw.get("cameras")
    for index, camera in enumerate(cameras if isinstance(cameras, list) else []):
        if isinstance(camera, dict) and isinstance(camera.get("url"), str) and camera["url"]:
            problem = _camera_url_problem(camera["url"], str(camera.get("id", "")), base_dir)
            if problem:
                problems.append(f"cameras[{index}].url: {problem}")
            elif "transport" in camera and source_scheme(camera["url"]) not in RTP_SCHEMES:
                problems.append(
                    f"cameras[{index}].transport: only rtsp:// and onvif:// cameras have one, "
                    f"not {source_scheme(camera['url'])}"
                )
    return problems


def _path_problem(path: str) -> str | None:
    """What makes a path unusable before it is even looked up (the schema cannot tell)."""
    if "\0" in path:
        return "contains a NUL character"
    try:
        Path(path).expanduser()
    except RuntimeError:  # ~name of no such user
        return f"no such user's home directory: {path.partition('/')[0]!r}"
    return None


def _is_file_url(url: str) -> bool:
    """Whether a camera URL names a file; False for one too broken to say (reported on its own)."""
    try:
        return source_scheme(url) == "file"
    except ValueError:
        return False


def _absolute(path: str, base_dir: Path) -> Path:
    try:
        expanded = Path(path).expanduser()
    except RuntimeError:  # ~name of no such user: reported by _path_problem where it matters
        expanded = Path(path)
    return Path(os.path.normpath(expanded if expanded.is_absolute() else base_dir / expanded))


def _camera_url_problem(url: str, camera_id: str, base_dir: Path) -> str | None:
    if "\0" in url:
        return "contains a NUL character"
    try:
        scheme = source_scheme(url)
    except ValueError as exc:
        return f"not a valid URL ({_url_error(exc)})"
    if scheme not in SOURCE_SCHEMES:
        return f"unsupported scheme {scheme!r} in {mask_url(url)!r}; use one of {list(SOURCE_SCHEMES)}"
    if scheme == "file":
        if problem := _path_problem(file_path(url)):
            return problem
        path = _absolute(file_path(url), base_dir)
        # As shown: what a URL parser takes for a password ("a://u:pw@x", a Windows drive to us) masked.
        shown = _cut(str(_absolute(file_path(mask_url(url)), base_dir) if "@" in url else path))
        try:
            found = path.is_file()
        except OSError as exc:  # a name too long, a directory we may not search
            return f"cannot look up {shown}: {exc.strerror}"
        if not found:
            return f"file not found: {shown}"
    if scheme in NETWORK_SCHEMES:
        parts = urlsplit(url)
        if not parts.hostname:
            return f"no host in {mask_url(url)!r}"
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
        except ValueError:
            return f"port is not a number from 0 to 65535 in {mask_url(url)!r}"
    if scheme == "synthetic":
        from zstream.sources.synthetic import parse_synthetic_url

        try:
            parse_synthetic_url(url, camera_id)
        except SourceError as exc:
            return str(exc)
    if scheme == "zmq":
        from zstream.sources.zmq_hub import parse_zmq_url

        try:
            parse_zmq_url(url)
        except SourceError as exc:
            return str(exc)
    return None
