"""The demo world's label space: K shape/texture classes of the synthetic world (:mod:`biasbench.core.world`).

Its default datasets are the world's splits; its metric defaults keep the demo near a minute on two
CPU cores (a seeded 500 of the 1000 test images for spectral and critical band; colour stimuli for
critical band, whose classes differ in colour-independent texture and shape; SIS at τ = 0.99 and
HW/50 pixels per step on 32-px images — the SIS fallbacks of every label space without ImageNet's).
"""

from __future__ import annotations

from biasbench.core import world
from biasbench.core.labels import DEMO_WORLD, LabelSpace

#: Images per evaluation of spectral / critical band when ``n_images`` is not set (±2.2 % SE at 50 %).
DEMO_WORLD_N_IMAGES = 500

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
        "critical_band": {"n_images": DEMO_WORLD_N_IMAGES, "stimulus": "colour"},
    },
)
