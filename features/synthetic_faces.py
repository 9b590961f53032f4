"""A parametric cartoon face whose features follow 12 action-unit intensities (for the synthetic data set).

Drawn with PIL only (no assets). Brows: AU1 raises the inner ends, AU2 the outer ends, AU4 lowers and knits
them (with a furrow). Eyes: AU7 tightens the lids, AU6 raises the cheeks (narrower eyes, crow's feet). Mouth:
AU10 lifts the upper lip (wrinkles beside the nose), AU12 pulls the corners up, AU15 down, AU23 narrows and
AU24 presses the lips thin, AU25 parts them, AU26 drops the jaw. Identity (skin, hair, face width, eye spacing,
background) is fixed per video; pose, lighting and pixel noise vary per frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .tasks import AU

_DARK = (40, 30, 30)


@dataclass(frozen=True)
class Identity:
    """What stays fixed for one person: colours and proportions (fractions of the image size)."""
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    width: float       # face half-width
    eye_gap: float     # half the distance between the eyes
    hair_height: float
    dx: float          # where the face sits in its crop
    dy: float


def random_identity(rng: np.random.Generator) -> Identity:
    tone = rng.uniform(0.35, 1.0)
    skin = tuple(int(v) for v in (np.array([230, 190, 160]) * tone + rng.integers(-10, 10, 3)).clip(0, 255))
    hair = tuple(int(v) for v in (np.array([70, 50, 35]) * rng.uniform(0.3, 2.5)).clip(0, 255))
    bg = tuple(int(v) for v in rng.integers(20, 235, 3))
    return Identity(skin, hair, bg, width=rng.uniform(0.30, 0.38), eye_gap=rng.uniform(0.14, 0.19),
                    hair_height=rng.uniform(0.0, 0.08), dx=rng.uniform(-0.03, 0.03), dy=rng.uniform(-0.03, 0.03))


def render_face(aus: np.ndarray, ident: Identity, size: int = 112, rng: np.random.Generator | None = None,
                jitter: float = 0.01, pose: tuple[float, float, float] = (0.0, 0.0, 0.0),
                light: float = 1.0) -> Image.Image:
    """One RGB face (size x size) whose features follow the 12 AU intensities (order of `AU.labels`).

    pose = (dx, dy, roll in degrees) of slow head motion; jitter adds per-frame shake of that many image
    fractions; light scales brightness; rng draws the jitter and the pixel noise.
    """
    a = dict(zip(AU.labels, np.clip(np.asarray(aus, float), 0, 1)))
    rng = rng or np.random.default_rng(0)
    S = size
    img = Image.new("RGB", (S, S), ident.background)
    d = ImageDraw.Draw(img)
    cx = S * (0.5 + ident.dx + pose[0] + rng.uniform(-jitter, jitter))
    cy = S * (0.5 + ident.dy + pose[1] + rng.uniform(-jitter, jitter))
    w = S * ident.width
    jaw = a["AU26"] * 0.06 * S
    top = cy - 0.45 * S
    d.ellipse([cx - 1.06 * w, top - ident.hair_height * S, cx + 1.06 * w, cy + 0.1 * S], fill=ident.hair)
    d.ellipse([cx - w, top, cx + w, cy + 0.42 * S + jaw], fill=ident.skin)
    eg = S * ident.eye_gap
    ey = cy - 0.10 * S
    lw = max(1, S // 40)
    for side in (-1, 1):
        ex = cx + side * eg
        # brows: AU1 raises the inner end, AU2 the outer end; AU4 lowers them (the inner end most) and knits
        inner_x = ex - side * (0.09 * S - a["AU4"] * 0.035 * S)
        outer_x = ex + side * 0.09 * S
        base = ey - 0.09 * S
        inner_y = base - a["AU1"] * 0.06 * S + a["AU4"] * 0.05 * S
        outer_y = base - a["AU2"] * 0.06 * S + a["AU4"] * 0.02 * S
        d.line([(inner_x, inner_y), (outer_x, outer_y)], fill=_DARK, width=lw)
        # eyes: AU7 tightens the lids, AU6 narrows them from below
        h = 0.035 * S * (1 - 0.6 * a["AU7"]) * (1 - 0.3 * a["AU6"]) + 0.004 * S
        d.ellipse([ex - 0.05 * S, ey - h, ex + 0.05 * S, ey + h], fill=(245, 245, 245), outline=_DARK)
        r = min(h, 0.015 * S)
        d.ellipse([ex - 0.015 * S, ey - r, ex + 0.015 * S, ey + r], fill=_DARK)
        if a["AU7"] > 0.2:      # tightened lower lid
            d.line([(ex - 0.05 * S, ey + h), (ex + 0.05 * S, ey + h)], fill=_DARK, width=1)
        # cheeks: AU6 raises and flushes them, with crow's feet at the outer eye corners
        ch = ey + 0.11 * S - a["AU6"] * 0.04 * S
        blush = (int(min(255, ident.skin[0] + 30 * a["AU6"])), ident.skin[1], ident.skin[2])
        d.ellipse([ex - 0.05 * S, ch - 0.03 * S, ex + 0.05 * S, ch + 0.03 * S], fill=blush)
        if a["AU6"] > 0.3:
            ox = ex + side * 0.06 * S
            for k in (-1, 1):
                d.line([(ox, ey), (ox + side * 0.03 * S * a["AU6"], ey + k * 0.02 * S)], fill=_DARK, width=1)
    if a["AU4"] > 0.3:          # vertical furrow between knitted brows
        fy = ey - 0.08 * S
        for side in (-1, 1):
            d.line([(cx + side * 0.012 * S, fy), (cx + side * 0.012 * S, fy + 0.04 * S * a["AU4"])], fill=_DARK)
    # nose; AU10 lifts the upper lip and wrinkles the skin beside the nose
    d.line([(cx, ey), (cx, cy + 0.07 * S)], fill=_DARK, width=1)
    if a["AU10"] > 0.2:
        for side in (-1, 1):
            d.line([(cx + side * 0.03 * S, cy + 0.03 * S),
                    (cx + side * (0.03 + 0.03 * a["AU10"]) * S, cy + (0.03 + 0.06 * a["AU10"]) * S)], fill=_DARK)
    # mouth: AU12 pulls the corners up, AU15 down; AU23 narrows, AU24 presses the lips thin; AU25 parts the
    # lips, AU26 drops the jaw
    my = cy + 0.20 * S + jaw * 0.5 - a["AU10"] * 0.02 * S
    half = 0.12 * S * (1 - 0.35 * a["AU23"]) * (1 + 0.2 * a["AU12"])
    corner = my - (a["AU12"] - a["AU15"]) * 0.05 * S
    lip = max(1.0, 0.025 * S * (1 - 0.7 * a["AU24"]))
    gap = (a["AU25"] * 0.03 + a["AU26"] * 0.06) * S
    lipc = (150, 60, 60)
    d.polygon([(cx - half, corner), (cx, my - lip - a["AU10"] * 0.01 * S), (cx + half, corner), (cx, my)],
              fill=lipc)
    if gap > 1:
        d.polygon([(cx - half * 0.8, corner + 1), (cx, my), (cx + half * 0.8, corner + 1), (cx, my + gap)],
                  fill=(50, 15, 20))
    d.polygon([(cx - half, corner), (cx, my + gap), (cx + half, corner), (cx, my + gap + lip)], fill=lipc)
    if pose[2]:
        img = img.rotate(pose[2], resample=Image.BILINEAR, center=(cx, cy), fillcolor=ident.background)
    arr = np.asarray(img, np.float32) * light + 3.0 * rng.standard_normal((S, S, 1), dtype=np.float32)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))
