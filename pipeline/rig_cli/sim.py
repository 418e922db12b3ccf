"""`rig sim`: look at the digital twin: render one view, or a contact sheet of coins × lights.

Examples:
    rig sim render --coin SIM-0003 --side obverse --angle 30 --light raking_n --out x.png
    rig sim render --coin SIM-0003 --catalog-style --out ref.jpg
    rig sim sheet --coins 6 --out docs/twin_sheet.png
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import typer

from capture.writer import atomic_write
from dataset.outputs import OutputPathError, check_output_file
from pipeline.cli_support import UserError, expected_errors
from rig.config import ModbusLightboxConfig, RigConfig, load_config
from rig.sim.camera import pattern_lights
from rig.sim.catalog_style import render_catalog_image
from rig.sim.coins import CoinCatalog, Side, UnknownCoin
from rig.sim.shading import render_view
from rig.sim.simulation import catalog_of
from rig.sim.world import LightState

sim_app = typer.Typer(
    no_args_is_help=True, help="The digital twin: render simulated coins under the lightbox."
)

# the image types that hold a 16-bit frame (JPEG and BMP hold 8 bits)
_DEEP_SUFFIXES = (".png", ".tif", ".tiff")
_CONFIG = typer.Option(Path("sim"), "--config", "-c", help="YAML rig configuration")


def _catalog(config: RigConfig) -> CoinCatalog:
    sim = config.simulation
    if sim is None:
        raise UserError("the config has no `simulation:` section (seed, rulers, types, coins)")
    return catalog_of(sim)


def _lightbox(config: RigConfig) -> ModbusLightboxConfig:
    return config.lightbox


def _pattern(config: RigConfig, name: str) -> dict[str, LightState]:
    lightbox = _lightbox(config)
    if name not in lightbox.patterns:
        raise UserError(f"no light pattern {name!r}; patterns are {sorted(lightbox.patterns)}")
    return pattern_lights(lightbox, lightbox.patterns[name])


def _side(value: str) -> Side:
    if value not in ("obverse", "reverse"):
        raise UserError(f"side must be obverse or reverse, got {value!r}")
    return "obverse" if value == "obverse" else "reverse"


def _check_out(path: Path, bit_depth: int = 8) -> None:
    """Refuse an output path before anything is rendered: extension, place, bit depth.

    Raises:
        OutputPathError: unknown extension or a place that cannot be written.
        UserError: a 16-bit frame asked for as JPEG or BMP, which hold 8 bits.
    """
    check_output_file(path, "--out")
    if bit_depth > 8 and path.suffix.lower() not in _DEEP_SUFFIXES:
        raise UserError(f"--out {path}: the camera gives {bit_depth}-bit frames; use .png or .tiff")


def _write(path: Path, rgb: np.ndarray) -> None:
    """Encode by the path's extension and replace the file atomically (temp file, fsync, rename)."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    # PNGs get the strongest compression: sheets are looked at and committed, not streamed
    params = [cv2.IMWRITE_PNG_COMPRESSION, 9] if path.suffix.lower() == ".png" else []
    ok, encoded = cv2.imencode(path.suffix.lower(), bgr, params)
    if not ok:
        raise UserError(f"cannot encode {path} as {path.suffix}")
    atomic_write(path, encoded.tobytes())


@sim_app.command("render")
def render(
    coin: str = typer.Option("SIM-0000", "--coin", help="Simulated coin id, e.g. SIM-0003"),
    side: str = typer.Option("obverse", "--side", help="obverse or reverse"),
    angle: float = typer.Option(0.0, "--angle", help="Turntable angle in degrees (CCW)"),
    light: str = typer.Option("top", "--light", help="Light pattern name from the config"),
    tilt: float = typer.Option(0.0, "--tilt", help="Camera tilt in degrees"),
    out: Path = typer.Option(Path("sim.png"), "--out", "-o", help="Image file to write"),
    catalog_style: bool = typer.Option(
        False, "--catalog-style", help="An auction-catalog photograph instead (JPEG-like)"
    ),
    config_path: Path = _CONFIG,
) -> None:
    """Render one view of a simulated coin as the rig's camera sees it.

    Example: rig sim render --coin SIM-0003 --side obverse --angle 30 --light raking_n --out x.png
    """
    with expected_errors(UnknownCoin, OutputPathError, OSError):
        config = load_config(config_path)
        catalog = _catalog(config)
        face = _side(side)
        camera = config.camera
        bit_depth = 8 if catalog_style else int(getattr(camera, "bit_depth", 8))
        _check_out(out, bit_depth)
        if catalog_style:
            rgb, jpeg = render_catalog_image(catalog, coin, face)
            if out.suffix.lower() in (".jpg", ".jpeg"):
                atomic_write(out, jpeg)  # the twin's own JPEG: compressed once
            else:
                _write(out, rgb)
        else:
            width = getattr(camera, "width", None) or 512
            height = getattr(camera, "height", None) or width
            color = bool(getattr(camera, "color", True))
            image = render_view(
                catalog,
                coin,
                face,
                angle,
                _pattern(config, light),
                size=(width, height),
                color=color,
                bit_depth=bit_depth,
                tilt_deg=tilt,
                exposure_us=camera.exposure_us,
                gain_db=camera.gain_db,
                field_of_view_mm=float(getattr(camera, "field_of_view_mm", 40.0)),
                coin_diameter_mm=config.simulation.coin_diameter_mm if config.simulation else 20.0,
            )
            _write(out, image)
    typer.echo(f"wrote {out}")


@sim_app.command("sheet")
def sheet(
    coins: int = typer.Option(6, "--coins", min=1, max=200, help="How many coins (rows)"),
    lights: str = typer.Option(
        "", "--lights", help="Comma-separated pattern names (default: every pattern)"
    ),
    side: str = typer.Option("obverse", "--side", help="obverse, reverse or both"),
    tile: int = typer.Option(192, "--tile", min=64, max=1024, help="Tile size in pixels"),
    catalog_column: bool = typer.Option(
        True, "--catalog/--no-catalog", help="Add the auction-catalog image as a last column"
    ),
    out: Path = typer.Option(Path("twin_sheet.png"), "--out", "-o", help="PNG file to write"),
    config_path: Path = _CONFIG,
) -> None:
    """Write a PNG grid of coins (rows) × light patterns (columns) to look at.

    Example: rig sim sheet --coins 6 --side both --out docs/twin_sheet.png
    """
    with expected_errors(UnknownCoin, OutputPathError, OSError):
        config = load_config(config_path)
        _check_out(out)
        catalog = _catalog(config)
        names = [n.strip() for n in lights.split(",") if n.strip()] or list(
            _lightbox(config).patterns
        )
        patterns = {name: _pattern(config, name) for name in names}
        if not patterns:
            raise UserError("the config defines no light patterns")
        sides: list[Side] = ["obverse", "reverse"] if side == "both" else [_side(side)]
        rows = []
        # the coin spans half the camera's view; crop so that it fills most of each tile
        full = round(tile / 0.62)
        lo = (full - tile) // 2
        for coin_id in catalog.coin_ids()[:coins]:
            for face in sides:
                tiles = [
                    render_view(catalog, coin_id, face, 0.0, pat, size=full)[
                        lo : lo + tile, lo : lo + tile
                    ]
                    for pat in patterns.values()
                ]
                if catalog_column:
                    ref, _ = render_catalog_image(catalog, coin_id, face)
                    tiles.append(cv2.resize(ref, (tile, tile), interpolation=cv2.INTER_AREA))
                label = f"{coin_id} {face[:3]}"
                rows.append(_label(np.hstack(tiles), label, 0))
        header = _header(list(patterns) + (["catalog"] if catalog_column else []), tile)
        _write(out, np.vstack([header, *rows]))
    typer.echo(f"wrote {out} ({len(rows)} rows × {len(header[0]) // tile} columns)")


def _label(image: np.ndarray, text: str, x: int) -> np.ndarray:
    image = np.ascontiguousarray(image)
    cv2.putText(
        image, text, (x + 4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (240, 240, 240), 1, cv2.LINE_AA
    )
    return image


def _header(names: list[str], tile: int) -> np.ndarray:
    header = np.full((22, tile * len(names), 3), 24, np.uint8)
    for k, name in enumerate(names):
        cv2.putText(
            header,
            name,
            (k * tile + 6, 15),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (230, 230, 230),
            1,
            cv2.LINE_AA,
        )
    return header
