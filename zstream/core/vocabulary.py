"""The words zstream counts and reports with, declared once.

Their values are the names operators see: counter names in status.json and `/metrics`,
`stage:reason` of every dropped frame, camera and worker states. They are StrEnums, so each
member is also the plain string it has always been (in dict keys, JSON, msgpack, ledgers and
Prometheus labels alike); changing a value changes what dashboards and scripts read.
"""

from __future__ import annotations

import enum


class Metric(enum.StrEnum):
    """The name of a counter: a worker counts (metric, camera, reason) (see zstream.stats.Counters)."""

    RECEIVED = "received"  # frames the camera sent, before the fps cap
    CAPTURED = "captured"  # given a seq: written into the camera's ring, or passed over (output rate)
    VALIDATED = "validated"  # a verdict left validation
    REJECTED = "rejected"  # of them, frames that failed quality control
    FAILED = "failed"  # quality failures (reason: each failure of a rejected frame)
    WRITTEN = "written"  # frames in batches Redis took
    QC_WRITTEN = "qc_written"  # QC entries Redis took
    SKIPPED = "skipped"  # left out by design (reason: a SkipReason)
    DROPPED = "dropped"  # lost on the way (reason: "stage:why", see Stage and DropReason)
    RECONNECTS = "reconnects"  # attempts
    RECONNECTED = "reconnected"  # successes: the stream delivered frames again
    STALLS = "stalls"
    CORRUPT_PACKETS = "corrupt_packets"
    BATCHES_WRITTEN = "batches_written"
    BATCHES_SHED = "batches_shed"
    BATCH_FRAMES = "batch_frames"  # histogram of frames per batch (reason: the bucket)
    REDIS_ERRORS = "redis_errors"
    LATENCY_MS = "latency_ms"  # histogram of capture-to-Redis latency (reason: the bucket)
    LATENCY_MS_SUM = "latency_ms_sum"
    WRITTEN_SPAN_US = "written_span_us"  # stream time the written frames cover (fps_out)


class Stage(enum.StrEnum):
    """Where a frame was dropped: the `stage` of `stage:reason`."""

    CAPTURE = "capture"
    INGEST = "ingest"  # zmq:// cameras: what a pushing client sent that never reached the ring
    VALIDATE = "validate"
    BATCH = "batch"
    TAP = "tap"
    SUPERVISOR = "supervisor"


class DropReason(enum.StrEnum):
    """Why a frame was dropped: the `reason` of `stage:reason` (README, "Drop policies")."""

    # capture
    QUEUE_FULL = "queue_full"
    RING_FULL = "ring_full"
    TOO_LARGE = "too_large"
    STOPPING = "stopping"
    # validate and batch
    OVERWRITTEN = "overwritten"
    BATCHER_FULL = "batcher_full"
    BAD_MESSAGE = "bad_message"
    BAD_REFERENCE = "bad_reference"
    UNKNOWN_CAMERA = "unknown_camera"
    OUT_OF_ORDER = "out_of_order"
    REDIS_BACKLOG = "redis_backlog"
    QC_BACKLOG = "qc_backlog"
    SHUTDOWN_UNSENT = "shutdown_unsent"
    SHUTDOWN_UNSENT_QC = "shutdown_unsent_qc"
    # ingest (zmq:// cameras)
    BAD_SHAPE = "bad_shape"
    UNDECODABLE = "undecodable"
    UNKNOWN_SENDER = "unknown_sender"
    SUPERSEDED = "superseded"
    # tap
    SUBSCRIBER_FULL = "subscriber_full"
    SUBSCRIBING = "subscribing"
    BUSY = "busy"
    ERROR = "error"


class SkipReason(enum.StrEnum):
    """Frames left out by design, counted as skipped rather than lost."""

    OUTPUT_RATE = "output_rate"  # validated, but over the camera's output_fps
    FPS_CAP = "fps_cap"  # over the camera's fps cap, never decoded or converted


STARTING = "starting"  # what status shows for a camera before its capture worker reports it


class CameraState(enum.Enum):
    """A camera's state (the machine is zstream.camera's)."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"  # connected, but no frame for the stall timeout
    RECONNECTING = "reconnecting"  # waiting after a network error, with back-off
    FAILED = "failed"  # the camera refused (credentials, not found, unsupported): slow retry
    ENDED = "ended"  # a finite source (file, recording) is done
    STOPPED = "stopped"


class WorkerState(enum.Enum):
    """A worker process's state, as the supervisor keeps it."""

    RUNNING = "running"
    BACKOFF = "backoff"  # died; waiting to be restarted
    STOPPED = "stopped"
