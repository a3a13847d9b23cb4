"""HOST:PORT addresses and tcp://HOST:PORT endpoints, split by one rule for every reader
(the topology's checks, security, preflight, metrics)."""

from __future__ import annotations


def split_host_port(address: str) -> tuple[str, str] | None:
    """(host, port) of "host:port", both as written: an IPv6 host keeps its brackets
    ("[::1]:9108"), the port may be "*" or not a number at all; host "" for ":9108".
    None when there is no ":" at all."""
    host, sep, port = address.rpartition(":")
    return (host, port) if sep else None


def endpoint_host_port(endpoint: str) -> tuple[str, str] | None:
    """(host, port) of a tcp://HOST:PORT ZeroMQ endpoint, as split_host_port gives them."""
    return split_host_port(endpoint.removeprefix("tcp://"))


def is_port(text: str) -> bool:
    """0 to 65535 in ASCII digits ("²".isdigit() is true, and int() refuses it)."""
    return text.isascii() and text.isdigit() and int(text) < 65536


def unbracket(host: str) -> str:
    """An IPv6 host without the brackets it is written with in an address."""
    return host.strip("[]")
