"""The zoo's training recipes: one architecture (``resnet50-w8``), one schedule, different data/augmentation.

Shared schedule (``registry/zoo/training.py``): AdamW (lr 4e-3 one-cycle, weight decay 0.05), batch 128,
800 steps over a pool of ``WorldConfig.n_train`` = 20,000 rendered images (5.1 epochs; the
plain-distribution pool is exactly ``demo-world/train``), cross-entropy, seeded, deterministic. (At 400
steps over 10,000 images the harder recipes — texture-/shape-randomised, adversarial, CutMix — stayed
at 87–90 % test accuracy; the issue asks ≥ 90 % of every model.)

Each recipe moves a bias the way the literature says it does on ImageNet:

================== ================== ==========================================================
recipe             category           what changes (literature)
================== ================== ==========================================================
plain              baseline           nothing
plain-s1           baseline           a second seed (initialisation and batch order)
texture-rand       stylized           every image's texture drawn uniformly at random: only the
                                      shape predicts the label (Stylized-ImageNet, Geirhos et al.
                                      2019 → shape-biased)
texture-rand-half  stylized           half the images texture-randomised (SIN+IN, Geirhos 2019)
shape-rand         shape-randomised   every image's shape drawn at random: only the texture
                                      predicts the label (→ texture-biased)
gaussian-noise     augmentation       x + N(0, σ²), σ ~ U[0, 0.4] per image (Rusak et al. 2020;
                                      noise-augmented models are more robust to noise and more
                                      shape-biased, Geirhos 2021)
blur               augmentation       Gaussian blur, σ ~ U[0, 1.5] px per image (Yoshihara et
                                      al. 2023: blur training raises shape bias / low-freq reliance)
input-dropout      augmentation       in a random half of each batch, each pixel (all 3
                                      channels) replaced by the dataset mean with p = 0.25
                                      (Carter et al. 2021's mitigation of overinterpretation; no
                                      rescaling, the masked value equals the SIS baseline).
                                      Dropout on every image left the network at 47 % (p = 0.5)
                                      and 87 % (p = 0.25) clean test accuracy in this budget: its
                                      BN statistics are those of dropped-out inputs.
adversarial        adversarial        FGSM with random start ("fast AT", Wong et al. 2020),
                                      L∞ ε = 2/255, step 1.25ε (Madry et al. 2018; adversarially
                                      trained models are more shape-biased, lower-frequency).
                                      ε = 4/255 gave 87 % test accuracy in this budget.
mixup              augmentation       mixup, λ ~ Beta(0.4, 0.4) (Zhang et al. 2018)
cutmix             augmentation       CutMix, λ ~ Beta(1, 1) (Yun et al. 2019)
================== ================== ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    name: str
    category: str
    description: str
    seed: int = 0
    steps: int = 800
    batch_size: int = 128
    texture_random: float = 0.0  # fraction of training images with a uniformly random texture
    shape_random: float = 0.0  # fraction with a uniformly random shape
    augment: str = "none"  # none | gaussian-noise | blur | input-dropout | fgsm | mixup | cutmix
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "description": self.description,
            "seed": self.seed,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "texture_random": self.texture_random,
            "shape_random": self.shape_random,
            "augment": self.augment,
            "params": dict(self.params),
        }


_ALL = [
    Recipe("plain", "baseline", "standard training, no augmentation"),
    Recipe("plain-s1", "baseline", "standard training, second seed", seed=1),
    Recipe("texture-rand", "stylized", "random texture per image (Stylized-ImageNet analogue)", texture_random=1.0),
    Recipe("texture-rand-half", "stylized", "half the images with a random texture (SIN+IN analogue)", texture_random=0.5),
    Recipe("shape-rand", "shape-randomised", "random shape per image (texture-only signal)", shape_random=1.0),
    Recipe("gaussian-noise", "augmentation", "Gaussian noise, sigma ~ U[0, 0.4]", augment="gaussian-noise",
           params={"sigma_max": 0.4}),
    Recipe("blur", "augmentation", "Gaussian blur, sigma ~ U[0, 1.5] px", augment="blur", params={"sigma_max": 1.5}),
    Recipe("input-dropout", "augmentation", "input pixel dropout p = 0.25 on half the images (Carter et al.)",
           augment="input-dropout", params={"p": 0.25, "fraction": 0.5}),
    Recipe("adversarial", "adversarial", "FGSM-RS adversarial training, eps = 2/255", augment="fgsm",
           params={"eps": 2 / 255, "alpha": 1.25 * 2 / 255}),
    Recipe("mixup", "augmentation", "mixup, alpha = 0.4", augment="mixup", params={"alpha": 0.4}),
    Recipe("cutmix", "augmentation", "CutMix, alpha = 1.0", augment="cutmix", params={"alpha": 1.0}),
]  # fmt: skip

RECIPES: dict[str, Recipe] = {r.name: r for r in _ALL}
