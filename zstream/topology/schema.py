"""The topology file's schema: every section and its defaults, and what the workers derive
from it. Every model forbids unknown keys; each field carries a description.

Loading (`zstream.topology.loading`) reports every problem at once with its key path; the checks
the schema cannot make are in `zstream.topology.checks`.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from zstream.core.address import is_port, split_host_port
from zstream.core.planes import i420_size
from zstream.core.ring import ring_segment_size
from zstream.errors import mask_url
from zstream.quality import Thresholds
from zstream.sources.synthetic import parse_synthetic_url

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
            spec = parse_synthetic_url(camera.url, camera.id)
            return (spec.width, spec.height)
        return self.capture.max_size

    def ring_bytes(self, camera: Camera) -> int:
        width, height = self.frame_capacity(camera)
        return ring_segment_size(self.ring_slots_for(camera), i420_size(width, height))

    def endpoint(self, name: str) -> str:
        """ZeroMQ address of a socket in the run dir: "stats", "batch" or "validate-N"."""
        return f"ipc://{self.socket_path(name)}"

    def socket_path(self, name: str) -> Path:
        return Path(self.run_dir) / f"{name}.sock"


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
