"""Putting calibration targets in view: the operator's job, or the twin's in simulation.

A procedure says what it needs (`Placement`); a `Stager` makes it so and returns when done. On
a real rig that is a person at the terminal; on the simulation backend the twin places the
target in its world, so the same procedure runs unchanged against emulated hardware.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from capture.calibration.models import BoardSpec
from rig.devices import Rig

if TYPE_CHECKING:  # the twin is imported only when the rig is simulated
    from rig.sim.target_scene import TwinRig
    from rig.sim.world import World

TargetKind = Literal["charuco", "marker", "sphere", "card", "none"]


@dataclass(frozen=True)
class Placement:
    """What to put in view, and where (positions are millimetres on the platter from its axis)."""

    target: TargetKind
    board: BoardSpec | None = None
    wedge_deg: float = 0.0
    position_mm: tuple[float, float] = (0.0, 0.0)
    marker_id: int = 7
    marker_mm: float = 8.0
    sphere_mm: float = 16.0

    @property
    def message(self) -> str:
        """What to tell the operator."""
        x, y = self.position_mm
        where = f"about ({x:g}, {y:g}) mm from the turntable centre"
        if self.target == "charuco":
            tilt = "flat" if self.wedge_deg == 0 else f"on the {self.wedge_deg:g}° wedge"
            return f"place the ChArUco board {tilt}, its centre {where}"
        if self.target == "marker":
            return (
                f"place ArUco marker {self.marker_id} ({self.marker_mm:g} mm) flat on the "
                f"turntable, {where}, its top edge along the turntable's zero mark"
            )
        if self.target == "sphere":
            return f"place the {self.sphere_mm:g} mm chrome sphere on the turntable, {where}"
        if self.target == "card":
            return "hold the grey card flat at the coin plane, filling the view"
        return "clear the turntable"


Stager = Callable[[Placement], None]


def stager_for(rig: Rig, twin_rig: TwinRig | None = None) -> Stager | None:
    """The twin when simulated, a person at a terminal otherwise, or None (nobody to ask)."""
    if rig.twin is not None:
        return twin_stager(rig.twin.world, twin_rig)
    if not sys.stdin.isatty():
        return None

    def person(placement: Placement) -> None:
        import typer

        typer.prompt(f"{placement.message}, then press Enter", default="", show_default=False)

    return person


def twin_stager(world: World, twin_rig: TwinRig | None = None) -> Stager:
    """Place targets in the twin's world; `twin_rig` overrides its hidden rig geometry."""
    from rig.sim import target_scene as targets

    geometry = twin_rig if twin_rig is not None else targets.TwinRig()

    def place(placement: Placement) -> None:
        target: targets.Target
        if placement.target == "none":
            world.place_target(None)
            return
        if placement.target == "charuco":
            board = placement.board or BoardSpec()
            target = targets.CharucoBoard(
                columns=board.columns,
                rows=board.rows,
                square_mm=board.square_mm,
                marker_mm=board.marker_mm,
                dictionary=board.dictionary,
                wedge_deg=placement.wedge_deg,
                position_mm=placement.position_mm,
                # the wedge lifts the board's centre by half its rise
                lift_mm=0.5 * board.rows * board.square_mm * _sin_deg(placement.wedge_deg),
            )
        elif placement.target == "marker":
            target = targets.ArucoMarker(
                marker_id=placement.marker_id,
                size_mm=placement.marker_mm,
                position_mm=placement.position_mm,
            )
        elif placement.target == "sphere":
            target = targets.ChromeSphere(
                diameter_mm=placement.sphere_mm, position_mm=placement.position_mm
            )
        else:
            target = targets.GreyCard()
        world.place_target(targets.TargetScene(target, geometry))

    return place


def _sin_deg(angle_deg: float) -> float:
    import math

    return math.sin(math.radians(angle_deg))
