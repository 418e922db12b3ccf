"""Resuming a capture into a dataset folder: which shots of a plan are still to take.

The format's side (which files are intact) is dataset.reader.FileIndex; this adds what needs
the plan: the shots of a coin still missing, and refusing a folder shot with another plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from capture.plan import ShotEvent
from dataset.layout import DatasetError, image_name
from dataset.reader import FileIndex


class ResumeIndex(FileIndex):
    """Which shots a dataset already holds intact, and which of a plan are still to take."""

    def todo(self, coin_id: str, events: Sequence[ShotEvent], ext: str) -> list[ShotEvent]:
        """The shots of a coin still to take: absent, torn off, or failing their checksum.

        Raises:
            DatasetError: a file exists from a plan with other settings for that shot number.
        """
        missing: list[ShotEvent] = []
        for event in events:
            name = image_name(coin_id, event.side, event.index, ext)
            record = self.record(name)
            if record is not None and settings_differ(record, event):
                raise DatasetError(
                    f"{name} exists from a different plan (light {record.get('light')!r} "
                    f"at {record.get('turntable_deg')}°, not {event.light!r} at "
                    f"{event.turntable_deg:g}°); use another --out folder"
                )
            if not self.intact(name):
                missing.append(event)
        return missing


def settings_differ(record: dict[str, Any], event: ShotEvent) -> bool:
    """Whether an existing image was taken with other settings than this plan's shot.

    Shot numbers name files, so a different plan in the same folder would otherwise pass its
    images off as this plan's. Angles are compared modulo 360 with a tolerance because the
    record holds the angle the turntable reported.
    """
    if record.get("side") != event.side or record.get("light") != event.light:
        return True
    if bool(record.get("reference", False)) != event.reference:
        return True
    try:
        delta = (float(record.get("turntable_deg", 0.0)) - event.turntable_deg) % 360.0
        if min(delta, 360.0 - delta) > 0.5:
            return True
        tilt = record.get("tilt_deg")
        if (tilt is None) != (event.tilt_deg is None):
            return True
        if (
            tilt is not None
            and event.tilt_deg is not None
            and abs(float(tilt) - event.tilt_deg) > 0.5
        ):
            return True
        if event.exposure_us is not None:
            exposure = float(record.get("exposure_us", 0.0))
            return abs(exposure - event.exposure_us) > 0.01 * event.exposure_us
    except (TypeError, ValueError):
        return True
    return False
