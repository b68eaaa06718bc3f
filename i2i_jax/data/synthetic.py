"""Embedded synthetic dataset: procedural facades, needing no files and no network.

Each seed gives a building: a CMP-style label map (wall, windows, sills, cornices, balconies,
doors, shops, ...) in the palette of the pix2pix `facades` label images, and a textured "photo"
rendered from it (wall colour, lighting gradient, glass reflections, cast shadows, noise). The
photo is a deterministic function of the labels plus a few per-building draws (wall colour,
light), so a translation model has real structure to learn and an irreducible remainder, like the
real dataset. As in `facades`, A is the photo and B the label map: labels -> photo is `BtoA`.
"""

import numpy as np

# CMP Facade classes, coloured as in the pix2pix `facades` label images (a jet colour map).
CLASSES = (
    "background",
    "facade",
    "window",
    "door",
    "cornice",
    "sill",
    "balcony",
    "blind",
    "deco",
    "molding",
    "pillar",
    "shop",
)
PALETTE = np.array(
    [
        (0, 0, 170),
        (0, 0, 255),
        (0, 85, 255),
        (0, 170, 255),
        (0, 255, 255),
        (85, 255, 170),
        (170, 255, 85),
        (255, 255, 0),
        (255, 170, 0),
        (255, 85, 0),
        (255, 0, 0),
        (170, 0, 0),
    ],
    dtype=np.uint8,
)
_ID = {name: i for i, name in enumerate(CLASSES)}

WALL_COLOURS = np.array(
    [
        (205, 185, 150),
        (165, 85, 60),
        (150, 150, 150),
        (228, 222, 210),
        (215, 182, 110),
        (200, 150, 140),
    ],
    dtype=np.float32,
)
BLIND_COLOURS = np.array([(70, 115, 70), (125, 85, 50), (222, 222, 210)], dtype=np.float32)

STYLES = ("day", "night")
# Seeds of the test split start here, so train and test buildings never coincide; the unpaired
# night-time training domain starts at its own offset, so it shares no building with trainA.
TEST_SEED_OFFSET = 1_000_000
NIGHT_TRAIN_SEED_OFFSET = 500_000


class _Canvas:
    """A label map drawn with rectangles given in fractions of the image size."""

    def __init__(self, size: int):
        self.size = size
        self.labels = np.full((size, size), _ID["facade"], np.uint8)

    def px(self, fraction: float) -> int:
        return round(fraction * self.size)

    def rect(self, top: float, left: float, height: float, width: float, cls: str) -> None:
        """Fill a rectangle; any non-empty extent is at least one pixel thick."""
        y0, x0 = self.px(top), self.px(left)
        y1 = max(y0 + 1, self.px(top + height)) if height > 0 else y0
        x1 = max(x0 + 1, self.px(left + width)) if width > 0 else x0
        self.labels[max(y0, 0) : min(y1, self.size), max(x0, 0) : min(x1, self.size)] = _ID[cls]


def _layout(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
    """Draws the building's label map: floors of window bays over a ground floor of shops.

    Also returns its wall material, which follows from its type (floors and bays), so that a
    model can infer the colour from the structure, whatever the lighting.
    """
    canvas = _Canvas(size)
    sky = rng.uniform(0.0, 0.12)
    canvas.rect(0, 0, sky, 1, "background")
    canvas.rect(sky, 0, 0.035, 1, "cornice")
    ground = rng.uniform(0.18, 0.26)
    top = sky + 0.035
    n_floors, n_bays = int(rng.integers(3, 6)), int(rng.integers(3, 6))
    floor_h, bay_w = (1 - ground - top) / n_floors, 1 / n_bays
    win_w, win_h = bay_w * rng.uniform(0.42, 0.62), floor_h * rng.uniform(0.5, 0.68)

    if rng.random() < 0.4:
        for b in range(1, n_bays):
            canvas.rect(top, b * bay_w - 0.04 * bay_w, 1 - ground - top, 0.08 * bay_w, "pillar")
    for f in range(n_floors):
        floor_top = top + f * floor_h
        if f > 0 and rng.random() < 0.5:
            canvas.rect(floor_top, 0, 0.015, 1, "molding")
        blinds, balcony, deco = rng.random() < 0.3, rng.random() < 0.3, rng.random() < 0.5
        for b in range(n_bays):
            left, wtop = b * bay_w + (bay_w - win_w) / 2, floor_top + 0.2 * floor_h
            if deco:
                canvas.rect(
                    wtop - 0.07 * floor_h, left - 0.05 * win_w, 0.05 * floor_h, win_w * 1.1, "deco"
                )
            canvas.rect(wtop, left, win_h, win_w, "window")
            if blinds and rng.random() < 0.7:
                canvas.rect(wtop, left, win_h * rng.uniform(0.25, 0.6), win_w, "blind")
            canvas.rect(wtop + win_h, left - 0.07 * win_w, 0.06 * floor_h, win_w * 1.14, "sill")
            if balcony:
                canvas.rect(
                    wtop + 0.62 * win_h, left - 0.15 * win_w, 0.45 * win_h, 1.3 * win_w, "balcony"
                )

    ground_top = 1 - ground
    canvas.rect(ground_top, 0, 0.02, 1, "molding")
    door_bay = int(rng.integers(n_bays))
    for b in range(n_bays):
        if b == door_bay:
            canvas.rect(
                ground_top + 0.2 * ground,
                b * bay_w + 0.25 * bay_w,
                0.8 * ground,
                0.5 * bay_w,
                "door",
            )
        elif rng.random() < 0.7:
            canvas.rect(
                ground_top + 0.15 * ground,
                b * bay_w + 0.1 * bay_w,
                0.75 * ground,
                0.8 * bay_w,
                "shop",
            )
    return canvas.labels, (3 * n_floors + n_bays) % len(WALL_COLOURS)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid, bilinearly upsampled."""
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1))
    pos = np.linspace(0, cells, size)
    i = np.minimum(pos.astype(int), cells - 1)
    t = pos - i
    rows = grid[i] * (1 - t)[:, None] + grid[i + 1] * t[:, None]
    return rows[:, i] * (1 - t)[None, :] + rows[:, i + 1] * t[None, :]


def _shadow_below(mask: np.ndarray, length: int) -> np.ndarray:
    """Pixels within `length` rows below a mask (the shadow an overhang casts), mask excluded."""
    shadow = np.zeros_like(mask)
    for shift in range(1, length + 1):
        shadow[shift:] |= mask[:-shift]
    return shadow & ~mask


def _night(photo: np.ndarray, is_: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """The same building after dark: dim blue ambient light, lit windows, a dark sky."""
    night = photo * 0.28 + np.array([8, 12, 30], np.float32)
    glass = is_["window"] | is_["shop"]
    warm = np.array([250, 200, 125], np.float32) * (0.75 + 0.25 * rows)[..., None]
    night[glass] = np.broadcast_to(warm, photo.shape)[glass]
    night[is_["blind"]] = photo[is_["blind"]] * 0.5 + np.array([110, 80, 40], np.float32)
    sky = np.array([18, 22, 52], np.float32) + 30 * rows[..., None]
    night[is_["background"]] = np.broadcast_to(sky, photo.shape)[is_["background"]]
    return night


def _render_photo(
    rng: np.random.Generator, labels: np.ndarray, material: int, style: str
) -> np.ndarray:
    """Renders the labels; every random draw is made whatever the style, so the day and night
    photos of one seed show the same building in the same colours."""
    size = labels.shape[0]
    is_ = {name: labels == i for i, name in enumerate(CLASSES)}
    wall = WALL_COLOURS[material] + rng.uniform(-12, 12, 3)
    colours = np.zeros((len(CLASSES), 3), np.float32)
    colours[_ID["facade"]] = wall
    colours[_ID["molding"]] = wall * 1.1
    colours[_ID["deco"]] = wall * 1.15
    colours[_ID["pillar"]] = wall * 0.88
    colours[_ID["cornice"]] = wall * 1.2
    colours[_ID["sill"]] = (212, 206, 196)
    colours[_ID["window"]] = (62, 76, 96)
    colours[_ID["blind"]] = BLIND_COLOURS[rng.integers(len(BLIND_COLOURS))]
    colours[_ID["balcony"]] = (42, 42, 48)
    colours[_ID["door"]] = (92, 62, 40)
    colours[_ID["shop"]] = (40, 52, 62)
    colours[_ID["background"]] = (150, 190, 232)
    photo = colours[labels]

    rows = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    cols = np.linspace(0, 1, size, dtype=np.float32)[None, :]
    glass = is_["window"] | is_["shop"]
    photo[glass] += (70 * (1 - rows) * np.ones_like(cols))[glass][:, None]  # sky reflection
    photo[is_["background"]] += (40 * rows * np.ones_like(cols))[is_["background"]][:, None]
    slats = (np.arange(size) // max(1, size // 64)) % 2 == 0
    photo[is_["blind"] & slats[:, None]] *= 0.8
    bars = (np.arange(size) // max(1, size // 64)) % 3 == 0
    railing = is_["balcony"] & ~bars[None, :]
    photo[railing] = photo[railing] * 0.4 + 0.6 * np.array([95, 100, 110], np.float32)

    overhang = is_["cornice"] | is_["sill"] | is_["balcony"] | is_["deco"]
    photo[_shadow_below(overhang, max(1, size // 60))] *= 0.68
    photo[_shadow_below(glass, max(1, size // 120)) & ~overhang] *= 0.85
    if style == "night":
        photo = _night(photo, is_, rows * np.ones_like(cols))

    light = 1 + rng.uniform(-0.3, 0.3) * (cols - 0.5) + rng.uniform(-0.1, 0.1) * (rows - 0.5)
    weathering = 1 + 0.07 * _smooth_noise(rng, size, 6)
    grain = rng.normal(1.0, 0.035, (size, size))
    photo *= (light * weathering * grain)[..., None]
    return np.clip(np.round(photo), 0, 255).astype(np.uint8)


def render_facade(seed: int, size: int, style: str = "day") -> tuple[np.ndarray, np.ndarray]:
    """One building as (photo, label map), both uint8 [size, size, 3]; a pure function of seed.

    `style` is `day` or `night`: the same seed gives the same building at either time.
    """
    if style not in STYLES:
        raise ValueError(f"style={style!r} is not one of {STYLES}")
    rng = np.random.default_rng(seed)
    labels, material = _layout(rng, size)
    return _render_photo(rng, labels, material, style), PALETTE[labels]


def split_seeds(split: str, num_examples: int, style: str = "day") -> range:
    """Disjoint seeds: `train` from 0 (night-time train from NIGHT_TRAIN_SEED_OFFSET), every
    other split from TEST_SEED_OFFSET, whatever the style (test buildings have counterparts)."""
    if split != "train":
        start = TEST_SEED_OFFSET
    else:
        start = NIGHT_TRAIN_SEED_OFFSET if style == "night" else 0
    return range(start, start + num_examples)


def render_split(
    split: str, num_examples: int, size: int, style: str = "day"
) -> tuple[np.ndarray, np.ndarray]:
    """All buildings of a split as (photos, label maps), uint8 [N, size, size, 3] each."""
    pairs = [render_facade(seed, size, style) for seed in split_seeds(split, num_examples, style)]
    return np.stack([p for p, _ in pairs]), np.stack([lab for _, lab in pairs])
