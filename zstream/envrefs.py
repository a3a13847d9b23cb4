"""`${NAME}` in a camera URL or the Redis URL: a secret taken from the environment when used.

Passwords need not be written in the topology: `rtsp://admin:${CAM7_PASSWORD}@10.0.0.7/main`
takes the password from the environment variable CAM7_PASSWORD (on Kubernetes, a Secret's key
given as an env var). The reference, not the value, is what the topology, the run dir's
files, status and logs hold; the value is put in (percent-encoded, as URLs carry a user's
password) only where the connection is made, in the process making it.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote

from zstream.errors import ZStreamError

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class MissingVariable(ZStreamError):
    """A `${NAME}` whose environment variable is not set."""


def references(text: str) -> list[str]:
    """The variable names `text` refers to, in order."""
    return REFERENCE.findall(text)


def missing(text: str) -> list[str]:
    return [name for name in references(text) if name not in os.environ]


def expand(text: str) -> str:
    """`text` with every `${NAME}` replaced by the variable's value, percent-encoded."""
    absent = missing(text)
    if absent:
        raise MissingVariable(f"environment variable {', '.join(absent)} is not set")
    return REFERENCE.sub(lambda match: quote(os.environ[match[1]], safe=""), text)
