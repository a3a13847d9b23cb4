"""zstream's exceptions.

    ZStreamError
    ├── TopologyError      the topology file is malformed (carries every error with its key path)
    ├── PreflightError     the machine cannot run this topology (shared memory, Redis, run dir)
    ├── SourceError        a camera cannot be opened or read (message has the URL, password masked)
    │   └── SourceRejected   it answered but refuses: credentials, not found, unsupported codec
    ├── RingError          a shared-memory ring is missing, too small, or was handed a bad reference
    └── WireError          a message is malformed or of another protocol version

Errors of the libraries below (PyAV, zmq, redis) are converted where they cross into
zstream, with `raise ... from exc`, so callers catch one family.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


class ZStreamError(Exception):
    """Root of everything zstream raises on purpose."""


class TopologyError(ZStreamError):
    """The topology is invalid; `problems` lists every error as 'key.path: message'."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class PreflightError(ZStreamError):
    """The topology is valid but this machine cannot run it as configured."""


class SourceError(ZStreamError):
    """A camera stream could not be opened or read."""


class SourceRejected(SourceError):
    """The camera answered and refused (wrong password, no such stream, a codec we cannot decode):
    retrying at once would only hammer it, so the camera fails and retries slowly."""


class RingError(ZStreamError):
    """Shared-memory ring problem: missing segment, oversized frame, bad slot reference."""


class WireError(ZStreamError):
    """A message could not be decoded: wrong version, unknown type, bad fields."""


def mask_url(url: str) -> str:
    """The URL with its password replaced by '****', for logs, errors and status."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    # The host and port as written: parsing the port would raise on a bad one (":99999").
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:****@{host}"))
