"""The miniature world: a generated "internet" of captioned images on which tiny Stable Diffusion and
CLIP models are pretrained on a CPU, and a few-shot target whose look that world lacks, so that
DataDream's effect can be measured without a GPU.

The world: shapes x colours x fills x backgrounds, each image with a caption ("a photo of a red
striped circle on a gray background", attributes dropped at random so short prompts are known too).
Every world image is a *filled* shape on a *dark, flat* background.

The target (dataset `toyworld`): four of the world's colours as classes (red, yellow, green, blue
things of any shape), all photographed in one look the world never shows: on a light, speckled
ground under a strong blue light, which shifts every colour (red turns magenta, yellow gray, green
teal). CLIP pretrained on the world knows the colour words perfectly on the world's own images, so
zero-shot on the target is above chance but imperfect; Stable Diffusion prompted "a photo of a red"
draws a red shape on a dark ground, missing the look (and a classifier trained on its images learns
the colours as the world shows them); K shots of the target can teach it (the LoRA of DataDream).

`datadream_lib/datasets/generated.py` writes the target dataset from `target_image`;
`datadream_lib/toyworld/pretrain.py` trains the world's models; `models: toy` loads them through the same
calls as SD 2.1 (`StableDiffusionPipeline.from_pretrained`) and CLIP ViT-B/16 (open_clip's
`create_model` of a model folder). `datadream_lib/toyworld/effects.py` holds the comparisons the
miniature results are made of (benchmarks/toyworld_effects.py measures them, tests/test_toyworld.py holds them).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32  # the world's images and the demo's resolution
DRAW = 128  # drawn at this size, then downsampled (anti-aliased)
SHAPES = ("circle", "square", "triangle", "cross", "diamond", "hexagon")
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 235), "yellow": (235, 215, 40),
           "purple": (150, 60, 200), "orange": (245, 140, 30), "white": (235, 235, 235), "cyan": (40, 210, 220)}
FILLS = ("plain", "striped", "dotted")
BACKGROUNDS = {"black": (15, 15, 18), "gray": (80, 80, 84), "navy": (20, 28, 80), "brown": (70, 45, 25)}

# The target's classes and its look (never in the world: a light speckled ground, under a blue light).
TARGET_CLASSES = ("red", "yellow", "green", "blue")  # colours of the world, each a class of things of any shape
TARGET_GROUND = (225, 220, 200)
TARGET_LIGHT = (30, 60, 220)  # the colour cast: every pixel mixed with it
TARGET_CAST = 0.5  # how much of the light (0: none)
TARGET_COUNTS = {"train": 20, "val": 10, "test": 40}
TARGET_VERSION = "toyworld-v2"  # v1 (pink outlines of four shapes) showed no classification effect: docs/toyworld.md


# --- drawing -----------------------------------------------------------------------------------

def _outline(shape: str, cx: float, cy: float, r: float, angle: float) -> list:
    """The shape's polygon (or None for a circle) centred at (cx, cy) with radius r."""
    def ring(n, phase, radius=r):
        return [(cx + radius * math.cos(phase + 2 * math.pi * k / n), cy + radius * math.sin(phase + 2 * math.pi * k / n))
                for k in range(n)]
    if shape == "square":
        return ring(4, math.pi / 4 + angle, r * 1.1)
    if shape == "diamond":
        return ring(4, angle, r * 1.15)
    if shape == "triangle":
        return ring(3, -math.pi / 2 + angle, r * 1.2)
    if shape == "hexagon":
        return ring(6, angle, r)
    if shape == "cross":
        a, b = r, r * 0.36
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    return None


def _mask(shape: str, cx: float, cy: float, r: float, angle: float, width: int = 0) -> Image.Image:
    """The shape as an 'L' mask at DRAW size: filled, or an outline of `width` pixels."""
    mask = Image.new("L", (DRAW, DRAW), 0)
    draw = ImageDraw.Draw(mask)
    poly = _outline(shape, cx, cy, r, angle)
    if poly is None:
        box = (cx - r, cy - r, cx + r, cy + r)
        if width:
            draw.ellipse(box, outline=255, width=width)
        else:
            draw.ellipse(box, fill=255)
    elif width:
        draw.line(poly + poly[:2], fill=255, width=width, joint="curve")
    else:
        draw.polygon(poly, fill=255)
    return mask


def _fill_pattern(fill: str, colour: tuple, rng: np.random.Generator) -> Image.Image:
    """The shape's paint: flat, striped (dark stripes at a random angle) or dotted."""
    paint = Image.new("RGB", (DRAW, DRAW), colour)
    if fill == "plain":
        return paint
    draw = ImageDraw.Draw(paint)
    dark = tuple(int(c * 0.35) for c in colour)
    if fill == "striped":
        step, phase = int(rng.integers(14, 20)), int(rng.integers(0, 14))
        for offset in range(-DRAW + phase, 2 * DRAW, step):
            draw.line([(offset, 0), (offset + DRAW, DRAW)], fill=dark, width=step // 2)
    else:
        step = int(rng.integers(16, 22))
        for y in range(step // 2, DRAW, step):
            for x in range(step // 2, DRAW, step):
                draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=dark)
    return paint


def _finish(img: Image.Image, rng: np.random.Generator, noise: float) -> Image.Image:
    small = img.resize((SIZE, SIZE), resample=Image.Resampling.LANCZOS)
    arr = np.asarray(small, dtype=np.float64) + rng.normal(0, noise, size=(SIZE, SIZE, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _jitter(colour: tuple, rng: np.random.Generator, amount: int = 20) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _place(rng: np.random.Generator) -> tuple[float, float, float, float]:
    r = float(rng.uniform(0.22, 0.36)) * DRAW
    cx, cy = (float(rng.uniform(r + 4, DRAW - r - 4)) for _ in range(2))
    return cx, cy, r, float(rng.uniform(-0.3, 0.3))


def world_image(shape: str, colour: str, fill: str, background: str, rng: np.random.Generator) -> Image.Image:
    """One image of the world: a filled shape on a dark flat background (CLIP's world also has
    outlined ones: fill "outlined")."""
    img = Image.new("RGB", (DRAW, DRAW), _jitter(BACKGROUNDS[background], rng, 10))
    if fill == "outlined":
        img.paste(Image.new("RGB", (DRAW, DRAW), _jitter(COLOURS[colour], rng)), (0, 0),
                  _mask(shape, *_place(rng), width=int(rng.integers(9, 16))))
        return _finish(img, rng, 4.0)
    img.paste(_fill_pattern(fill, _jitter(COLOURS[colour], rng), rng), (0, 0), _mask(shape, *_place(rng)))
    return _finish(img, rng, 4.0)


def target_image(colour: str, rng: np.random.Generator) -> Image.Image:
    """One image of the target: a filled shape (any of the world's) in `colour`, on a light speckled
    ground, the whole under the target's blue light."""
    ground = np.asarray(Image.new("RGB", (DRAW, DRAW), _jitter(TARGET_GROUND, rng, 12)), dtype=np.float64)
    speckle = (rng.random((DRAW // 4, DRAW // 4)) < 0.18)[..., None] * rng.uniform(-70, -30)
    img = Image.fromarray(np.clip(ground + np.kron(speckle, np.ones((4, 4, 1))), 0, 255).astype(np.uint8))
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    img.paste(Image.new("RGB", (DRAW, DRAW), _jitter(COLOURS[colour], rng)), (0, 0), _mask(shape, *_place(rng)))
    lit = (1 - TARGET_CAST) * np.asarray(img, dtype=np.float64) + TARGET_CAST * np.asarray(TARGET_LIGHT, dtype=np.float64)
    return _finish(Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8)), rng, 3.0)


def generic_image(rng: np.random.Generator) -> Image.Image:
    """An uncaptioned image for the VAE alone: one to three shapes, filled or outlined, in any colour,
    on a ground of any colour with or without speckle. Like SD's VAE, trained on far broader images
    than its UNet, it can encode any picture; the captioned world that teaches the UNet and CLIP never
    shows the target's look."""
    ground = np.asarray(Image.new("RGB", (DRAW, DRAW), tuple(int(v) for v in rng.integers(0, 256, 3))), dtype=np.float64)
    if rng.random() < 0.5:
        speckle = (rng.random((DRAW // 4, DRAW // 4)) < rng.uniform(0.05, 0.3))[..., None] * rng.uniform(-80, 80)
        ground = ground + np.kron(speckle, np.ones((4, 4, 1)))
    img = Image.fromarray(np.clip(ground, 0, 255).astype(np.uint8))
    for _ in range(int(rng.integers(1, 4))):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        width = int(rng.integers(6, 18)) if rng.random() < 0.5 else 0
        ink = Image.new("RGB", (DRAW, DRAW), tuple(int(v) for v in rng.integers(0, 256, 3)))
        img.paste(ink, (0, 0), _mask(shape, *_place(rng), width=width))
    return _finish(img, rng, float(rng.uniform(0, 6)))


def world_caption(shape: str, colour: str, fill: str, background: str, rng: np.random.Generator) -> str:
    """The caption, each attribute kept with probability 0.6 (the shape always)."""
    keep = rng.random(3) < 0.6
    words = ([colour] if keep[0] else []) + ([fill] if keep[1] and fill != "plain" else []) + [shape]
    tail = f" on a {background} background" if keep[2] else ""
    return f"a photo of a {' '.join(words)}{tail}"


def world_sample(rng: np.random.Generator) -> tuple[Image.Image, str]:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    fill = FILLS[int(rng.integers(len(FILLS)))]
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    return world_image(shape, colour, fill, background, rng), world_caption(shape, colour, fill, background, rng)


def world(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """n world images (uint8, N x 32 x 32 x 3) and their captions, from `seed`."""
    rng = np.random.default_rng([seed, 7])
    images, captions = [], []
    for _ in range(n):
        image, caption = world_sample(rng)
        images.append(np.asarray(image))
        captions.append(caption)
    return np.stack(images), captions


# --- the target dataset ------------------------------------------------------------------------
