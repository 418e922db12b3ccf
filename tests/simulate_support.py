"""Helpers shared by the `rig simulate` tests: configs, plans, and checks of a dataset on disk."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from capture.checks import verify
from capture.plan import Plan, expand
from dataset.layout import image_name
from dataset.reader import DatasetReader

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT / "rig" / "config" / "presets" / "sim.yaml"
QUICK = ROOT / "capture" / "plans" / "quick.yaml"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py imported as a module (the benchmarks folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def write_config(path: Path, **sections: dict[str, Any]) -> Path:
    """rig/config/presets/sim.yaml with some sections updated (shallow merge per section)."""
    data = yaml.safe_load(SIM.read_text())
    for key, changes in sections.items():
        data[key] = {**data[key], **changes}
    path.write_text(yaml.safe_dump(data))
    return path


def write_plan(path: Path, text: str) -> Path:
    """A plan file."""
    path.write_text(text)
    return path


def metadata_lines(root: Path) -> list[dict[str, Any]]:
    """Every complete metadata line, raw (no superseding), in file order."""
    text = (root / "metadata.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def planned_names(plan: Path, coins: list[str], ext: str = "png") -> set[str]:
    """Every capture file a plan asks for."""
    events = expand(Plan.load(plan))
    return {image_name(c, e.side, e.index, ext) for c in coins for e in events}


def assert_complete_once(root: Path, plan: Path, coins: list[str]) -> None:
    """Every planned shot and both catalog images per coin on disk, each with exactly one line."""
    counts = Counter(line["file_name"] for line in metadata_lines(root))
    duplicates = {name: n for name, n in counts.items() if n > 1}
    assert not duplicates, f"metadata lines repeated: {duplicates}"
    catalog = {f"catalog/{c}/{side}.jpg" for c in coins for side in ("obverse", "reverse")}
    assert set(counts) == planned_names(plan, coins) | catalog


def verify_errors(root: Path) -> list[str]:
    """verify()'s errors as text."""
    return [str(p) for p in verify(root) if p.severity == "error"]


def ground_truth_mismatches(root: Path) -> list[str]:
    """Capture records whose coin, side, lights or angle differ from the twin's at grab time.

    Also checks that the image content agrees with the angle: the coin's true rotation in the
    frame minus the recorded turntable angle is one constant per coin (it neither slips on the
    table nor turns when flipped), so the recorded angle really describes the picture.
    """
    problems: list[str] = []
    offsets: dict[str, set[float]] = defaultdict(set)
    patterns = _light_patterns(root)
    for record in DatasetReader(root).records():
        if record.get("role") != "capture":
            continue
        name, truth = record["file_name"], record.get("sim")
        if not isinstance(truth, dict):
            problems.append(f"{name}: no sim ground truth")
            continue
        if truth["coin"] != record["coin_id"] or truth["side"] != record["side"]:
            problems.append(f"{name}: coin/side {truth['coin']}/{truth['side']} in the twin")
        if truth["lights"] != record["lights"]:
            problems.append(f"{name}: lights {truth['lights']} in the twin")
        # the pattern the record names is the one that was lit (not merely what the driver said)
        levels = patterns.get(record["light"])
        if levels is None or {ch: levels.get(ch, 0.0) for ch in truth["lights"]} != truth["lights"]:
            problems.append(f"{name}: light {record['light']!r} but the twin had {truth['lights']}")
        if record.get("tilt_deg") is not None and record["tilt_deg"] != truth["tilt_deg"]:
            problems.append(f"{name}: tilt {record['tilt_deg']}°, twin {truth['tilt_deg']}°")
        delta = (record["turntable_deg"] - truth["turntable_deg"]) % 360.0
        if min(delta, 360.0 - delta) > 1e-3:
            problems.append(
                f"{name}: recorded {record['turntable_deg']}°, twin {truth['turntable_deg']}°"
            )
        offset = (truth["true_angle_deg"] - record["turntable_deg"]) % 360.0
        offsets[record["coin_id"]].add(round(offset, 3) % 360.0)
    for coin, values in offsets.items():
        if len(values) > 1:
            problems.append(f"{coin}: picture and recorded angle drift apart: {sorted(values)}")
    return problems


def _light_patterns(root: Path) -> dict[str, dict[str, float]]:
    """Light pattern name → channel levels, from the rig configs and plans the sessions used."""
    patterns: dict[str, dict[str, float]] = {}
    for session in DatasetReader(root).sessions():
        patterns.update(
            ((session.get("rig_config") or {}).get("lightbox") or {}).get("patterns", {})
        )
        patterns.update((session.get("plan") or {}).get("patterns") or {})
    return patterns
