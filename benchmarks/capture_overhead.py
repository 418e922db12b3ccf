"""Benchmark the orchestration overhead of a capture session against the rig's physical time.

Runs one coin through a short plan on the simulation backend at time scale 1 (every motion,
settle and exposure takes its real duration in wall time), with the real drivers, the session
runner and the dataset writer, and compares the session's wall time with the physical critical
path that the twin's ledger booked for it. The difference is what coinrig itself costs:
polling latency, protocol round trips, rendering and encoding that block the device thread.
Goal: under 3 %.

    .venv/bin/python benchmarks/capture_overhead.py                       # quick plan, 512 px
    .venv/bin/python benchmarks/capture_overhead.py --plan standard
    .venv/bin/python benchmarks/capture_overhead.py --image-size 128 --profile

The ledger sums the actions one after the other, which is the critical path because the engine
never runs two physical actions at once. Rig start-up (emulators, banners) is not counted. The
twin renders a frame while its exposure and then the next shot's light switch or motion run
(rig.devices.TriggeredCamera); what the session still waits for is reported apart: it is
the simulation's cost, where a real camera reads out on its own hardware. Both figures are
wall time, so a machine busy with other work inflates them.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from capture.engine import CoinJob
from capture.plan import Plan, expand
from capture.session import SessionRunner
from capture.writer import DatasetWriter
from pipeline.rig_cli.simulate import make_catalog, simulation_config, stage_tray
from rig.assembly import open_rig
from rig.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def run(plan_path: Path, image_size: int, profile: bool) -> dict[str, float]:
    """Capture one coin at time scale 1; return wall and physical seconds."""
    config = simulation_config(
        load_config(ROOT / "rig" / "config" / "presets" / "sim.yaml"),
        coins=1,
        types=1,
        seed=0,
        image_size=image_size,
    )
    plan = Plan.load(plan_path)
    catalog = make_catalog(config)
    jobs = [CoinJob("SIM-0000", 0)]
    with (
        tempfile.TemporaryDirectory() as folder,
        open_rig(config, time_scale=1.0, catalog=catalog) as rig,
        DatasetWriter(Path(folder), queue_size=config.storage.writer_queue) as writer,
    ):
        stage_tray(rig, jobs, plan.sides[0], seed=0)
        assert rig.twin is not None  # opened on the simulation backend
        clock = rig.twin.clock
        waits = _time_frame_waits(rig.camera)
        first = len(clock.entries())
        runner = SessionRunner(rig, plan, writer, jobs, config=config)
        profiler = cProfile.Profile() if profile else None
        start = time.monotonic()
        if profiler is not None:
            profiler.enable()
        status = runner.run()
        if profiler is not None:
            profiler.disable()
        wall = time.monotonic() - start
        entries = clock.entries()[first:]
    if status.taken != len(expand(plan)):
        raise SystemExit(f"session ended {status.state}: {status.message}")
    by_device: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for entry in entries:
        by_device[entry.device][0] += 1
        by_device[entry.device][1] += entry.duration_s
    physical = sum(entry.duration_s for entry in entries)
    # The twin renders each frame while the exposure and then the next shot's motions run;
    # only what the session still waits for is on the critical path. It is a cost of the
    # simulation (a real camera reads out on its own hardware), not of coinrig.
    render = waits["grab_s"] - waits["grab_exposure_s"] + waits["collect_s"]
    print(f"plan {plan.name}: {status.taken} images of {image_size} px, 1 coin, time scale 1")
    for device, (count, seconds) in sorted(by_device.items()):
        print(f"  ledger {device:<22} {int(count):4d} actions {seconds:8.2f} s")
    overhead = wall - physical
    print(f"physical critical path {physical:8.2f} s")
    print(f"wall time              {wall:8.2f} s")
    print(f"overhead               {overhead:8.2f} s = {100 * overhead / physical:.2f} %")
    print(f"  twin rendering       {render:8.2f} s (frames still rendering when collected)")
    orchestration = overhead - render
    print(
        f"  orchestration        {orchestration:8.2f} s = {100 * orchestration / physical:.2f} % "
        "(drivers, protocol round trips, polling, runner, writer)"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return {"wall_s": wall, "physical_s": physical, "render_s": render}


def _time_frame_waits(camera: Any) -> dict[str, float]:
    """Time what the session waits for frames beyond their exposures; returns growing sums.

    A camera with `trigger` (the twin) is waited for in `result()`, when the runner collects a
    frame after the next shot's set-up; a plain `grab` waits for its exposure and render.
    """
    sums = {"grab_s": 0.0, "grab_exposure_s": 0.0, "collect_s": 0.0}
    grab, trigger = camera.grab, getattr(camera, "trigger", None)

    def timed_grab(*args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            frame = grab(*args, **kwargs)
        finally:
            sums["grab_s"] += time.monotonic() - start
        sums["grab_exposure_s"] += frame.exposure_us / 1e6
        return frame

    class _Timed:
        def __init__(self, exposure: Any) -> None:
            self._exposure = exposure

        def wait_exposed(self) -> None:
            self._exposure.wait_exposed()

        def result(self, timeout_s: float | None = None) -> Any:
            start = time.monotonic()
            try:
                return self._exposure.result(timeout_s)
            finally:
                sums["collect_s"] += time.monotonic() - start

    camera.grab = timed_grab
    if trigger is not None:
        camera.trigger = lambda: _Timed(trigger())
    return sums


def main() -> None:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=ROOT / "capture" / "plans" / "quick.yaml")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--profile", action="store_true", help="cProfile the session thread")
    args = parser.parse_args()
    run(args.plan, args.image_size, args.profile)


if __name__ == "__main__":
    main()
