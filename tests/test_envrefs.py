"""`${NAME}` references to the environment in URLs: filled in where used, never stored."""

from __future__ import annotations

import pytest

from zstream.envrefs import MissingVariable, expand, missing, references
from zstream.errors import mask_url


def test_references_are_filled_in_percent_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_PASSWORD", "p@ss:w/rd%")
    url = "rtsp://admin:${CAM_PASSWORD}@10.0.0.7/main"
    assert references(url) == ["CAM_PASSWORD"]
    assert expand(url) == "rtsp://admin:p%40ss%3Aw%2Frd%25@10.0.0.7/main"
    assert "p@ss" not in mask_url(expand(url)) and "p%40ss" not in mask_url(expand(url))
    assert expand("synthetic://traffic") == "synthetic://traffic"


def test_an_unset_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    assert missing("redis://:${NOT_SET_HERE}@host:6379/0") == ["NOT_SET_HERE"]
    with pytest.raises(MissingVariable, match="environment variable NOT_SET_HERE is not set"):
        expand("redis://:${NOT_SET_HERE}@host:6379/0")
