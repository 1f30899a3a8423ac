"""A Camelyon17 fixture in WILDS' on-disk layout, for tests and benchmarks.

``camelyon17_v1.0/{RELEASE_v1.0.txt, metadata.csv, patches/...png}`` as the real
``wilds`` package reads it (``wilds.get_dataset(dataset="camelyon17", root_dir=...)``):
five hospitals, each slide's patches in ``patches/patient_P_node_N/``, the metadata's
``split`` column 0 (train) or 1 (id_val, hospitals 0, 3 and 4 only); the dataset class
itself moves hospital 1 to ``val`` and hospital 2 to ``test``. A patch is pink tissue
tinted per hospital (the domain), with dark nuclei when it holds tumour (the class).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# hospital -> WILDS split code of its patches: 0 train, 1 id_val (hospitals 0, 3, 4); the
# dataset class itself moves hospital 1 to 'val' (3) and hospital 2 to 'test' (2).
HOSPITALS = (0, 1, 2, 3, 4)
PATCHES_PER_SLIDE = 10
SLIDES_PER_HOSPITAL = 2


def _patch(rng: np.random.Generator, tumour: int, hospital: int) -> np.ndarray:
    """A 96x96 RGB patch: pink tissue tinted per hospital, dark nuclei if tumour."""
    tint = np.array([230, 160 + 12 * hospital, 200 - 10 * hospital], np.float32)
    img = tint + rng.normal(0, 12, (96, 96, 3))
    if tumour:
        yy, xx = np.mgrid[:96, :96]
        for cy, cx in rng.uniform(32, 64, (6, 2)):
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < 30] = (90, 40, 120)
    return img.clip(0, 255).astype(np.uint8)


def write_camelyon17(root: Path, *, patches_per_slide: int = PATCHES_PER_SLIDE,
                     slides_per_hospital: int = SLIDES_PER_HOSPITAL, seed: int = 0
                     ) -> dict[int, int]:
    """Write the fixture under ``root``; the last 4 patches of each slide of hospitals 0,
    3 and 4 are id_val. Returns the number of patches per hospital."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = root / "camelyon17_v1.0"
    (base / "patches").mkdir(parents=True)
    (base / "RELEASE_v1.0.txt").write_text("v1.0 fixture\n")
    rows, counts = [], {}
    slide = 0
    for hospital in HOSPITALS:
        for s in range(slides_per_hospital):
            patient, node = f"{hospital * 100 + s:03d}", s % 5
            folder = base / "patches" / f"patient_{patient}_node_{node}"
            folder.mkdir()
            for k in range(patches_per_slide):
                tumour = k % 2
                x, y = 96 * k, 96 * (k + s)
                Image.fromarray(_patch(rng, tumour, hospital)).save(
                    folder / f"patch_patient_{patient}_node_{node}_x_{x}_y_{y}.png")
                split = 1 if (hospital in (0, 3, 4) and k >= patches_per_slide - 4) else 0
                rows.append(f"{len(rows)},{patient},{node},{x},{y},{tumour},{slide},"
                            f"{hospital},{split}")
                counts[hospital] = counts.get(hospital, 0) + 1
            slide += 1
    header = ",patient,node,x_coord,y_coord,tumor,slide,center,split"
    (base / "metadata.csv").write_text("\n".join([header, *rows]) + "\n")
    return counts
