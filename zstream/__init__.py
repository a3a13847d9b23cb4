"""zstream: ingest video from traffic cameras into Redis Streams for ML consumers.

The public API is what ML code needs to read the pipeline's output, and what tools need
to load a topology; everything else is internal to the pipeline's processes.
"""

from zstream.consumer import Batch, BatchConsumer, ConsumerError, Frame
from zstream.errors import PreflightError, SourceError, TopologyError, WireError, ZStreamError
from zstream.topology import Topology, load_topology

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BatchConsumer",
    "ConsumerError",
    "Frame",
    "PreflightError",
    "SourceError",
    "Topology",
    "TopologyError",
    "WireError",
    "ZStreamError",
    "__version__",
    "load_topology",
]
