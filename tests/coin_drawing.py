"""Test helper: draw coins with a rim and die detail on paper, towel, wood and velvet backdrops."""

from __future__ import annotations

import cv2
import numpy as np

BACKDROPS = ("paper", "towel", "wood", "velvet")


def backdrop(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 backdrop: plain paper, woven towel, grained glossy wood, dark velvet."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "paper":
        base = np.full((h, w, 3), (236, 234, 228), np.float32) - xx[..., None] * 0.01
    elif kind == "towel":
        weave = 12 * np.sin(xx / 3.0) * np.sin(yy / 3.0)
        base = np.full((h, w, 3), (225, 220, 205), np.float32) + weave[..., None]
    elif kind == "wood":
        grain = 18 * np.sin(xx / 9.0 + 3 * np.sin(yy / 60.0)) + 8 * np.sin(xx / 2.3)
        base = np.stack([110 + grain, 50 + grain * 0.5, 25 + grain * 0.3], axis=2)
    elif kind == "velvet":
        base = np.full((h, w, 3), (22, 20, 26), np.float32)
    else:
        raise ValueError(kind)
    noise = rng.normal(0, 4, (h, w, 1)).astype(np.float32)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def draw_coin(
    image: np.ndarray,
    x: int,
    y: int,
    r: int,
    rng: np.random.Generator,
    tone: tuple[int, int, int] = (200, 160, 90),
) -> None:
    """Draw a shaded coin in place: flat field, raised rim, random die strokes, soft shadow."""
    cv2.circle(image, (x + r // 12, y + r // 12), r, (40, 30, 25), -1, cv2.LINE_AA)  # shadow
    cv2.circle(image, (x, y), r, tone, -1, cv2.LINE_AA)
    rim = tuple(int(c * 0.7) for c in tone)
    cv2.circle(image, (x, y), int(r * 0.9), rim, max(2, r // 12), cv2.LINE_AA)
    for _ in range(10):
        a, b = rng.uniform(0, 2 * np.pi, 2)
        ra, rb = rng.uniform(0, 0.7, 2) * r
        p = (int(x + ra * np.cos(a)), int(y + ra * np.sin(a)))
        q = (int(x + rb * np.cos(b)), int(y + rb * np.sin(b)))
        shade = tuple(int(c * rng.uniform(0.5, 1.2)) for c in tone)
        cv2.line(image, p, q, tuple(min(255, s) for s in shade), max(1, r // 15), cv2.LINE_AA)


def scene(
    kind: str,
    coins: list[tuple[int, int, int]],
    *,
    size: tuple[int, int] = (480, 640),
    glare: tuple[int, int, int] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A photo of coins (x, y, r) on a backdrop, with an optional round glare spot (x, y, r)."""
    rng = np.random.default_rng(seed)
    image = backdrop(kind, *size, rng)
    if glare is not None:
        gx, gy, gr = glare
        cv2.circle(image, (gx, gy), gr, (255, 255, 255), -1, cv2.LINE_AA)
        image = cv2.GaussianBlur(image, (0, 0), 1.0)
    tones = [(200, 160, 90), (190, 110, 70), (200, 200, 205), (170, 140, 60)]
    for n, (x, y, r) in enumerate(coins):
        draw_coin(image, x, y, r, rng, tones[n % len(tones)])
    return image
