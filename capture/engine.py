"""The capture engine: the hardware-facing steps of a session over the rig.devices Protocols.

The engine owns the devices (set up the session, load/flip/return a coin, set up and take a
shot, park); the runner (capture.session) owns sequencing, state, events and the dataset. Every
idempotent device command (an absolute move, a light pattern, a camera setting, a grab) is retried
with backoff, and a turntable alarm (GRBL ALARM, a Modbus drive's latched fault) is cleared with
Turntable.recover() before the next try. Arm
handling (pick, place, flip) is never retried: repeating half a pick could drop the coin, so an
arm failure goes straight to the runner, which parks and pauses.

The arm may work in a thread of its own beside the shots (capture.handling, the overlapped
schedule): every arm command goes through `arm_lock`, so parking on the way out of an error
waits for the arm's task in progress instead of talking to the arm over it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from capture.plan import Plan, ShotEvent, Side
from capture.staging import FlipOver, Park, Task, Transfer, WaitClear
from rig.config import CameraSettings
from rig.devices import Exposure, Frame, Rig, StagingArm, TriggeredCamera
from rig.errors import (
    DeviceAlarm,
    DeviceFault,
    DeviceTimeout,
    RigError,
    SafetyError,
    TransportError,
)
from rig.retry import with_retries

T = TypeVar("T")
log = logging.getLogger(__name__)

RetryHook = Callable[[int, BaseException], None]

# How long a frame may take to arrive once its exposure is over, when the rig's config does not
# say (its camera's grab_timeout_s): the same default a camera's own grab() uses.
FRAME_TIMEOUT_S: float = CameraSettings.model_fields["grab_timeout_s"].default
# How long parking waits for an arm task in progress (each of its moves has its own timeout).
ARM_BUSY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class CoinJob:
    """One coin to photograph: its id and, with an arm, the tray slot it lies in (side 1 up)."""

    coin_id: str
    slot: int | None = None


@dataclass(frozen=True)
class OperatorRequest:
    """A hand-off to the operator (no arm, or no slot): place, flip or remove a coin."""

    action: Literal["place", "flip", "remove"]
    coin_id: str
    side_up: Side | None

    @property
    def message(self) -> str:
        """What to tell the operator."""
        if self.action == "place":
            return f"place coin {self.coin_id} on the turntable, {self.side_up} up"
        if self.action == "flip":
            return f"turn coin {self.coin_id} over, {self.side_up} up"
        return f"take coin {self.coin_id} off the turntable"


# Returns once the operator has done what was asked.
Prompt = Callable[[OperatorRequest], None]


@dataclass(frozen=True)
class Collected:
    """An Exposure whose outcome is known: its frame (a grab, a retake) or the error that lost it.

    The runner swaps one in for a shot it has waited on, so that a shot met again on the way out
    of an error neither waits on its camera a second time nor comes back from the dead.
    """

    frame: Frame | None = None
    error: RigError | None = None

    def wait_exposed(self) -> None:
        """Over already."""

    def result(self, timeout_s: float | None = None) -> Frame:
        """The frame, or the error that lost it raised again."""
        if self.frame is None:
            raise self.error or DeviceFault("camera: frame lost")
        return self.frame


@dataclass
class ShotSettings:
    """What the devices reported for a shot (stored in its metadata line)."""

    turntable_deg: float
    tilt_deg: float | None
    lights: dict[str, float]


@dataclass
class _Current:
    turntable_deg: float | None = None
    turntable_reported: float = 0.0  # where the turntable said it stopped (a whole motor step)
    tilt_deg: float | None = None
    tilt_reported: float | None = None  # where the tilt stage said it stopped
    light: str | None = None
    lights: dict[str, float] = field(default_factory=dict)
    camera: tuple[float | None, float | None] | None = None


def _reported_tilt(event: ShotEvent, current: _Current) -> float | None:
    """The tilt to record for a shot: where the stage said it stopped (None: no tilt, no stage)."""
    if event.tilt_deg is None or current.tilt_deg is None:
        return None
    return current.tilt_reported


class CaptureEngine:
    """Hardware steps of a capture session on one Rig."""

    def __init__(
        self,
        rig: Rig,
        plan: Plan,
        *,
        prompt: Prompt | None = None,
        sleep: Callable[[float], None] | None = None,
        backoff_s: float = 0.05,
        frame_timeout_s: float | None = None,
    ) -> None:
        self.rig = rig
        self.plan = plan
        self.prompt = prompt
        self.sleep = sleep
        self.backoff_s = backoff_s
        # None: the default grab timeout (FRAME_TIMEOUT_S), never an unbounded wait
        self.frame_timeout_s = FRAME_TIMEOUT_S if frame_timeout_s is None else frame_timeout_s
        self.on_retry: RetryHook | None = None
        self._current = _Current()
        self.arm_lock = threading.Lock()

    # ------------------------------------------------------------ retries
    def call(self, action: Callable[[], T], *, retries: int | None = None) -> T:
        """Run an idempotent device command with retries; clear turntable alarms in between."""

        def before_retry(attempt: int, exc: BaseException) -> None:
            if self.on_retry is not None:
                self.on_retry(attempt, exc)
            if isinstance(exc, DeviceAlarm):
                # An alarm locks GRBL (or latches a drive's fault) until it is cleared; the next
                # try would fail the same way.
                self.rig.turntable.recover()
                self._current.turntable_deg = None

        attempts = 1 + (self.plan.retries if retries is None else retries)
        return with_retries(
            action,
            attempts=attempts,
            backoff_s=self.backoff_s,
            retry_on=(TransportError, DeviceFault),
            sleep=self.sleep,
            on_retry=before_retry,
        )

    # ------------------------------------------------------------ session and coin
    def setup_session(self) -> None:
        """Lights off, arm and turntable homed."""
        self.call(self.rig.lightbox.all_off)
        self._current = _Current()
        if self.rig.arm is not None:
            self.rig.arm.home()
        self._back_to_whole_turn()
        self.call(self.rig.turntable.home)

    def _back_to_whole_turn(self) -> None:
        """Turn back to the nearest whole turn of the current angle frame before homing.

        A turntable without a homing switch declares its current angle zero in home(). Were it
        left at 250° by the previous session (a paused coin, the last tray load), that session's
        250° would become this one's 0°: angles of one dataset in two frames, a resumed coin
        still on the table shot at the wrong orientation, and the twin's ground truth off by
        250°. At a whole turn the new zero is the old one, modulo 360°. For drives that home
        to a switch this is a short extra move (at most half a turn).
        """
        position = self.call(self.rig.turntable.position_deg)
        whole = round(position / 360.0) * 360.0
        if abs(position - whole) <= 1e-3:
            return
        try:
            self.call(lambda: self.rig.turntable.move_to_deg(whole))
        except SafetyError as exc:
            # A whole turn outside the travel limits: home from here (the old behaviour).
            log.warning("turntable: cannot return to %g deg before homing: %s", whole, exc)

    def load_coin(self, job: CoinJob, side: Side) -> None:
        """Put the coin on the turntable, `side` up: the arm from its slot, or the operator."""
        if self.rig.arm is not None and job.slot is not None:
            with self.arm_lock:
                self.rig.arm.pick_from_slot(job.slot)
                self.rig.arm.place_on_turntable()
                self.rig.arm.park()
        else:
            self._ask(OperatorRequest("place", job.coin_id, side))

    def flip_coin(self, job: CoinJob, side: Side) -> None:
        """Turn the coin over so that `side` is up."""
        if self.rig.arm is not None:
            with self.arm_lock:
                self.rig.arm.flip_on_turntable()
                self.rig.arm.park()
        else:
            self._ask(OperatorRequest("flip", job.coin_id, side))

    def unload_coin(self, job: CoinJob) -> None:
        """Return the coin to its slot (arm) or ask the operator to take it off."""
        if self.rig.arm is not None and job.slot is not None:
            with self.arm_lock:
                self.rig.arm.return_to_slot(job.slot)
                self.rig.arm.park()
        else:
            self._ask(OperatorRequest("remove", job.coin_id, None))

    def perform(self, task: Task) -> None:
        """Do one task of the overlapped schedule with the arm (never retried, as all handling).

        Raises:
            RigError: the arm has no staging pads, or failed.
        """
        arm = self.rig.arm
        if arm is None or not isinstance(arm, StagingArm):
            raise RigError("the overlapped schedule needs an arm with staging pads")
        with self.arm_lock:
            if isinstance(task, Transfer):
                arm.pick(task.source)
                arm.place(task.target)
            elif isinstance(task, FlipOver):
                arm.flip_on_turntable()
            elif isinstance(task, WaitClear):
                arm.wait_clear()
            else:
                assert isinstance(task, Park)
                arm.park()

    def _ask(self, request: OperatorRequest) -> None:
        if self.prompt is None:
            raise RigError(f"no arm and no operator to {request.message}")
        self.prompt(request)

    # ------------------------------------------------------------ shots
    def setup_shot(self, event: ShotEvent, patterns: dict[str, dict[str, float]]) -> ShotSettings:
        """Move and set what differs from the previous shot; return what the devices report."""
        current = self._current
        if current.turntable_deg is None or current.turntable_deg != event.turntable_deg:
            current.turntable_deg = None  # unknown until the move reports success
            reported = self.call(lambda: self.rig.turntable.move_to_deg(event.turntable_deg))
            current.turntable_deg = event.turntable_deg
            current.turntable_reported = current_reported = reported
        else:
            current_reported = current.turntable_reported
        tilt = self.rig.tilt
        if event.tilt_deg is not None and tilt is not None and current.tilt_deg != event.tilt_deg:
            tilt_deg = event.tilt_deg
            current.tilt_deg = None
            # the stage stops on a whole step: record where it says it is, not the command
            reported = self.call(lambda: tilt.tilt_to_deg(tilt_deg))
            current.tilt_reported = tilt_deg if reported is None else float(reported)
            current.tilt_deg = tilt_deg
        if current.light != event.light:
            current.light = None
            if event.light in patterns:
                levels = patterns[event.light]
                current.lights = self.call(lambda: self.rig.lightbox.set_levels(levels))
            else:
                current.lights = self.call(lambda: self.rig.lightbox.set_pattern(event.light))
            current.light = event.light
        wanted = (event.exposure_us, event.gain_db)
        if current.camera != wanted:
            current.camera = None
            self.call(
                lambda: self.rig.camera.configure(
                    exposure_us=event.exposure_us, gain_db=event.gain_db
                )
            )
            current.camera = wanted
        return ShotSettings(
            turntable_deg=float(current_reported),
            tilt_deg=_reported_tilt(event, current),
            lights=dict(current.lights),
        )

    def start_shot(self, event: ShotEvent) -> Exposure:
        """Expose a shot that setup_shot prepared; returns once the exposure is over.

        The frame may still be reading out: wait for it with `collect()`. If that fails, the
        exposure is lost and the shot must be set up and taken again (`exec_shot`).
        """
        return self.call(self._expose)

    def collect(self, exposure: Exposure) -> Frame:
        """Wait for an exposed shot's frame, at most `frame_timeout_s` (never retried).

        Raises:
            DeviceTimeout: no frame within the timeout (it counts as lost, like any RigError).
            RigError: the frame was lost after its exposure.
        """
        try:
            return exposure.result(timeout_s=self.frame_timeout_s)
        except TimeoutError as exc:  # a future's wait (concurrent.futures) times out like this
            raise DeviceTimeout(
                f"camera: no frame within {self.frame_timeout_s:g} s of its exposure"
            ) from exc

    def exec_shot(self, event: ShotEvent) -> Frame:
        """Take the frame of a shot that setup_shot prepared and wait for it (retried whole)."""
        return self.call(lambda: self.collect(self._expose()))

    def _expose(self) -> Exposure:
        camera = self.rig.camera
        if isinstance(camera, TriggeredCamera):
            exposure = camera.trigger()
            exposure.wait_exposed()
            return exposure
        return Collected(camera.grab())

    # ------------------------------------------------------------ parking
    def park(self) -> list[str]:
        """Make the rig safe: stop the turntable, lights off, arm to its safe pose.

        Every step is tried even when an earlier one fails; returns the failures, never raises
        (parking runs on the way out of errors, where a second exception would hide the first).
        """
        problems: list[str] = []
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("turntable.stop", self.rig.turntable.stop),
            ("lightbox.all_off", self.rig.lightbox.all_off),
        ]
        arm = self.rig.arm
        if arm is not None:
            steps.append(("arm.park", lambda: self._when_arm_free(arm.park)))
        for name, step in steps:
            try:
                self.call(step, retries=1)
            except Exception as exc:
                log.error("parking: %s failed: %s", name, exc)
                problems.append(f"{name}: {exc}")
        self._current = _Current()
        return problems

    def _when_arm_free(self, action: Callable[[], T]) -> T:
        """Run an arm command once the arm's task in progress (in its own thread) is over."""
        if not self.arm_lock.acquire(timeout=ARM_BUSY_TIMEOUT_S):
            raise DeviceTimeout(f"arm: still busy after {ARM_BUSY_TIMEOUT_S:g} s")
        try:
            return action()
        finally:
            self.arm_lock.release()
