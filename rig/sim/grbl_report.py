"""GRBL 1.1's real-time status report, as the emulator writes it (report.c report_realtime_status).

`<State|MPos:…|Bf:…|FS:…|WCO:…|Ov:…>`: the state (Hold:0 at rest, Hold:1 braking), the
position (MPos with `$10` bit 0 set, else WPos = MPos − WCO), the buffer state with `$10` bit 1,
feed and spindle speed, the work coordinate offset in the first report after a reset or an
offset change and then every 10 reports (30 while moving), the overrides in the report after
that and then every 20 (REPORT_WCO_REFRESH_*, REPORT_OVR_REFRESH_* in config.h). With `$13=1`
positions are inches with 4 decimals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rig.turntable.grbl_codec import format_number

_WCO_IDLE, _WCO_BUSY, _OVR_EVERY = 10, 30, 20
MM_PER_INCH = 25.4


def format_coords(values: list[float], settings: Mapping[int, float]) -> str:
    """Coordinates as GRBL prints them: 3 decimals in mm, 4 in inches ($13=1)."""
    if int(settings[13]):
        return ",".join(format_number(v / MM_PER_INCH, 4) for v in values)
    return ",".join(format_number(v) for v in values)


@dataclass
class ReportCounters:
    """report.c's countdowns: when the next WCO and Ov fields are due (0: in the next report)."""

    wco: int = 0
    ovr: int = 0

    def reset(self) -> None:
        """After a reset: both fields in the first reports again."""
        self.wco = self.ovr = 0


@dataclass(frozen=True)
class Snapshot:
    """What a report shows: the controller's state and readings at one moment."""

    state: str
    position: list[float]  # machine units
    wco: list[float]
    rate_units_per_min: float
    moving: bool  # a motion state: Run, Hold, Home, Jog
    blocks: int  # planned blocks, the executing one included
    queued_bytes: int  # in the serial receive buffer


def status_report(snap: Snapshot, settings: Mapping[int, float], counters: ReportCounters) -> str:
    """One report line, advancing the WCO and override countdowns."""
    mask = int(settings[10])
    if mask & 1:
        fields = [snap.state, f"MPos:{format_coords(snap.position, settings)}"]
    else:
        work = [p - o for p, o in zip(snap.position, snap.wco, strict=True)]
        fields = [snap.state, f"WPos:{format_coords(work, settings)}"]
    if mask & 2:
        fields.append(f"Bf:{15 - snap.blocks},{128 - snap.queued_bytes}")
    rate = snap.rate_units_per_min / MM_PER_INCH if int(settings[13]) else snap.rate_units_per_min
    fields.append(f"FS:{format_number(rate, 0)},0")
    if counters.wco > 0:
        counters.wco -= 1
    else:
        counters.wco = (_WCO_BUSY if snap.moving else _WCO_IDLE) - 1
        counters.ovr = max(counters.ovr, 1)  # the overrides follow in the next report
        fields.append(f"WCO:{format_coords(snap.wco, settings)}")
    if counters.ovr > 0:
        counters.ovr -= 1
    else:
        counters.ovr = _OVR_EVERY - 1
        fields.append("Ov:100,100,100")
    return "<" + "|".join(fields) + ">"
