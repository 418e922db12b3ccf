"""Benchmark shot ordering: physical time of the planner's order vs the naive nested orders.

For one coin of a plan (default: capture/plans/standard.yaml) on a rig (default: the sim rig's
kinematics), three orders of the same shots are timed:

- optimized: capture.plan.expand (lights switch in the inner loop, the turntable serpentines,
  one flip);
- angle outer, light inner: per side, rotate to each angle in ascending order, switching
  through the lights in a fixed order (so every side starts with a rewind to 0°);
- light outer: per side and light, rotate through every angle (a rewind per light).

Each order is timed twice: by the dry-run estimator (capture.plan.estimate_duration_s) and by
the digital twin, which drives the real drivers through the emulators at time scale 0 and sums
the physical ledger (load, flip and unload by the arm included; the last columns leave the
arm out, since coin handling costs the same in every order).

    .venv/bin/python benchmarks/plan_ordering.py
    .venv/bin/python benchmarks/plan_ordering.py --plan quick
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from capture.engine import CaptureEngine, CoinJob
from capture.kinematics import Kinematics
from capture.plan import Plan, ShotEvent, estimate_duration_s, expand, naive_order
from pipeline.rig_cli.simulate import make_catalog, simulation_config, stage_tray
from rig.assembly import open_rig
from rig.config import RigConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def angle_outer(events: list[ShotEvent], plan: Plan) -> list[ShotEvent]:
    """Per side: angles ascending (a rewind to the first), lights in the plan's fixed order."""
    lights = {light: i for i, light in enumerate(plan.lights)}

    def key(event: ShotEvent) -> tuple[int, float, int, int]:
        # the reference view is shot when its angle comes up, before that angle's lights
        light = -1 if event.reference else lights[event.light]
        return (plan.sides.index(event.side), event.turntable_deg, light, event.index)

    return sorted(events, key=key)


def twin_duration_s(config: RigConfig, plan: Plan, order: list[ShotEvent]) -> tuple[float, float]:
    """Physical seconds the twin's ledger books for `order` on one coin: all, and arm excluded."""
    catalog = make_catalog(config)
    job = CoinJob("SIM-0000", 0)
    with open_rig(config, time_scale=0.0, catalog=catalog) as rig:
        stage_tray(rig, [job], order[0].side, seed=0)
        assert rig.twin is not None  # opened on the simulation backend
        clock = rig.twin.clock
        engine = CaptureEngine(rig, plan)
        engine.setup_session()
        first = len(clock.entries())  # homing is not part of the coin's time
        side = order[0].side
        engine.load_coin(job, side)
        for event in order:
            if event.side != side:
                side = event.side
                engine.flip_coin(job, side)
            engine.setup_shot(event, dict(plan.patterns))
            engine.exec_shot(event)
        engine.unload_coin(job)
        entries = clock.entries()[first:]
        arm = rig.twin.emulators.get("arm")
        arm_name = arm.name if arm is not None else None
        total = sum(entry.duration_s for entry in entries)
        return total, sum(e.duration_s for e in entries if e.device != arm_name)


def main() -> None:
    """Time the three orders and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=ROOT / "capture" / "plans" / "standard.yaml")
    parser.add_argument(
        "--config", type=Path, default=ROOT / "rig" / "config" / "presets" / "sim.yaml"
    )
    args = parser.parse_args()
    plan = Plan.load(args.plan)
    # tiny frames: only the ledger matters here, not the pixels
    config = simulation_config(load_config(args.config), coins=1, types=1, seed=0, image_size=32)
    kinematics = Kinematics.from_config(config)
    optimized = expand(plan)
    orders: dict[str, Callable[[list[ShotEvent]], list[ShotEvent]]] = {
        "optimized (expand)": list,
        "angle outer, light inner": lambda events: angle_outer(events, plan),
        "light outer (naive_order)": naive_order,
    }
    print(f"plan {plan.name}: {len(optimized)} shots per coin, rig {config.name}")
    print(
        f"{'order':<28} {'estimate':>9} {'twin ledger':>12} {'ratio':>6} {'estimate':>9}"
        f"   {'without the arm':>16} {'ratio':>6}"
    )
    baseline: tuple[float, float, float] | None = None
    for name, make in orders.items():
        order = make(list(optimized))
        assert Counter(order) == Counter(optimized), "an order must hold the same shots"
        estimate = estimate_duration_s(order, kinematics)
        twin, no_arm = twin_duration_s(config, plan, order)
        baseline = baseline or (estimate, twin, no_arm)
        print(
            f"{name:<28} {estimate:8.1f}s {twin:11.1f}s {twin / baseline[1]:5.2f}x "
            f"{estimate / baseline[0]:8.2f}x   {no_arm:15.1f}s {no_arm / baseline[2]:5.2f}x"
        )


if __name__ == "__main__":
    main()
