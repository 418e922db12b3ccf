"""Test fixture: write a tiny coinrig dataset (format version 1) of procedural coin images.

Each coin is a disc with its own random marks (its "identity"), photographed on the turntable at
several angles (the image is rotated by the angle, counter-clockwise) under several light
patterns (a brightness gradient from the light's direction), off-centre by a few pixels; the
catalog image of each side is upright, lit softly, on a lighter background, saved as JPEG.
It does not depend on rig.sim: it only has to honour the on-disk contract.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

LIGHTS = {"diffuse": None, "raking-n": 90.0, "raking-e": 0.0}


@dataclass(frozen=True)
class Spec:
    n_coins: int = 8
    angles: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
    lights: tuple[str, ...] = ("diffuse", "raking-n")
    sides: tuple[str, ...] = ("obverse", "reverse")
    size: int = 64
    catalog: bool = True
    light_background: bool = False
    seed: int = 0
    first_id: int = 0  # coin ids start at SYN-{first_id}: another set of coins, other ids


def _marks(rng: np.random.Generator, size: int) -> list[tuple[str, tuple[int, ...], int]]:
    """Random strokes and dots that make one coin side unique."""
    c, r = size // 2, int(size * 0.3)
    marks: list[tuple[str, tuple[int, ...], int]] = []
    for _ in range(6):
        a, b = rng.uniform(0, 2 * np.pi, 2)
        ra, rb = rng.uniform(0.1, 0.9, 2) * r
        p = (int(c + ra * np.cos(a)), int(c + ra * np.sin(a)))
        q = (int(c + rb * np.cos(b)), int(c + rb * np.sin(b)))
        marks.append(("line", (*p, *q), int(rng.integers(20, 90))))
    for _ in range(4):
        a = rng.uniform(0, 2 * np.pi)
        ra = rng.uniform(0, 0.8) * r
        p = (int(c + ra * np.cos(a)), int(c + ra * np.sin(a)))
        marks.append(
            ("dot", (*p, int(rng.integers(2, max(3, size // 12)))), int(rng.integers(200, 255)))
        )
    return marks


def render(
    marks: list[tuple[str, tuple[int, ...], int]],
    size: int,
    *,
    angle: float,
    light: str,
    offset: tuple[int, int],
    background: int,
    toning: tuple[int, int, int] = (170, 140, 90),
) -> np.ndarray:
    """One RGB uint8 image of a coin side."""
    coin = np.zeros((size, size, 3), np.uint8)
    c, r = size // 2, int(size * 0.3)
    cv2.circle(coin, (c, c), r, toning, -1)
    for kind, geom, shade in marks:
        colour = (shade, int(shade * 0.8), int(shade * 0.5))
        if kind == "line":
            cv2.line(coin, geom[:2], geom[2:], colour, max(1, size // 32))
        else:
            cv2.circle(coin, geom[:2], geom[2], colour, -1)
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (c, c), r, 255, -1)
    m = cv2.getRotationMatrix2D((c, c), angle, 1.0)
    m[:, 2] += offset
    coin = cv2.warpAffine(coin, m, (size, size))
    mask = cv2.warpAffine(mask, m, (size, size))
    direction = LIGHTS[light]
    gain = np.ones((size, size), np.float32)
    if direction is not None:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
        t = np.deg2rad(direction)
        gain = 1.0 + 0.5 * (xx * np.cos(t) - yy * np.sin(t))
    lit = np.clip(coin.astype(np.float32) * gain[..., None], 0, 255)
    out = np.full((size, size, 3), background, np.float32)
    alpha = (mask.astype(np.float32) / 255)[..., None]
    return (alpha * lit + (1 - alpha) * out).astype(np.uint8)


def _write(path: Path, rgb: np.ndarray) -> str:
    """Write an image (PNG or JPEG by suffix) and return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())
    return hashlib.sha256(buf.tobytes()).hexdigest()


def write_dataset(root: Path, spec: Spec = Spec()) -> Path:
    """Write the dataset under root and return root."""
    rng = np.random.default_rng(spec.seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "format": "coinrig-dataset",
                "version": 1,
                "created": "2026-01-01T00:00:00Z",
                "software": "coinrig 0.1.0",
            }
        )
    )
    coins, lines = [], []
    bg = 225 if spec.light_background else 20
    for i in range(spec.n_coins):
        coin_id = f"SYN-{spec.first_id + i:04d}"
        coins.append({"coin_id": coin_id, "ruler": f"ruler-{i % 2}", "type": f"type-{i % 3}"})
        for side in spec.sides:
            marks = _marks(rng, spec.size)
            # Toning differs from coin to coin (silver grey to copper red), as on real coins.
            red, green, blue = (int(v) for v in rng.integers(60, 230, 3))
            toning = (red, green, blue)
            if spec.catalog:
                rel = f"catalog/{coin_id}/{side}.jpg"
                img = render(
                    marks,
                    spec.size,
                    angle=0.0,
                    light="diffuse",
                    offset=(0, 0),
                    background=235,
                    toning=toning,
                )
                lines.append(
                    _line(
                        rel,
                        coin_id,
                        side,
                        "catalog",
                        0,
                        0.0,
                        "catalog",
                        _write(root / rel, img),
                        spec.size,
                    )
                )
            shot = 0
            for light in spec.lights:
                for angle in spec.angles:
                    offset = tuple(
                        int(v) for v in rng.integers(-spec.size // 10, spec.size // 10 + 1, 2)
                    )
                    img = render(
                        marks,
                        spec.size,
                        angle=angle,
                        light=light,
                        offset=offset,
                        background=bg,
                        toning=toning,
                    )
                    noise = rng.normal(0, 4, img.shape)
                    img = np.clip(img + noise, 0, 255).astype(np.uint8)
                    rel = f"images/{coin_id}/{side}/{shot:04d}.png"
                    line = _line(
                        rel,
                        coin_id,
                        side,
                        "capture",
                        shot,
                        angle,
                        light,
                        _write(root / rel, img),
                        spec.size,
                    )
                    if not spec.catalog and shot == 0:
                        line["reference"] = True
                    lines.append(line)
                    shot += 1
    (root / "coins.jsonl").write_text("".join(json.dumps(c) + "\n" for c in coins))
    (root / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    return root


def _line(
    rel: str,
    coin_id: str,
    side: str,
    role: str,
    shot: int,
    angle: float,
    light: str,
    sha: str,
    size: int,
) -> dict[str, object]:
    return {
        "file_name": rel,
        "coin_id": coin_id,
        "side": side,
        "role": role,
        "session_id": "S0001" if role == "capture" else None,
        "shot": shot,
        "turntable_deg": angle,
        "tilt_deg": 0.0,
        "light": light,
        "lights": {},
        "exposure_us": 10000,
        "gain_db": 0.0,
        "camera": "synthetic",
        "width": size,
        "height": size,
        "pixel_format": "RGB8",
        "captured_at": "2026-01-01T00:00:00Z",
        "sha256": sha,
    }
