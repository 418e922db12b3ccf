"""`rig calibrate ...`: capture calibration frames with the rig, fit, and write calibration files.

Examples:
    rig calibrate camera --config sim
    rig calibrate turntable --angles 12
    rig calibrate lights --tolerance-deg 2
    rig calibrate flatfield --pattern diffuse --pattern raking_n
    rig calibrate show
    rig calibrate show --json

Order on a new rig: camera first (the others use its lens model when present), then turntable,
lights and flatfield. Files go to `calibration.folder` of the rig config (or --folder), one
sub-folder per rig and camera serial; each fit also writes an overlay PNG to look at.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from capture.calibration.models import CalibrationRecord, Kind, utc_now
from capture.calibration.staging import Stager, stager_for
from capture.calibration.store import CalibrationStore, StoredCalibration, device_key
from pipeline.cli_support import UserError, expected_errors, software_name
from rig.config import RigConfig, load_config
from rig.devices import Rig

EXIT_REFUSED = 1

ConfigOption = typer.Option(Path("sim"), "--config", help="Rig config.")
FolderOption = typer.Option(None, "--folder", help="Calibration folder (default: from config).")
FaultsOption = typer.Option(None, "--faults", help="Emulator fault preset.")
TimeScaleOption = typer.Option(None, "--time-scale", help="Sim clock scale.")


def register(app: typer.Typer) -> None:
    """Add the `calibrate` sub-app to the `rig` command."""
    calibrate_app = typer.Typer(
        no_args_is_help=True,
        help="Calibrate the camera, turntable, lights and flat field; list calibrations.",
    )
    calibrate_app.command("camera")(camera)
    calibrate_app.command("turntable")(turntable)
    calibrate_app.command("lights")(lights)
    calibrate_app.command("flatfield")(flatfield)
    calibrate_app.command("show")(show)
    app.add_typer(calibrate_app, name="calibrate")


@contextmanager
def _session(
    config_path: Path, folder: Path | None, faults: str | None, time_scale: float | None
) -> Iterator[tuple[RigConfig, Rig, CalibrationStore, Stager]]:
    """Load the config, open the rig, find who places targets (expected errors → one line)."""
    from rig.assembly import open_rig  # imported here: `show` never opens a rig

    with expected_errors():
        config = load_config(config_path)
        store = CalibrationStore(folder or config.calibration.folder)
        with open_rig(config, faults=faults, time_scale=time_scale) as rig:
            stage = stager_for(rig)
            if stage is None:
                raise UserError("no operator to place calibration targets (run it at a terminal)")
            yield config, rig, store, stage


def _save(
    store: CalibrationStore,
    config: RigConfig,
    rig: Rig,
    kind: Kind,
    result: Any,
    *,
    frames: int,
    warnings: list[str],
    overlay: Any,
    arrays: dict[str, Any] | None = None,
    created: Any = None,
) -> StoredCalibration:
    record = CalibrationRecord(
        kind=kind,
        created=created or utc_now(),
        device=device_key(config, rig.camera.identity()),
        software=software_name(),
        result=result,
        frames=frames,
        warnings=warnings,
    )
    stored = store.save(record, arrays, overlay)
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"wrote {stored.path}")
    return stored


def _latest_camera(
    store: CalibrationStore, config: RigConfig, rig: Rig
) -> StoredCalibration | None:
    stored = store.latest(device_key(config, rig.camera.identity()), "camera")
    typer.echo(
        f"using camera calibration {stored.name}"
        if stored is not None
        else "no camera calibration: lens distortion ignored (run `rig calibrate camera` first)"
    )
    return stored


def camera(
    config_path: Path = ConfigOption,
    max_rms: float = typer.Option(1.0, "--max-rms", min=0.01, help="Refuse fits above (px)."),
    folder: Path | None = FolderOption,
    faults: str | None = FaultsOption,
    time_scale: float | None = TimeScaleOption,
) -> None:
    """Intrinsics and distortion from a ChArUco board on wedges, turned by the turntable.

    Example: rig calibrate camera --max-rms 0.5
    """
    from capture.calibration.camera import calibrate_camera

    with _session(config_path, folder, faults, time_scale) as (config, rig, store, stage):
        run = calibrate_camera(rig, config, stage, max_rms_px=max_rms)
        result = run.fit.result
        m = result.camera_matrix
        typer.echo(
            f"{result.views_used} views, {result.corners_used} corners: RMS {result.rms_px:.3f} px; "
            f"fx {m[0][0]:.1f} fy {m[1][1]:.1f} cx {m[0][2]:.2f} cy {m[1][2]:.2f}; "
            f"k1 {result.distortion[0]:.4f} k2 {result.distortion[1]:.4f}"
        )
        if result.rms_px > max_rms:
            typer.echo(
                f"error: refused: RMS reprojection error {result.rms_px:.3f} px is above "
                f"--max-rms {max_rms:g} px; nothing written",
                err=True,
            )
            raise typer.Exit(EXIT_REFUSED)
        _save(
            store, config, rig, "camera", result,
            frames=run.frames, warnings=run.warnings, overlay=run.overlay,
        )  # fmt: skip


def turntable(
    config_path: Path = ConfigOption,
    angles: int = typer.Option(12, "--angles", min=3, max=360, help="Angles over one turn."),
    marker_id: int = typer.Option(7, "--marker-id", min=0, max=49, help="DICT_4X4_50 id."),
    marker_mm: float = typer.Option(8.0, "--marker-mm", min=0.5, help="Marker side (mm)."),
    folder: Path | None = FolderOption,
    faults: str | None = FaultsOption,
    time_scale: float | None = TimeScaleOption,
) -> None:
    """Rotation centre, sense, zero offset and px/mm from an ArUco marker turned N times.

    Example: rig calibrate turntable --angles 12 --marker-mm 8
    """
    from capture.calibration.turntable import calibrate_turntable

    with _session(config_path, folder, faults, time_scale) as (config, rig, store, stage):
        lens = _latest_camera(store, config, rig)
        run = calibrate_turntable(
            rig, config, stage, angles=angles, marker_id=marker_id, marker_mm=marker_mm, camera=lens
        )
        r = run.result
        sense = "counter-clockwise" if r.rotation_sign > 0 else "clockwise"
        typer.echo(
            f"centre ({r.centre_px[0]:.2f}, {r.centre_px[1]:.2f}) px, turns {sense}, "
            f"zero at {r.zero_offset_deg:.2f}°, {r.px_per_mm:.3f} px/mm, "
            f"residual {r.residual_px:.3f} px over {len(r.angles_deg)} angles"
        )
        _save(
            store, config, rig, "turntable", r,
            frames=run.frames, warnings=run.warnings, overlay=run.overlay,
        )  # fmt: skip


def lights(
    config_path: Path = ConfigOption,
    tolerance_deg: float = typer.Option(2.0, "--tolerance-deg", min=0.01, help="Warn above."),
    sphere_mm: float = typer.Option(16.0, "--sphere-mm", min=1.0, help="Sphere diameter (mm)."),
    folder: Path | None = FolderOption,
    faults: str | None = FaultsOption,
    time_scale: float | None = TimeScaleOption,
) -> None:
    """Each directional channel's azimuth and elevation from a chrome sphere's highlight.

    Example: rig calibrate lights --tolerance-deg 2 --sphere-mm 16
    """
    from capture.calibration.lights import calibrate_lights

    with _session(config_path, folder, faults, time_scale) as (config, rig, store, stage):
        lens = _latest_camera(store, config, rig)
        run = calibrate_lights(
            rig, config, stage, tolerance_deg=tolerance_deg, sphere_mm=sphere_mm, camera=lens
        )
        typer.echo(f"{'channel':<10} {'azimuth':>16} {'elevation':>16} {'error':>7}")
        for c in run.result.channels:
            flag = "" if c.within_tolerance else "  OUT OF TOLERANCE"
            typer.echo(
                f"{c.name:<10} {c.azimuth_deg:7.2f}° ({c.configured_azimuth_deg:6.1f}°) "
                f"{c.elevation_deg:7.2f}° ({c.configured_elevation_deg:6.1f}°) "
                f"{c.error_deg:6.2f}°{flag}"
            )
        _save(
            store, config, rig, "lights", run.result,
            frames=run.frames, warnings=run.warnings, overlay=run.overlay,
        )  # fmt: skip


def flatfield(
    config_path: Path = ConfigOption,
    pattern: list[str] = typer.Option([], "--pattern", help="Pattern(s) (default: all)."),
    frames_per_pattern: int = typer.Option(4, "--frames", min=1, max=64, help="Averaged."),
    folder: Path | None = FolderOption,
    faults: str | None = FaultsOption,
    time_scale: float | None = TimeScaleOption,
) -> None:
    """Per-pattern flat field and white balance from a uniform grey card.

    Example: rig calibrate flatfield --pattern diffuse --frames 8
    """
    from capture.calibration.flatfield import calibrate_flatfield

    with _session(config_path, folder, faults, time_scale) as (config, rig, store, stage):
        created = utc_now()
        stem = f"flatfield-{created.strftime('%Y%m%dT%H%M%SZ')}"
        run = calibrate_flatfield(
            rig, config, stage, stem=stem, patterns=pattern or None,
            frames_per_pattern=frames_per_pattern,
        )  # fmt: skip
        typer.echo(f"camera gamma {run.result.gamma:.4f}")
        for name, p in run.result.patterns.items():
            gains = " ".join(f"{g:.3f}" for g in p.white_balance)
            typer.echo(
                f"{name:<10} non-uniformity {p.nonuniformity_before_pct:5.2f}% → "
                f"{p.nonuniformity_after_pct:4.2f}%, white balance {gains}"
            )
        _save(
            store, config, rig, "flatfield", run.result,
            frames=run.frames, warnings=run.warnings, overlay=run.overlay,
            arrays=run.arrays, created=created,
        )  # fmt: skip


def show(
    config_path: Path = ConfigOption,
    folder: Path | None = FolderOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List calibration files: device, kind, date, age, quality; stale ones are marked.

    Example: rig calibrate show --json
    """
    with expected_errors():
        config = load_config(config_path)
        store = CalibrationStore(folder or config.calibration.folder)
        found = store.list()
    max_age = config.calibration.max_age_days
    if as_json:
        rows = [
            {
                "file": s.name,
                "kind": s.record.kind,
                "created": s.record.created.isoformat(),
                "age_days": round(s.record.age_days(), 3),
                "stale": s.record.age_days() > max_age,
                "device": s.record.device.model_dump(),
                "summary": _quality(s.record),
            }
            for s in found
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not found:
        typer.echo(f"no calibrations in {store.folder}")
        return
    for s in found:
        age = s.record.age_days()
        stale = f"  STALE (> {max_age:g} days)" if age > max_age else ""
        typer.echo(f"{s.name:<48} {age:6.1f} d  {_quality(s.record)}{stale}")


def _quality(record: CalibrationRecord) -> str:
    """One line of what a record says."""
    r = record.result
    if r.kind == "camera":
        return f"RMS {r.rms_px:.3f} px over {r.views_used} views"
    if r.kind == "turntable":
        return (
            f"centre ({r.centre_px[0]:.1f}, {r.centre_px[1]:.1f}) px, "
            f"zero {r.zero_offset_deg:.1f}°, {r.px_per_mm:.2f} px/mm"
        )
    if r.kind == "lights":
        worst = max((c.error_deg for c in r.channels), default=0.0)
        return f"{len(r.channels)} channels, worst {worst:.2f}° from config"
    worst = max((p.nonuniformity_after_pct for p in r.patterns.values()), default=0.0)
    return f"{len(r.patterns)} patterns, gamma {r.gamma:.3f}, ≤ {worst:.2f}% after"
