"""Masking of credentials: every log line, error and status goes through mask_url."""

from __future__ import annotations

import pytest

from zstream.errors import mask_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/s", "rtsp://admin:****@10.0.0.5:554/s"),
        (
            "onvif://admin:hunter2@cam:99999/main",
            "onvif://admin:****@cam:99999/main",
        ),  # bad port: still masked
        ("rtsp://admin:hunter2@[::1]:8554/s", "rtsp://admin:****@[::1]:8554/s"),
        ("rtsp://admin:p%40ss@cam/s", "rtsp://admin:****@cam/s"),
        ("http://cam/video.mjpg", "http://cam/video.mjpg"),
    ],
)
def test_passwords_are_masked_whatever_else_the_url_holds(url: str, shown: str) -> None:
    assert mask_url(url) == shown
