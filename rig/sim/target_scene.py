"""The calibration targets the twin can show, and the hidden rig geometry they are seen through.

A `TargetScene` is what an operator puts in view: a ChArUco board, an ArUco marker, a chrome
sphere or a grey card, with the `TwinRig` values (zero mark, rotation sense, lens) that only
targets reveal. Plain data, so the world state (rig.sim.world) can hold a scene without
importing the renderer (rig.sim.targets) that draws it; rig.sim.target_geometry places targets
in the camera's view.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TwinRig:
    """The hidden geometry of the twin's rig: what calibration should recover."""

    zero_offset_deg: float = 17.0  # image angle of the platter's zero mark at driver 0°
    rotation_sense: int = 1  # +1: positive driver angles turn counter-clockwise in the image
    # from the image centre; coin renders have their optical axis there, so 0 keeps them aligned
    principal_offset_px: tuple[float, float] = (0.0, 0.0)
    distortion: tuple[float, float, float, float, float] = (1.2, 0.0, 0.0, 0.0, 0.0)  # OpenCV
    # directional lights this far from the plane's origin (a fall-off across the field);
    # None: at infinity, as the coin renderer has them
    light_distance_mm: float | None = None


@dataclass(frozen=True)
class CharucoBoard:
    """A printed ChArUco board lying on a wedge of `wedge_deg` on the turntable."""

    columns: int = 9
    rows: int = 7
    square_mm: float = 3.0
    marker_mm: float = 2.2
    dictionary: str = "DICT_4X4_50"
    wedge_deg: float = 0.0  # the board's top edge raised by this angle
    position_mm: tuple[float, float] = (0.0, 0.0)  # board centre on the platter
    lift_mm: float = 0.0  # height of the board centre above the platter


@dataclass(frozen=True)
class ArucoMarker:
    """A printed ArUco marker lying flat on the platter, its x axis along the platter's zero."""

    marker_id: int = 7
    size_mm: float = 8.0  # side of the black square
    dictionary: str = "DICT_4X4_50"
    position_mm: tuple[float, float] = (6.0, -3.5)  # marker centre on the platter


@dataclass(frozen=True)
class ChromeSphere:
    """A mirror ball resting on the platter."""

    diameter_mm: float = 16.0
    position_mm: tuple[float, float] = (1.0, 0.5)
    lobe_deg: float = 2.5  # angular size of an LED's mirror image (its diffuser)


@dataclass(frozen=True)
class GreyCard:
    """A uniform neutral grey card filling the view at the coin plane."""

    albedo: float = 0.45


Target = CharucoBoard | ArucoMarker | ChromeSphere | GreyCard


@dataclass(frozen=True)
class TargetScene:
    """A calibration target in the world, and the rig geometry it is seen through."""

    target: Target
    rig: TwinRig = field(default_factory=TwinRig)

    @property
    def kind(self) -> str:
        """A short name of the target, for the frame's ground truth."""
        return {
            CharucoBoard: "charuco",
            ArucoMarker: "aruco",
            ChromeSphere: "sphere",
            GreyCard: "card",
        }[type(self.target)]
