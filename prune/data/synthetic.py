"""Synthetic segmentation scenes: textured shapes over textured backgrounds, deterministic from
(seed, split, index), at any size, for tests and for pruning runs without a real data set.

Class 0 is the background. Every foreground class has a fixed look, the same in every seed and
split: a shape (disc, rectangle, triangle, ring, diamond, cross, band, ellipse), a texture
(stripes, checker, dots, rings, grid, solid, zigzag, blotches) and a hue family. Two classes share
each hue family, so colour alone does not decide the class: a network must also read texture and
shape, and that needs some receptive field (a capacity a pruned network can lose). Backgrounds are
smooth colour fields with a faint texture of their own, in any hue but less saturated. Objects
come at several scales (log-uniform over about 8% to 40% of the image side), rotated, with jittered
colours, occluding each other; the whole image gets brightness/contrast jitter and pixel noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from prune.data.transforms import normalize

SPLIT_IDS = {"train": 0, "val": 1}
Array = np.ndarray


# Shapes in an object's own frame (u, v), unit size: boolean masks.
def _disc(u: Array, v: Array) -> Array:
    return u * u + v * v <= 1.0


def _rectangle(u: Array, v: Array) -> Array:
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.6)


def _triangle(u: Array, v: Array) -> Array:
    return (v >= -0.5) & (math.sqrt(3.0) * np.abs(u) + v <= 1.0)


def _ring(u: Array, v: Array) -> Array:
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.35)


def _diamond(u: Array, v: Array) -> Array:
    return np.abs(u) + np.abs(v) <= 1.0


def _cross(u: Array, v: Array) -> Array:
    return ((np.abs(u) <= 1.0) & (np.abs(v) <= 0.35)) | ((np.abs(v) <= 1.0) & (np.abs(u) <= 0.35))


def _band(u: Array, v: Array) -> Array:
    return (np.abs(u) <= 3.0) & (np.abs(v) <= 0.3)


def _ellipse(u: Array, v: Array) -> Array:
    return u * u + 4.0 * v * v <= 1.0


SHAPES: tuple[Callable[[Array, Array], Array], ...] = (
    _disc, _rectangle, _triangle, _ring, _diamond, _cross, _band, _ellipse,
)  # fmt: skip


# Textures on pixel offsets (x, y) in the object's rotated frame, in units of the texture period:
# values in [0, 1] that mix an object's light and dark colour.
def _stripes(x: Array, y: Array) -> Array:
    return (np.sin(2 * np.pi * x) > 0).astype(np.float32)


def _checker(x: Array, y: Array) -> Array:
    return ((np.floor(x) + np.floor(y)) % 2).astype(np.float32)


def _dots(x: Array, y: Array) -> Array:
    fx, fy = x - np.round(x), y - np.round(y)
    return (fx * fx + fy * fy <= 0.09).astype(np.float32)


def _rings(x: Array, y: Array) -> Array:
    return (np.sin(2 * np.pi * np.sqrt(x * x + y * y)) > 0).astype(np.float32)


def _grid(x: Array, y: Array) -> Array:
    return ((np.abs(x - np.round(x)) < 0.15) | (np.abs(y - np.round(y)) < 0.15)).astype(np.float32)


def _solid(x: Array, y: Array) -> Array:
    return np.zeros_like(x)


def _zigzag(x: Array, y: Array) -> Array:
    return (np.sin(2 * np.pi * (x + 0.5 * np.abs((y % 1.0) - 0.5))) > 0).astype(np.float32)


def _blotches(x: Array, y: Array) -> Array:
    return (np.sin(2.3 * x + np.sin(1.7 * y)) * np.sin(1.9 * y + np.sin(2.1 * x)) > 0.2).astype(np.float32)


TEXTURES: tuple[Callable[[Array, Array], Array], ...] = (
    _stripes, _checker, _dots, _rings, _grid, _solid, _zigzag, _blotches,
)  # fmt: skip


@dataclass(frozen=True)
class ClassLook:
    """What makes a foreground class recognisable."""

    shape: Callable[[Array, Array], Array]
    texture: Callable[[Array, Array], Array]
    hue: float


def class_looks(num_classes: int) -> list[ClassLook]:
    """The looks of classes 1..num_classes-1, fixed by `num_classes` alone (not by the seed)."""
    foreground = num_classes - 1
    families = max(1, math.ceil(foreground / 2))
    return [
        ClassLook(
            shape=SHAPES[k % len(SHAPES)],
            # the texture cycle is offset per lap of the shape cycle, so (shape, texture) stay unique
            texture=TEXTURES[(k + k // len(SHAPES)) % len(TEXTURES)],
            hue=(k // 2) / families,
        )
        for k in range(foreground)
    ]


def _hsv_to_rgb(h: Array, s: Array, v: Array) -> Array:
    """Vectorised HSV -> RGB, all in [0, 1]; channels last."""
    i = np.floor(h * 6.0) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.stack([np.select([i == k for k in range(6)], [c[ch] for c in choices]) for ch in range(3)], axis=-1)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> Array:
    """Random values on a coarse grid, bilinearly upsampled to size x size: smooth fields in [0, 1]."""
    coarse = torch.from_numpy(rng.random((1, channels, cells, cells), dtype=np.float32))
    fine = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)
    return fine[0].permute(1, 2, 0).numpy()


class RenderedScenes(Dataset):
    """A data set of `length` scenes, each rendered from (seed, split, index) by `render`: an RGB
    float32 HWC array in [0, 1] and an int64 HW label array."""

    length: int

    def render(self, index: int) -> tuple[Array, Array]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        image, label = self.render(index)
        return normalize(torch.from_numpy(image).permute(2, 0, 1).contiguous() * 255.0), torch.from_numpy(label)


class SyntheticScenes(RenderedScenes):
    """`length` scenes of `input_size` x `input_size`; item i is the same for the same seed and split."""

    def __init__(self, length: int, input_size: int, num_classes: int = 8, seed: int = 0, split: str = "train") -> None:
        if split not in SPLIT_IDS:
            raise ValueError(f"split {split!r} is not one of {sorted(SPLIT_IDS)}")
        self.length = length
        self.input_size = input_size
        self.num_classes = num_classes
        self.seed = seed
        self.split = split
        self.looks = class_looks(num_classes)
        # texture period: 1/10 of the side, but never finer than 3 pixels (aliasing at tiny sizes)
        self.period = max(3.0, input_size / 10.0)

    def render(self, index: int) -> tuple[Array, Array]:
        """Scene `index` as an RGB float32 HWC array in [0, 1] and an int64 HW label array."""
        rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], index])
        size = self.input_size
        pix_y, pix_x = np.mgrid[0:size, 0:size].astype(np.float32)
        image = self._background(rng, pix_x, pix_y)
        label = np.zeros((size, size), dtype=np.int64)
        for _ in range(rng.integers(2, 7)):
            cls = int(rng.integers(1, self.num_classes))
            mask, colour = self._object(rng, self.looks[cls - 1], pix_x, pix_y)
            image[mask] = colour[mask]
            label[mask] = cls
        gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-0.08, 0.08)
        image = image * gain + bias + rng.normal(0.0, 0.03, image.shape).astype(np.float32)
        return np.clip(image, 0.0, 1.0).astype(np.float32), label

    def _background(self, rng: np.random.Generator, pix_x: Array, pix_y: Array) -> Array:
        size = self.input_size
        field = _smooth_noise(rng, size, int(rng.integers(2, 6)), 3)
        hue = (rng.random() + 0.25 * field[..., 0]) % 1.0
        sat = 0.1 + 0.3 * field[..., 1]
        val = 0.3 + 0.6 * field[..., 2]
        angle = rng.uniform(0, np.pi)
        x = (pix_x * math.cos(angle) + pix_y * math.sin(angle)) / (self.period * rng.uniform(0.7, 1.5))
        y = (-pix_x * math.sin(angle) + pix_y * math.cos(angle)) / self.period
        faint = TEXTURES[int(rng.integers(len(TEXTURES)))](x, y)
        return _hsv_to_rgb(hue, sat, np.clip(val - 0.12 * faint, 0.0, 1.0)).astype(np.float32)

    def _object(self, rng: np.random.Generator, look: ClassLook, pix_x: Array, pix_y: Array) -> tuple[Array, Array]:
        size = self.input_size
        scale = size * math.exp(rng.uniform(math.log(0.08), math.log(0.4)))
        cx, cy = rng.uniform(0, size, 2)
        angle = rng.uniform(0, 2 * np.pi)
        cos, sin = math.cos(angle), math.sin(angle)
        dx, dy = pix_x - cx, pix_y - cy
        along, across = dx * cos + dy * sin, -dx * sin + dy * cos
        mask = look.shape(along / scale, across / scale)
        period = self.period * rng.uniform(0.85, 1.2)
        pattern = look.texture(along / period, across / period)
        hue = (look.hue + rng.uniform(-0.03, 0.03)) % 1.0
        light = _hsv_to_rgb(np.float32(hue), np.float32(rng.uniform(0.65, 1.0)), np.float32(rng.uniform(0.75, 1.0)))
        dark = light * rng.uniform(0.3, 0.5)
        colour = light + (dark - light) * pattern[..., None]
        return mask, colour.astype(np.float32)
