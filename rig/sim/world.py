"""The twin's world state, shared by the emulator threads and the simulated camera.

Emulators change it as motions complete; the simulated camera reads a consistent snapshot.
Every mutation takes the lock, so a frame never sees half a motion.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Literal

from rig.sim.target_scene import TargetScene

Side = Literal["obverse", "reverse"]


def other_side(side: Side) -> Side:
    """The opposite face."""
    return "reverse" if side == "obverse" else "obverse"


@dataclass(frozen=True)
class CoinPlacement:
    """A coin lying somewhere: which coin, which side up, its rotation on the surface."""

    coin_id: str
    side_up: Side
    spin_deg: float = 0.0


@dataclass(frozen=True)
class LightState:
    """One lit channel as the twin sees it."""

    intensity: float
    azimuth_deg: float | None
    elevation_deg: float | None
    diffuse: bool


@dataclass(frozen=True)
class WorldSnapshot:
    """A consistent copy of the world at one instant."""

    turntable_deg: float
    on_turntable: CoinPlacement | None
    tray: dict[int, CoinPlacement]
    arm_xyz_mm: tuple[float, float, float]
    held: CoinPlacement | None
    lights: dict[str, LightState]
    tilt_deg: float
    flip_chute: CoinPlacement | None
    target: TargetScene | None = None  # a calibration target, seen instead of any coin
    pads: dict[str, CoinPlacement] = field(default_factory=dict)  # staging pads beside the table


@dataclass
class _State:
    turntable_deg: float = 0.0
    on_turntable: CoinPlacement | None = None
    tray: dict[int, CoinPlacement] = field(default_factory=dict)
    arm_xyz_mm: tuple[float, float, float] = (0.0, 200.0, 150.0)
    held: CoinPlacement | None = None
    lights: dict[str, LightState] = field(default_factory=dict)
    tilt_deg: float = 0.0
    flip_chute: CoinPlacement | None = None
    target: TargetScene | None = None
    pads: dict[str, CoinPlacement] = field(default_factory=dict)


class World:
    """Thread-safe world state of the simulated rig."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._state = _State()
        self._collisions: list[str] = []

    def collisions(self) -> list[str]:
        """Every time a coin was put down where another one lay (none, on a sound schedule)."""
        with self._lock:
            return list(self._collisions)

    def snapshot(self) -> WorldSnapshot:
        """A consistent copy of everything."""
        with self._lock:
            s = self._state
            return WorldSnapshot(
                turntable_deg=s.turntable_deg,
                on_turntable=s.on_turntable,
                tray=dict(s.tray),
                arm_xyz_mm=s.arm_xyz_mm,
                held=s.held,
                lights=dict(s.lights),
                tilt_deg=s.tilt_deg,
                flip_chute=s.flip_chute,
                target=s.target,
                pads=dict(s.pads),
            )

    # turntable and tilt
    def set_turntable_deg(self, angle_deg: float) -> None:
        """Record the turntable's absolute angle."""
        with self._lock:
            self._state.turntable_deg = float(angle_deg)

    def set_tilt_deg(self, tilt_deg: float) -> None:
        """Record the camera tilt."""
        with self._lock:
            self._state.tilt_deg = float(tilt_deg)

    def place_on_turntable(self, placement: CoinPlacement | None) -> None:
        """Put a coin directly on the turntable (operator placement), or clear it."""
        with self._lock:
            self._state.on_turntable = placement

    def place_target(self, target: TargetScene | None) -> None:
        """Put a calibration target in view (the operator's job), or take it away."""
        with self._lock:
            self._state.target = target

    # tray
    def load_tray(self, slots: dict[int, CoinPlacement]) -> None:
        """Fill the tray (slot → coin)."""
        with self._lock:
            self._state.tray = dict(slots)

    # lights
    def set_light(self, name: str, light: LightState) -> None:
        """Record one channel's state."""
        with self._lock:
            self._state.lights[name] = light

    def set_light_intensity(self, name: str, intensity: float) -> None:
        """Change one known channel's intensity."""
        with self._lock:
            current = self._state.lights.get(name)
            if current is None:
                raise KeyError(f"unknown light channel {name!r}")
            self._state.lights[name] = replace(current, intensity=float(intensity))

    # arm and suction
    def set_arm_xyz(self, xyz_mm: tuple[float, float, float]) -> None:
        """Record the arm's tool position."""
        with self._lock:
            self._state.arm_xyz_mm = xyz_mm

    def take(self, where: str, slot: int | str | None = None) -> CoinPlacement | None:
        """Suction picks whatever lies at `where`; None if empty.

        `where` is "turntable", "chute", "tray" (`slot`: its number) or "pad" (`slot`: its name).
        """
        with self._lock:
            s = self._state
            if s.held is not None:
                return s.held
            coin: CoinPlacement | None
            if where == "turntable":
                coin, s.on_turntable = s.on_turntable, None
                if coin is not None:
                    # the coin keeps its orientation relative to the world, not the turntable
                    coin = replace(coin, spin_deg=coin.spin_deg + s.turntable_deg)
            elif where == "tray" and isinstance(slot, int):
                coin = s.tray.pop(slot, None)
            elif where == "pad" and isinstance(slot, str):
                coin = s.pads.pop(slot, None)
            elif where == "chute":
                coin, s.flip_chute = s.flip_chute, None
            else:
                coin = None
            s.held = coin
            return coin

    def release(self, where: str, slot: int | str | None = None) -> CoinPlacement | None:
        """Suction releases the held coin at `where` (as `take`); the chute turns it over.

        Returns the coin. A place holds one coin: releasing onto an occupied one is a collision
        (two coins on the turntable, say); the twin notes it in `collisions()` and keeps the new
        coin, as it always has, so a test can tell that a schedule broke its own invariant.
        """
        with self._lock:
            s = self._state
            coin, s.held = s.held, None
            if coin is None:
                return None
            occupied = {
                "turntable": s.on_turntable,
                "tray": s.tray.get(slot) if isinstance(slot, int) else None,
                "pad": s.pads.get(slot) if isinstance(slot, str) else None,
            }.get(where)
            if occupied is not None:
                place = where if slot is None else f"{where} {slot}"
                self._collisions.append(
                    f"{coin.coin_id} put on {place}, which held {occupied.coin_id}"
                )
            if where == "turntable":
                s.on_turntable = replace(coin, spin_deg=coin.spin_deg - s.turntable_deg)
            elif where == "tray" and isinstance(slot, int):
                s.tray[slot] = coin
            elif where == "pad" and isinstance(slot, str):
                s.pads[slot] = coin
            elif where == "chute":
                s.flip_chute = replace(coin, side_up=other_side(coin.side_up))
            # released anywhere else, the coin falls to the floor: the twin forgets it
            return coin
