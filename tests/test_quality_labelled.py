"""The issue's accuracy targets on the labelled set (tests/quality_set.py), through CameraQuality.

Each degradation class is detected (its reason reported) in >= 99 % of its frames at the
strengths the set declares "must detect", judged by a camera that saw the view's clean frame
first (quality_set.norm_camera: its norm catches blur an absolute limit cannot tell from a
soft scene); <= 1 % of clean frames are rejected, counting the
frames of live sequences (fresh sensor noise every frame, fed for longer than frozen_after_s)
as clean. The set is generated once per module (~40 s on two loaded cores); only the metrics and
verdicts are kept, never the frames.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests import quality_set as qs
from zstream.quality import REASONS, Thresholds

MUST_CLASSES = sorted({d.case for d in qs.DEGRADATIONS if d.must_detect} | {"frozen"})
DETECT_TARGET, CLEAN_TARGET = 0.99, 0.01


@pytest.fixture(scope="module")
def seen() -> list[qs.Observation[Any]]:
    return qs.observe({"ours": qs.norm_camera})["ours"]


@pytest.fixture(scope="module")
def rates(seen: list[qs.Observation[Any]]) -> dict[tuple[str, bool], qs.Rate]:
    table = {(r.case, r.must_detect): r for r in qs.rates(seen, lambda a: a.reasons)}
    print(
        "\n"
        + "\n".join(
            f"{c:18} {'must' if m else 'info'} {r.hits:5}/{r.frames:<5} {r.rate:6.1%}"
            for (c, m), r in sorted(table.items())
        )
    )
    return table


def _misses(seen: list[qs.Observation[Any]], case: str, clean: bool) -> str:
    """The first few offending frames with their metrics, for the failure message."""
    bad = [
        o
        for o in seen
        if o.case == case
        and o.must_detect
        and (bool(o.value.reasons) if clean else o.reason not in o.value.reasons)
    ]
    return "\n".join(f"{o.view} {o.strength}: {o.value.reasons} {o.value.metrics}" for o in bad[:5])


@pytest.mark.parametrize("case", MUST_CLASSES)
def test_each_class_is_detected_at_must_detect_strengths(
    seen: list[qs.Observation[Any]], rates: dict[tuple[str, bool], qs.Rate], case: str
) -> None:
    rate = rates[(case, True)]
    assert rate.frames >= 60, rate  # the set must not silently shrink
    assert rate.rate >= DETECT_TARGET, f"{rate}\n{_misses(seen, case, clean=False)}"


@pytest.mark.parametrize("case", ["clean", "live"])
def test_clean_frames_are_rarely_rejected(
    seen: list[qs.Observation[Any]], rates: dict[tuple[str, bool], qs.Rate], case: str
) -> None:
    rate = rates[(case, True)]
    assert rate.frames >= 100, rate
    assert rate.rate <= CLEAN_TARGET, f"{rate}\n{_misses(seen, case, clean=True)}"


def test_live_cameras_are_never_frozen(seen: list[qs.Observation[Any]]) -> None:
    """An empty road at night, a static view: nothing moves but the sensor noise."""
    live = [o for o in seen if o.case == "live"]
    assert {o.strength for o in live} >= {"night road, 0 vehicles", "static photo-night", "static traffic"}
    assert max(o.value.metrics.frozen_s for o in live) < Thresholds().frozen_after_s / 2
    assert not [o for o in live if "frozen" in o.value.reasons]


def test_the_set_covers_what_the_issue_asks_for(seen: list[qs.Observation[Any]]) -> None:
    clean_kinds = Counter(o.strength for o in seen if o.case == "clean")
    assert set(clean_kinds) == {"photo", "photo-night", "traffic", "traffic-night"}
    assert {o.view.split("-")[-2] for o in seen if o.case == "clean"} == {"720p", "1080p"}
    blanks = {o.strength for o in seen if o.case == "blank"}
    assert {"black", "grey", "capped lens", "covered lens"} <= blanks and any(
        b.startswith("solid") for b in blanks
    )
    assert {o.strength for o in seen if o.case == "frozen" and o.must_detect} == {
        "exact repeat",
        "re-encoded",
    }
    assert {o.reason for o in seen} - {None} == set(REASONS)


def test_reasons_come_in_a_fixed_order(seen: list[qs.Observation[Any]]) -> None:
    for o in seen:
        assert list(o.value.reasons) == [r for r in REASONS if r in o.value.reasons]
