"""CIFAR-10 as a label space: 10 classes in the dataset's own label order and names.

The names are the official ones, ``batches.meta``'s ``label_names`` of Krizhevsky's
``cifar-10-batches-py`` (label 0 = airplane … 9 = truck); the dataset plugin
(:mod:`biasbench.harness.datasets.cifar10`) checks every copy's ``batches.meta`` against them. There
are no separate class ids, so the names are the ids: an ImageFolder ``folder:PATH#labels=cifar10``
names its class folders ``airplane/`` … ``truck/`` or ``0/`` … ``9/``.

Default datasets: ``clean`` = ``cifar10/test`` (the 10,000 test images, 32 px, used as stored). No
cue-conflict or 16-class sets and no decision rule onto ``imagenet16``, so ``shape_bias`` and
``acc16`` are not applicable; no OOD families, so ``ood`` is not either.

Metric defaults: SIS at τ = 0.99, the threshold Carter et al. (2021) use on CIFAR-10, with the
Batched-Gradient step of every small-input space (HW/50 pixels per step: 20 at 32 px) and 32
images — the study's own CIFAR backward selection removes one pixel at a time
(``-p sis.method=exact`` reproduces it, 1 + 1024·1025/2 forward passes per image). Spectral and
critical band take every test image (as on ImageNet) and the study's noise grid and gray
low-contrast stimulus; on 32-px images the critical band has 4 bands (:mod:`biasbench.metrics.critical_band`).

Citation: A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", technical report,
University of Toronto, 2009. https://www.cs.toronto.edu/~kriz/cifar.html
"""

from __future__ import annotations

from biasbench.core.labels import CIFAR10, LabelSpace

#: batches.meta's label_names, in label order
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

#: SIS threshold of Carter et al. (2021) on CIFAR-10
CIFAR10_SIS_TAU = 0.99

CIFAR10_SPACE = LabelSpace(
    name=CIFAR10,
    num_classes=len(CLASS_NAMES),
    description="CIFAR-10 (Krizhevsky 2009): 10 classes, airplane … truck, 32-px images",
    class_names_loader=lambda: CLASS_NAMES,
    datasets={"clean": f"{CIFAR10}/test"},
    defaults={"sis": {"tau": CIFAR10_SIS_TAU}},
)
