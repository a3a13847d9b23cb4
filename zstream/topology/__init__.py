"""The topology file: one TOML file describes a whole pipeline.

- `schema`: every section, its defaults and descriptions, and what workers derive from it
- `checks`: what the schema cannot judge (URLs, paths, exposed endpoints), with key paths
- `placement`: which worker of each stage runs each camera
- `overlay`: the cameras changed live, kept beside the file
- `loading`: `load_topology` and `parse_topology`, reporting every problem at once

Every model forbids unknown keys, and loading reports every problem at once, each with its key
path (`cameras[3].fps: ...`), so an operator fixes a file in one pass instead of one error per
restart.
"""

from zstream.topology.checks import key_path
from zstream.topology.loading import load_topology, parse_topology
from zstream.topology.placement import Placement, initial_placement
from zstream.topology.schema import (
    SOURCE_SCHEMES,
    Camera,
    DropPolicy,
    RedisSettings,
    Topology,
    file_path,
    source_scheme,
)

__all__ = [
    "SOURCE_SCHEMES",
    "Camera",
    "DropPolicy",
    "Placement",
    "RedisSettings",
    "Topology",
    "file_path",
    "initial_placement",
    "key_path",
    "load_topology",
    "parse_topology",
    "source_scheme",
]
