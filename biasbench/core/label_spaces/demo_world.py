"""The demo world's label space: K shape/texture classes of the synthetic world (:mod:`biasbench.core.world`).

Its default datasets are the world's splits; its metric defaults size each measurement to what the
report across the zoo needs (``benchmarks/demo_retest.py``: the seed-to-seed noise of every bias and
generalization key against its spread between checkpoints) — a seeded 200 of the 1000 test images for
spectral, 155 for critical band; colour stimuli and a third-octave noise grid for critical band, whose
classes differ in colour-independent texture and shape; OOD on 200 images per set, 25 per corruption
cell and 16 for PGD; SIS at τ = 0.99 and HW/50 pixels per step on 32-px images — the SIS fallbacks of
every label space without ImageNet's.
"""

from __future__ import annotations

from biasbench.core import world
from biasbench.core.corruptions import CORRUPTIONS, SEVERITIES
from biasbench.core.labels import DEMO_WORLD, LabelSpace

#: Images per spectral evaluation when ``n_images`` is not set (±3.5 % SE at 50 % per condition). Was
#: 500: at two seeds (``benchmarks/demo_retest.py``) the zoo's spectral_bias, LPP and HPP had a
#: reliability (1 − noise² / spread² between checkpoints) of 0.995–0.996 — flattered by the two seeds'
#: subsets sharing half their images; at 100, 0.92–0.99 (spectral_bias 0.93); 200 keeps every spectral
#: bias key above 0.95.
DEMO_WORLD_N_IMAGES = 200

#: Critical band on the demo world: the study's four octave-spaced noise levels (0.02 … 0.16) give 32-px
#: images only 4 bands x 5 integer thresholds, and 6 of the 11 zoo models got identical thresholds and
#: fits (bandwidth 0.8308). Third-octave levels 0.04 · 2^(k/3), k = 0 … 11 (0.04 … 0.508: the zoo's
#: accuracies cross 50 % between 0.04 and beyond 0.16, the noise-trained models' only near 0.5) triple
#: the resolution; 155 images per condition keep the cost per model (49 x 155 = 7,595 predictions, was
#: 17 x 500 = 8,500: the strong levels need more out-of-range redraws; CPU time of zoo-plain's critical
#: band, 1 thread, mean of 2 runs: 4.3 s before, 3.6 s after; ±4 % SE at 50 %).
DEMO_CRITICAL_BAND_SDS: tuple[float, ...] = tuple(round(0.04 * 2 ** (k / 3), 4) for k in range(12))
DEMO_CRITICAL_BAND_N_IMAGES = 155
#: ... each band's levels from the strongest noise down, stopping at its threshold (the descending
#: series, :mod:`biasbench.metrics.critical_band`): the same thresholds and fits as the whole grid from
#: about half its conditions (the 13 demo checkpoints: 47 %)
DEMO_CRITICAL_BAND_LEVELS = "descending"

#: OOD on the demo world: its clean test split, its 8 corruptions x 5 severities, shape-only sets
#: (edges, silhouettes) as "concepts", PGD-40 at the adversarial recipe's training eps (2/255, step 4 eps
#: as in the study's 0.5/255 with 2/255). 200 images per set (was 100: ``id`` had a reliability of
#: only 0.82 across the zoo), 25 per corruption cell (was 100: ``robustness``, the mean over 40 cells,
#: had 0.998) and 16 for PGD (was 32: ``adversarial``'s reliability 0.971 at 32 images, 0.948 at 16 —
#: ±12.5 % SE at 50 % against a spread of 0.29–0.31 between checkpoints; PGD-40's 40 forward-backward
#: steps per image were 70 % of OOD's work).
DEMO_OOD = {
    "sets": ("imagenet", "c", "edges", "silhouettes", "pgd40"),
    "families": {
        "c": {
            "family": "demo-world",
            "corruptions": tuple(CORRUPTIONS),
            "severities": SEVERITIES,
            "means": {"c_mean": tuple(CORRUPTIONS)},
            "max_per_cell": 25,
        },
    },
    "aggregates": {
        "id": ("imagenet_top1",),
        "robustness": ("c_mean",),
        "concepts": ("edges_top1", "silhouettes_top1"),
        "adversarial": ("pgd40_top1",),
    },
    # ECE / NLL / Brier ({m}) of the aggregates whose parts have a calibration (metrics/ood.py)
    "calibration_aggregates": {
        "id_{m}": ("imagenet_{m}",),
        "robustness_{m}": ("c_{m}_mean",),
    },
    "pgd_eps": 2 / 255,
    "pgd_step": 8 / 255,
    "max_per_set": 200,
    "pgd_n_images": 16,
}

DEMO_WORLD_SPACE = LabelSpace(
    name=DEMO_WORLD,
    num_classes=world.NUM_CLASSES,
    description=f"the synthetic shape-texture demo world, {world.NUM_CLASSES} classes '<shape>/<texture>'",
    class_names_loader=lambda: world.CLASS_NAMES,
    datasets={
        "clean": "demo-world/test",
        "cue-conflict": "demo-world/cue-conflict",
        "edges": "demo-world/edges",
        "filled-silhouettes": "demo-world/silhouette",
    },
    defaults={
        "spectral": {"n_images": DEMO_WORLD_N_IMAGES},
        "critical_band": {
            "image_size": world.WorldConfig().size,  # Metric.work's band count (the world is used as stored)
            "n_images": DEMO_CRITICAL_BAND_N_IMAGES,
            "stimulus": "colour",
            "noise_sds": DEMO_CRITICAL_BAND_SDS,
            "levels": DEMO_CRITICAL_BAND_LEVELS,
        },
        "sis": {"image_size": world.WorldConfig().size},  # Metric.work's steps per image
        "ood": DEMO_OOD,
    },
    # 2: spectral on 200 images (was 500), OOD on 200 per set (was 100) and 25 per corruption cell (was 100)
    # 3: PGD on 16 images (was 32)
    # 4: critical band's descending series (was the whole grid)
    defaults_version="4",
    caveats={
        "ood.concepts": (
            "on the demo world, concepts is the mean accuracy on its edges and silhouettes sets — the "
            "world's shapes with their texture removed — so a correlation of shape bias with concepts is "
            "partly true by construction (the study's concepts: ImageNet-Sketch, -R and Stylized-16)"
        ),
    },
)
