"""`synthetic-hard`: synthetic scenes that need the capacity a pruner removes.

On `synthetic` (prune/data/synthetic.py: 8 classes of big textured shapes) uniform scaling to
0.75 of the latency loses nothing, so it cannot tell pruning methods apart. These scenes are
built to be harder in the ways real data sets (ADE20K's long tail of 150 classes) are, and are
still deterministic from (seed, split, index), at any size, cheap to make on a CPU:

- 40 classes with a long-tailed frequency: objects are drawn with Zipf weights (1/rank^0.9 over
  a fixed order), so the rarest object class is about 20x rarer than the most frequent one;
- "stuff" first: every pixel belongs to one of 8 region classes (0-7), 2-4 per scene, laid out
  as the argmax of smooth random fields. Regions 0-3 are the "wet" context, 4-7 the "dry"
  one; region r and r + 4 share a hue and differ in their coarse texture;
- context pairs (6 pairs, classes 8-19): both classes of a pair look exactly alike (shape,
  texture, colour); the label is the first when the object's centre lies in a wet region, the
  second when dry. Only the surroundings tell them apart (a receptive field over the region);
- texture pairs (6 pairs, classes 20-31): same shape and hue, told apart by a fine texture
  (period about 3-5 px: stripes vs checks, dots vs grid, ...);
- thin structures (classes 32-35): straight lines and sine curves 1-3 px wide, long and thin;
- small objects (classes 36-39): 2-6% of the image side;
- other objects come at several scales (log-uniform over 5% to 35% of the side), rotated, with
  jittered colours, occluding each other; the whole image gets brightness/contrast jitter and
  pixel noise, as `synthetic`.

Every pixel has a valid class (no ignore label). The class layout is fixed by the design, not by
the seed: a run on `synthetic-hard` has 40 classes whatever `--classes` says, as a real data set
brings its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from prune.data.synthetic import (SPLIT_IDS, Array, RenderedScenes, _checker, _cross, _diamond, _disc, _dots, _ellipse, _grid,
                                  _hsv_to_rgb, _rectangle, _ring, _rings, _smooth_noise, _solid, _stripes,
                                  _triangle, _zigzag, _blotches, _band)

NUM_CLASSES = 40
REGIONS = 8  # classes 0..7
WET = frozenset(range(4))  # the context of a context pair's first class
ZIPF = 0.9
DESIGN_SEED = 20230615  # orders the long tail; part of the design, not of a run

Shape = Callable[[Array, Array], Array]
Texture = Callable[[Array, Array], Array]


@dataclass(frozen=True)
class Look:
    """How one kind of object is drawn, and the class(es) it is labelled with: two for a context
    pair (wet, dry), one otherwise. `kind` is "object", "thin" or "small"."""

    classes: tuple[int, ...]
    kind: str
    shape: Shape | None  # None for thin structures (drawn as lines or curves)
    texture: Texture
    hue: float
    saturation: float = 0.85
    scale: tuple[float, float] = (0.05, 0.35)  # of the image side, log-uniform
    curved: bool = False  # thin structures: a sine curve instead of a straight line


def looks() -> tuple[Look, ...]:
    """The fixed design: 26 looks over the 32 object classes 8..39."""
    out = []
    context_shapes = (_ring, _band, _cross, _ellipse, _triangle, _diamond)
    for k, shape in enumerate(context_shapes):  # classes 8..19, pairs (8, 9), (10, 11), ...
        out.append(Look((8 + 2 * k, 9 + 2 * k), "object", shape, _solid if k % 2 else _stripes, hue=k / 6 + 0.04))
    texture_pairs = ((_stripes, _checker), (_dots, _grid), (_stripes, _zigzag), (_checker, _dots), (_rings, _stripes),
                     (_grid, _blotches))
    pair_shapes = (_disc, _rectangle, _diamond, _ellipse, _triangle, _disc)
    for k, ((first, second), shape) in enumerate(zip(texture_pairs, pair_shapes)):  # classes 20..31
        hue = (k / 6 + 0.12) % 1.0
        out.append(Look((20 + 2 * k,), "object", shape, first, hue=hue, saturation=0.55, scale=(0.08, 0.35)))
        out.append(Look((21 + 2 * k,), "object", shape, second, hue=hue, saturation=0.55, scale=(0.08, 0.35)))
    for k in range(4):  # classes 32..35
        out.append(Look((32 + k,), "thin", None, _solid, hue=(k / 4 + 0.2) % 1.0, saturation=0.95,
                        scale=(0.3, 0.9), curved=k >= 2))
    for k, shape in enumerate((_disc, _diamond, _cross, _triangle)):  # classes 36..39
        out.append(Look((36 + k,), "small", shape, _solid, hue=(k / 4 + 0.3) % 1.0, saturation=1.0,
                        scale=(0.02, 0.06)))
    return tuple(out)


def look_weights(count: int) -> Array:
    """Zipf weights over the looks in a fixed shuffled order (the long tail)."""
    rank = np.random.default_rng(DESIGN_SEED).permutation(count)
    weights = 1.0 / (rank + 1.0) ** ZIPF
    return weights / weights.sum()


REGION_TEXTURES: tuple[Texture, ...] = (_solid, _blotches, _grid, _rings, _stripes, _zigzag, _dots, _checker)


class HardSyntheticScenes(RenderedScenes):
    """`length` scenes of `input_size` x `input_size`, 40 classes; item i is the same for the same
    seed and split (see the module docstring for what they hold)."""

    num_classes = NUM_CLASSES

    def __init__(self, length: int, input_size: int, seed: int = 0, split: str = "train") -> None:
        if split not in SPLIT_IDS:
            raise ValueError(f"split {split!r} is not one of {sorted(SPLIT_IDS)}")
        self.length, self.input_size, self.seed, self.split = length, input_size, seed, split
        self.looks = looks()
        self.weights = look_weights(len(self.looks))
        self.fine_period = max(3.0, input_size / 24.0)  # texture pairs: fine, never under 3 px
        self.coarse_period = max(6.0, input_size / 8.0)  # regions

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLIT_IDS[self.split], index, 1])  # 1: not synthetic's streams

    def regions(self, index: int) -> Array:
        """Scene `index`'s region (stuff) classes alone, before any object is drawn over them."""
        return self._regions(self._rng(index))[1]

    def render(self, index: int) -> tuple[Array, Array]:
        """Scene `index` as an RGB float32 HWC array in [0, 1] and an int64 HW label array."""
        rng = self._rng(index)
        image, regions = self._regions(rng)
        label = regions.copy()
        size = self.input_size
        pix_y, pix_x = np.mgrid[0:size, 0:size].astype(np.float32)
        for _ in range(int(rng.integers(4, 12))):
            look = self.looks[int(rng.choice(len(self.looks), p=self.weights))]
            cx, cy = rng.uniform(0, size, 2)
            mask, colour = self._draw(rng, look, pix_x - cx, pix_y - cy)
            cls = look.classes[0]
            if len(look.classes) == 2:  # a context pair: the region under the centre decides
                cls = look.classes[0] if int(regions[int(cy), int(cx)]) in WET else look.classes[1]
            image[mask] = colour[mask]
            label[mask] = cls
        gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-0.08, 0.08)
        image = image * gain + bias + rng.normal(0.0, 0.03, image.shape).astype(np.float32)
        return np.clip(image, 0.0, 1.0).astype(np.float32), label

    def _regions(self, rng: np.random.Generator) -> tuple[Array, Array]:
        """2-4 region classes as the argmax of smooth fields, each with its hue and coarse texture."""
        size = self.input_size
        count = int(rng.integers(2, 5))
        types = rng.choice(REGIONS, size=count, replace=False)
        fields = _smooth_noise(rng, size, int(rng.integers(2, 4)), count)
        regions = types[np.argmax(fields, axis=-1)].astype(np.int64)
        pix_y, pix_x = np.mgrid[0:size, 0:size].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        x = (pix_x * math.cos(angle) + pix_y * math.sin(angle)) / self.coarse_period
        y = (-pix_x * math.sin(angle) + pix_y * math.cos(angle)) / self.coarse_period
        image = np.zeros((size, size, 3), dtype=np.float32)
        shade = _smooth_noise(rng, size, 3, 1)[..., 0]
        for r in types:
            inside = regions == r
            hue = np.float32(((r % 4) / 4 + 0.1 + rng.uniform(-0.02, 0.02)) % 1.0)
            pattern = REGION_TEXTURES[r](x, y)
            value = np.clip(0.45 + 0.35 * shade - 0.15 * pattern, 0.0, 1.0)
            colour = _hsv_to_rgb(np.full_like(value, hue), np.full_like(value, 0.35), value)
            image[inside] = colour[inside]
        return image, regions

    def _draw(self, rng: np.random.Generator, look: Look, dx: Array, dy: Array) -> tuple[Array, Array]:
        """One object's mask and colour field, from pixel offsets to its centre."""
        size = self.input_size
        low, high = look.scale
        scale = size * math.exp(rng.uniform(math.log(low), math.log(high)))
        angle = rng.uniform(0, 2 * np.pi)
        cos, sin = math.cos(angle), math.sin(angle)
        along, across = dx * cos + dy * sin, -dx * sin + dy * cos
        if look.kind == "thin":
            width = rng.uniform(1.0, 3.0)
            if look.curved:
                across = across - 0.12 * scale * np.sin(2 * np.pi * along / (0.5 * scale))
            mask = (np.abs(along) <= scale / 2) & (np.abs(across) <= width / 2)
        else:
            mask = look.shape(along / scale, across / scale)
        period = self.fine_period * rng.uniform(0.9, 1.15)
        pattern = look.texture(along / period, across / period)
        hue = (look.hue + rng.uniform(-0.02, 0.02)) % 1.0
        light = _hsv_to_rgb(np.float32(hue), np.float32(look.saturation * rng.uniform(0.85, 1.0)),
                            np.float32(rng.uniform(0.8, 1.0)))
        dark = light * rng.uniform(0.3, 0.45)
        colour = light + (dark - light) * pattern[..., None]
        return mask, colour.astype(np.float32)
