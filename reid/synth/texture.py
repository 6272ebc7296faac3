"""Identities: procedural outfits painted into a DensePose texture atlas (SPEC §2 layout).

An `Outfit` is a small, JSON-friendly description (palette indices, garment lengths, patterns,
logo, back item). Colours come from one shared palette, so different people collide in colour on
purpose, and `sibling` makes hard negatives: a copy of an outfit that differs in one detail only
(logo, back item, pattern, sleeves, shoes, hair) — often a detail seen from one side only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from reid.parts import PART_NAMES, atlas_shape, atlas_tile_origin

# Shared clothing palette (RGB); dark and neutral colours are listed first and drawn more often.
PALETTE = np.array([
    (25, 25, 28), (235, 235, 230), (120, 120, 125), (30, 40, 85), (45, 90, 170), (170, 30, 35),
    (95, 20, 30), (40, 110, 55), (95, 100, 45), (190, 170, 125), (105, 70, 40), (215, 185, 40),
    (225, 135, 160), (100, 55, 130), (225, 110, 30), (35, 125, 130),
], dtype=np.float32)
PALETTE_WEIGHTS = np.array([6, 4, 4, 5, 3, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1], dtype=np.float64)
SKIN = np.array([(240, 200, 170), (215, 165, 130), (180, 130, 95), (135, 90, 60), (90, 60, 40)], np.float32)
HAIR = np.array([(20, 15, 12), (70, 45, 25), (130, 90, 50), (200, 170, 110), (150, 150, 150)], np.float32)

PATTERNS = ("plain", "hstripes", "vstripes", "checks")
LOGOS = ("none", "square", "circle", "diamond")
BACK_ITEMS = ("none", "backpack", "strap")
HAIR_STYLES = ("short", "long", "bald")


@dataclass(frozen=True)
class Outfit:
    skin: int = 0
    hair: int = 0
    hair_style: str = "short"
    top: int = 0
    pattern: str = "plain"
    pattern_color: int = 1
    pattern_period: float = 0.2
    sleeve: float = 1.0  # fraction of the arm (shoulder -> wrist) the top covers
    jacket: int = -1  # palette index of an open jacket worn over the top, -1 = none
    logo: str = "none"
    logo_color: int = 1
    back: str = "none"
    back_color: int = 0
    bottom: int = 3
    leg_cover: float = 1.0  # fraction of the leg (hip -> ankle) the bottom covers
    shoes: int = 0


def _colour(rng: np.random.Generator, avoid: int | None = None) -> int:
    w = PALETTE_WEIGHTS.copy()
    if avoid is not None:
        w[avoid] = 0
    return int(rng.choice(len(PALETTE), p=w / w.sum()))


def sample_outfit(rng: np.random.Generator) -> Outfit:
    top = _colour(rng)
    return Outfit(
        skin=int(rng.integers(len(SKIN))),
        hair=int(rng.integers(len(HAIR))),
        hair_style=str(rng.choice(HAIR_STYLES, p=[0.6, 0.32, 0.08])),
        top=top,
        pattern=str(rng.choice(PATTERNS, p=[0.5, 0.2, 0.15, 0.15])),
        pattern_color=_colour(rng, avoid=top),
        pattern_period=float(rng.choice([0.125, 0.1875, 0.25])),
        sleeve=float(rng.choice([0.15, 0.45, 1.0], p=[0.2, 0.35, 0.45])),
        jacket=_colour(rng, avoid=top) if rng.random() < 0.25 else -1,
        logo=str(rng.choice(LOGOS, p=[0.55, 0.15, 0.15, 0.15])),
        logo_color=_colour(rng, avoid=top),
        back=str(rng.choice(BACK_ITEMS, p=[0.55, 0.3, 0.15])),
        back_color=_colour(rng),
        bottom=_colour(rng),
        leg_cover=float(rng.choice([0.45, 0.8, 1.0], p=[0.2, 0.1, 0.7])),
        shoes=_colour(rng),
    )


def sibling(outfit: Outfit, rng: np.random.Generator) -> Outfit:
    """A hard negative: `outfit` with exactly one detail changed."""
    detail = str(rng.choice(["logo", "back", "pattern", "sleeve", "shoes", "hair", "jacket"]))
    if detail == "logo":
        options = [x for x in LOGOS if x != outfit.logo]
        return dataclasses.replace(outfit, logo=str(rng.choice(options)))
    if detail == "back":
        options = [x for x in BACK_ITEMS if x != outfit.back]
        return dataclasses.replace(outfit, back=str(rng.choice(options)))
    if detail == "pattern":
        options = [x for x in PATTERNS if x != outfit.pattern]
        return dataclasses.replace(outfit, pattern=str(rng.choice(options)))
    if detail == "sleeve":
        options = [x for x in (0.15, 0.45, 1.0) if x != outfit.sleeve]
        return dataclasses.replace(outfit, sleeve=float(rng.choice(options)))
    if detail == "shoes":
        return dataclasses.replace(outfit, shoes=_colour(rng, avoid=outfit.shoes))
    if detail == "hair":
        return dataclasses.replace(outfit, hair=int((outfit.hair + 1 + rng.integers(len(HAIR) - 1)) % len(HAIR)))
    return dataclasses.replace(outfit, jacket=-1 if outfit.jacket >= 0 else _colour(rng, avoid=outfit.top))


def _pattern(outfit: Outfit, base: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Garment colour [T, T, 3] with the outfit's pattern over chart coordinates (u, v)."""
    per = outfit.pattern_period
    if outfit.pattern == "hstripes":
        on = (u / per) % 1 < 0.5
    elif outfit.pattern == "vstripes":
        on = (v / per) % 1 < 0.5
    elif outfit.pattern == "checks":
        on = ((u / per) % 1 < 0.5) ^ ((v / per) % 1 < 0.5)
    else:
        on = np.zeros_like(u, dtype=bool)
    return np.where(on[..., None], PALETTE[outfit.pattern_color], base)


def _logo_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    du, dv = (u - 0.32) / 0.13, (v - 0.5) / 0.16  # chest, centred
    if shape == "square":
        return (np.abs(du) < 1) & (np.abs(dv) < 1)
    if shape == "circle":
        return du**2 + dv**2 < 1
    if shape == "diamond":
        return np.abs(du) + np.abs(dv) < 1.2
    return np.zeros_like(u, dtype=bool)


def _paint(name: str, outfit: Outfit, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colours [T, T, 3] (float) of chart `name` at texel centres (u, v)."""
    skin = np.broadcast_to(SKIN[outfit.skin], u.shape + (3,))
    top = PALETTE[outfit.jacket] if outfit.jacket >= 0 else PALETTE[outfit.top]
    kind = name.split("_")[0]
    if name.startswith("torso"):
        out = _pattern(outfit, np.broadcast_to(top, u.shape + (3,)), u, v)
        if name == "torso_front":
            if outfit.jacket >= 0:  # open jacket: the shirt shows down the middle
                inner = _pattern(outfit, np.broadcast_to(PALETTE[outfit.top], u.shape + (3,)), u, v)
                out = np.where((np.abs(v - 0.5) < 0.13)[..., None], inner, np.broadcast_to(top, u.shape + (3,)))
            out = np.where(_logo_mask(outfit.logo, u, v)[..., None], PALETTE[outfit.logo_color], out)
            if outfit.back == "strap":
                out = np.where((np.abs(u - (0.05 + 0.7 * v)) < 0.06)[..., None], PALETTE[outfit.back_color], out)
        else:
            if outfit.back == "backpack":
                bag = (u > 0.08) & (u < 0.62) & (np.abs(v - 0.5) < 0.3)
                pocket = (u > 0.4) & (u < 0.57) & (np.abs(v - 0.5) < 0.18)
                out = np.where(bag[..., None], PALETTE[outfit.back_color], out)
                out = np.where(pocket[..., None], 0.7 * PALETTE[outfit.back_color], out)
            elif outfit.back == "strap":
                out = np.where((np.abs(u - (0.75 - 0.7 * v)) < 0.06)[..., None], PALETTE[outfit.back_color], out)
        return np.where((u > 0.86)[..., None], PALETTE[outfit.bottom], out)  # trousers' waist
    if kind in ("upper", "lower") and "arm" in name:
        s = 0.5 * u if kind == "upper" else 0.5 + 0.5 * u  # shoulder (0) -> wrist (1)
        sleeve = _pattern(outfit, np.broadcast_to(top, u.shape + (3,)), u, v)
        return np.where((s < outfit.sleeve)[..., None], sleeve, skin)
    if kind in ("upper", "lower") and "leg" in name:
        s = 0.5 * u if kind == "upper" else 0.5 + 0.5 * u  # hip (0) -> ankle (1)
        return np.where((s < outfit.leg_cover)[..., None], PALETTE[outfit.bottom], skin)
    if kind == "hand":
        return np.array(skin)
    if kind == "foot":
        sole = v > 0.75  # underside-ish quarter
        return np.where(sole[..., None], 0.6 * PALETTE[outfit.shoes] + 40, PALETTE[outfit.shoes])
    if kind == "head":
        hair = HAIR[outfit.hair]
        if outfit.hair_style == "bald":
            hair_mask = u > 0.95
        else:
            low = 0.15 if outfit.hair_style == "long" else 0.55
            hair_mask = (u > 0.8) | ((v > 0.45) & (u > low))
        out = np.where(hair_mask[..., None], hair, skin)
        eye = (np.abs(u - 0.6) < 0.05) & (np.abs(v - 0.14) < 0.06)
        return np.where(eye[..., None], 30.0, out)
    raise ValueError(f"no painter for part {name!r}")


def make_atlas(outfit: Outfit, tile: int, rng: np.random.Generator) -> np.ndarray:
    """The outfit painted into a uint8 [6T, 4T, 3] atlas, with per-texel fabric noise from `rng`."""
    if tile < 4:
        raise ValueError(f"atlas tile size must be >= 4, got {tile}")
    atlas = np.zeros(atlas_shape(tile), np.float32)
    centres = (np.arange(tile) + 0.5) / tile
    u = np.broadcast_to(centres[None, :], (tile, tile))  # column = floor(U T)
    v = np.broadcast_to(1.0 - centres[:, None], (tile, tile))  # row = floor((1 - V) T)
    for part, name in PART_NAMES.items():
        r0, c0 = atlas_tile_origin(part, tile)
        atlas[int(r0):int(r0) + tile, int(c0):int(c0) + tile] = _paint(name, outfit, u, v)
    atlas += rng.normal(0.0, 5.0, atlas.shape[:2])[..., None] + rng.normal(0.0, 2.0, atlas.shape)
    return np.clip(np.rint(atlas), 0, 255).astype(np.uint8)
