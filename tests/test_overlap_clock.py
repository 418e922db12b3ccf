"""The twin's ledger with parallel actors (rig.sim.clock): the makespan between sync points."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.sim.clock import MAIN, SimClock


def test_one_actor_sums_every_action_as_before() -> None:
    clock = SimClock()
    for device, seconds in (("grbl", 1.0), ("arm", 2.0), ("camera", 0.5)):
        clock.record(device, "x", seconds)
    assert clock.physical_duration_s() == pytest.approx(3.5)
    assert clock.physical_duration_s("arm") == pytest.approx(2.0)
    starts = [entry.start_s for entry in clock.entries()]
    assert starts == pytest.approx([0.0, 1.0, 3.0])


def test_an_assigned_device_runs_beside_main_until_sync() -> None:
    clock = SimClock()
    clock.record("grbl", "home", 1.0)
    clock.assign("arm", "arm")  # starts at 1.0, when what came before is over
    clock.record("arm", "fetch", 5.0)  # 1 → 6
    clock.record("grbl", "move", 2.0)  # 1 → 3, beside the arm
    assert clock.physical_duration_s() == pytest.approx(6.0)
    assert clock.sync() == pytest.approx(6.0)
    clock.record("grbl", "move", 1.0)  # the shots waited for the arm: 6 → 7
    assert clock.physical_duration_s() == pytest.approx(7.0)
    clock.assign("arm", None)
    clock.record("arm", "park", 1.0)  # back on MAIN: after everything, 7 → 8
    assert clock.physical_duration_s() == pytest.approx(8.0)
    fetch = next(e for e in clock.entries() if e.action == "fetch")
    assert (fetch.actor, fetch.start_s, fetch.end_s) == ("arm", 1.0, 6.0)
    # busy time per device is unchanged by the timelines
    assert clock.physical_duration_s("grbl") == pytest.approx(4.0)


_ACTION = st.tuples(st.sampled_from(["grbl", "camera", "arm"]), st.floats(0.0, 10.0))
_PHASE = st.lists(_ACTION, max_size=8)


@settings(max_examples=200, deadline=None)
@given(phases=st.lists(_PHASE, min_size=1, max_size=6))
def test_makespan_is_the_sum_over_phases_of_the_slowest_actor(
    phases: list[list[tuple[str, float]]],
) -> None:
    clock = SimClock()
    clock.assign("arm", "arm")
    expected = 0.0
    for phase in phases:
        per_actor = {MAIN: 0.0, "arm": 0.0}
        for device, seconds in phase:
            clock.record(device, "x", seconds)
            per_actor["arm" if device == "arm" else MAIN] += seconds
        expected += max(per_actor.values())
        clock.sync()
    assert clock.physical_duration_s() == pytest.approx(expected)
    # one actor never does two things at once: its actions follow each other
    for actor in (MAIN, "arm"):
        mine = [e for e in clock.entries() if e.actor == actor]
        for before, after in itertools.pairwise(mine):
            assert after.start_s >= before.end_s - 1e-9


def test_reset_forgets_the_times_too() -> None:
    clock = SimClock()
    clock.assign("arm", "arm")
    clock.record("arm", "x", 3.0)
    clock.reset()
    assert clock.physical_duration_s() == 0.0 and clock.entries() == []
    clock.record("grbl", "x", 1.0)
    assert clock.physical_duration_s() == pytest.approx(1.0)
