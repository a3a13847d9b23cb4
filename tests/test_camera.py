"""The camera state machine: legal transitions only, and the stall watchdog."""

from __future__ import annotations

import time

import pytest

from zstream.camera import TRANSITIONS, CameraLifecycle, CameraState, IllegalTransition

S = CameraState


def test_every_state_is_in_the_table_and_stopped_is_final() -> None:
    assert set(TRANSITIONS) == set(CameraState)
    assert TRANSITIONS[S.STOPPED] == frozenset()
    assert all(S.STOPPED in TRANSITIONS[state] for state in CameraState if state is not S.STOPPED)


def test_illegal_transitions_are_refused() -> None:
    camera = CameraLifecycle("cam", "rtsp://host/x")
    with pytest.raises(IllegalTransition, match="connecting -> ended"):
        camera.change(S.ENDED)
    camera.change(S.FAILED, "401")
    with pytest.raises(IllegalTransition, match="failed -> streaming"):
        camera.change(S.STREAMING)  # a failed camera must connect again first
    assert camera.snapshot() == ("failed", "401")


def test_a_change_is_a_change_and_repeating_it_is_not() -> None:
    camera = CameraLifecycle("cam", "rtsp://host/x")
    assert camera.state is S.CONNECTING
    assert camera.change(S.STREAMING) and camera.state is S.STREAMING
    assert not camera.change(S.STREAMING)
    assert camera.change(S.STREAMING, "frame too large")  # same state, new reason


def test_stall_watchdog_flags_silence_and_frames_clear_it() -> None:
    camera = CameraLifecycle("cam", "rtsp://host/x")
    assert not camera.check_stall(0.05)  # not streaming yet: nothing to stall
    camera.change(S.STREAMING)
    assert not camera.check_stall(0.05)
    time.sleep(0.08)
    assert camera.check_stall(0.05)
    assert camera.snapshot()[0] == "stalled" and "no frame for" in camera.snapshot()[1]
    assert not camera.check_stall(0.05)  # one stall, counted once
    camera.frame_arrived()
    assert camera.snapshot() == ("streaming", "frames again")
