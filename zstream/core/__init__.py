"""The leaf layer: what every part of zstream shares, importing nothing of zstream above it
(only `zstream.errors`, the bottom of all).

- `planes`: the I420 frame layout (plane sizes, splitting a buffer into Y, U and V)
- `backoff`: the one jittered exponential back-off every retrying part uses
- `address`: HOST:PORT and tcp://HOST:PORT, split once for every reader of them
- `files`: private files written atomically
- `intake`: how a stage takes messages from its internal sockets (`MessageIntake`)
- `ring`: the shared-memory frame rings
- `wire`: every message format, ZeroMQ and Redis, versioned
"""
