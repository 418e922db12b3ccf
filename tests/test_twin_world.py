"""The twin's world state is safe to share between emulator threads and the camera."""

from __future__ import annotations

import itertools
import sys
import threading
from collections import Counter
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from rig.sim.world import CoinPlacement, LightState, World, WorldSnapshot

COINS = ("SIM-0000", "SIM-0001", "SIM-0002")


def coins_in(snapshot: WorldSnapshot) -> Counter[str]:
    """Every coin the snapshot shows, wherever it lies (a coin in two places counts twice)."""
    places = [snapshot.on_turntable, snapshot.held, snapshot.flip_chute, *snapshot.tray.values()]
    return Counter(p.coin_id for p in places if p is not None)


def test_snapshots_never_see_a_coin_in_two_places_or_none() -> None:
    """An arm thread moves coins around while motion and light threads write and a camera reads."""
    world = World()
    world.load_tray({i: CoinPlacement(c, "obverse") for i, c in enumerate(COINS)})
    world.set_light("north", LightState(0.0, 90.0, 20.0, False))
    stop = threading.Event()
    seen: list[Counter[str]] = []
    errors: list[BaseException] = []

    def guarded(work: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                work()
            except BaseException as error:  # reported by the main thread
                errors.append(error)

        return threading.Thread(target=run)

    def arm() -> None:
        # tray → turntable → chute (flip) → turntable → tray, slot after slot, until the
        # cameras have looked often enough while coins were in motion
        for rounds, slot in enumerate(itertools.cycle(range(len(COINS)))):
            if (rounds > 300 and len(seen) > 2000) or rounds > 200_000:
                break
            world.take("tray", slot)
            world.release("turntable")
            world.take("turntable")
            world.release("chute")
            world.take("chute")
            world.release("turntable")
            world.take("turntable")
            world.release("tray", slot)
        stop.set()

    def motion() -> None:
        angle = 0.0
        while not stop.is_set():
            angle += 7.5
            world.set_turntable_deg(angle)
            world.set_light_intensity("north", (angle % 100) / 100)

    def camera() -> None:
        while not stop.is_set():
            seen.append(coins_in(world.snapshot()))

    threads = [guarded(motion), guarded(camera), guarded(camera), guarded(arm)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so a missing lock shows (it does)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    assert len(seen) > 2000
    assert all(counts == Counter(COINS) for counts in seen)


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["take", "release"]),
        st.sampled_from(["tray", "turntable", "chute"]),
        st.integers(0, len(COINS) - 1),
        st.floats(-720, 720, allow_nan=False),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(OPERATIONS)
def test_coins_are_conserved_and_flips_only_in_the_chute(
    operations: list[tuple[str, str, int, float]],
) -> None:
    """Whatever the arm does (onto free places), no coin appears, vanishes or flips elsewhere."""
    world = World()
    world.load_tray({i: CoinPlacement(c, "obverse") for i, c in enumerate(COINS)})
    flips = Counter[str]()
    for action, where, slot, angle in operations:
        world.set_turntable_deg(angle)
        before = world.snapshot()
        if action == "take":
            world.take(where, slot)
            continue
        occupied = {
            "tray": slot in before.tray,
            "turntable": before.on_turntable is not None,
            "chute": before.flip_chute is not None,
        }[where]
        if before.held is None or occupied:
            continue  # the capture layer never drops a coin onto another
        released = world.release(where, slot)
        assert released == before.held
        if where == "chute":
            flips[released.coin_id] += 1
    after = world.snapshot()
    assert coins_in(after) == Counter(COINS)
    sides = {
        p.coin_id: p.side_up
        for p in [after.on_turntable, after.held, after.flip_chute, *after.tray.values()]
        if p
    }
    for coin in COINS:
        # a coin taken out of the chute keeps the face the chute turned up
        expected_flips = flips[coin] % 2
        assert (sides[coin] == "reverse") == bool(expected_flips)
