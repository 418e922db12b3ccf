"""What a session writes about its shots: metadata lines, flat-field notes and missing shots.

Functions of what the runner knows (capture.session), kept apart so the runner holds only
sequencing and state. The fields are dataset.schema.MetadataLine's (docs/dataset-format.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from capture.calibration.flatfield import FlatFieldCorrector
from capture.engine import CoinJob, ShotSettings
from capture.estimate import estimate_session_s
from capture.events import utc_now
from capture.plan import Kinematics, ShotEvent, Side, estimate_duration_s
from dataset.layout import image_name
from rig.config import RigConfig
from rig.devices import Frame


def shot_metadata(
    session_id: str,
    job: CoinJob,
    event: ShotEvent,
    settings: ShotSettings,
    frame: Frame,
    captured_at: str,
) -> dict[str, Any]:
    """A capture's metadata line (without file_name and sha256, which the writer adds).

    `settings` are what the devices reported when this shot was set up: the frame may be
    collected after the next shot's set-up, so nothing is read from the rig here.
    """
    record: dict[str, Any] = {
        "coin_id": job.coin_id,
        "side": event.side,
        "role": "capture",
        "session_id": session_id,
        "shot": event.index,
        "turntable_deg": settings.turntable_deg,
        "tilt_deg": settings.tilt_deg,
        "light": event.light,
        "lights": dict(settings.lights),
        "exposure_us": float(frame.exposure_us),
        "gain_db": float(frame.gain_db),
        "camera": frame.camera,
        "width": frame.width,
        "height": frame.height,
        "pixel_format": frame.pixel_format,
        "captured_at": captured_at,
        "reference": event.reference,
    }
    if frame.sim is not None:
        record["sim"] = frame.sim
    return record


def flat_fielded(
    flatfield: FlatFieldCorrector | None, frame: Frame, light: str
) -> tuple[Any, dict[str, Any], str | None]:
    """The image to write, the metadata note on flat-fielding, and a warning if not applied."""
    if flatfield is None:
        return frame.image, {"applied": False, "calibration": None}, None
    note: dict[str, Any] = {"applied": False, "calibration": flatfield.stored.name}
    reason = flatfield.reason_not_applied(frame.image, light)
    if reason is not None:
        note["reason"] = reason
        return frame.image, note, f"flat field not applied: {reason}"
    note.update(applied=True, gamma=flatfield.result.gamma)
    return flatfield.correct(frame.image, light), note, None


def missing_shots(
    todo: Mapping[str, Iterable[ShotEvent]],
    written: set[str],
    skipped: Mapping[str, str],
    image_format: str,
    why_not_taken: str,
) -> list[dict[str, Any]]:
    """The shots a session was to take that are not on disk, each with the reason.

    A skipped shot gives its device error; any other was not reached (`why_not_taken`).
    """
    missing = []
    for coin_id, events in todo.items():
        for event in events:
            name = image_name(coin_id, event.side, event.index, image_format)
            if name not in written:
                missing.append(
                    {
                        "coin_id": coin_id,
                        "shot": event.index,
                        "file_name": name,
                        "reason": skipped.get(name) or why_not_taken,
                    }
                )
    return missing


def shot_tally(
    todo: Mapping[str, list[ShotEvent]],
    planned: int,
    written: list[str],
    skipped: Mapping[str, str],
    lost: Mapping[str, str],
    image_format: str,
    why_not_taken: str | None,
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """The session record's counts and missing shots (none while the session is running).

    `written` names every file written; `skipped` and `lost` (exposed, then not kept) map a
    file name to why. `why_not_taken` is None while the session runs, else the reason given
    to every other shot of `todo` not on disk.
    """
    to_take = sum(len(events) for events in todo.values())
    missing = []
    if why_not_taken is not None:
        unkept = {**lost, **skipped}
        missing = missing_shots(todo, set(written), unkept, image_format, why_not_taken)
    counts = {
        "planned": planned,
        "already_present": planned - to_take,
        "to_take": to_take,
        "written": len(written),
        "skipped": len(skipped),
        "missing": len(missing),
    }
    return counts, missing


def physical_s(clock: Any) -> float | None:
    """The twin clock's physical time so far; None without a clock or if it cannot tell."""
    try:
        return float(clock.physical_duration_s()) if clock is not None else None
    except Exception:  # the record is informative: never fail a session over it
        return None


def session_timings(
    started_at: str,
    started: float,
    physical_before: float | None,
    clock: Any,
    todo: Mapping[str, list[ShotEvent]],
    config: RigConfig | None,
    coins: Sequence[CoinJob] = (),
    first_side: Side = "obverse",
) -> dict[str, Any]:
    """The session record's timings: wall, twin-clock physical and dry-run estimated seconds.

    Wall time runs from `started` (monotonic), physical time from `physical_before`; the
    estimate is for the shots `todo` on the kinematics of `config`: for the session's `coins`
    (lying `first_side` up) as its schedule runs them, serial or overlapped; without coins,
    for each coin's shots with their load, flip and unload, one coin after the other.
    """
    estimated = None
    if config is not None and coins and any(todo.values()):
        pairs = [(job, todo.get(job.coin_id, [])) for job in coins]
        estimated = estimate_session_s(pairs, config, first_side)
    elif config is not None and any(todo.values()):
        kinematics = Kinematics.from_config(config)
        estimated = sum(estimate_duration_s(t, kinematics) for t in todo.values() if t)
    physical_now = physical_s(clock)
    return {
        "started_at": started_at,
        "updated_at": utc_now(),
        "wall_s": round(time.monotonic() - started, 3),
        "estimated_physical_s": estimated,
        "physical_s": None
        if physical_now is None or physical_before is None
        else round(physical_now - physical_before, 3),
    }
