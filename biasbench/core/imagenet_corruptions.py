"""The corruption sets of ImageNet-C (Hendrycks & Dietterich, ICLR 2019) and ImageNet-C̄ (Mintun et
al., NeurIPS 2021): names and severities, shared by their datasets and the ImageNet label space, and
:func:`corrupt_image`, one ImageNet-C corruption of one image (Hendrycks' functions as maintained in the
``imagecorruptions-imaug`` package, an optional extra), seeded per image so that a generated tree is
reproducible."""

from __future__ import annotations

import hashlib

import numpy as np

from biasbench.core.errors import InputError, MissingExtra

#: The 15 standard ImageNet-C corruptions (their mean is the usual mCE / mean-accuracy set).
IMAGENET_C_STANDARD: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
#: The 4 extra ImageNet-C corruptions.
IMAGENET_C_EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
#: The 10 ImageNet-C̄ corruptions.
IMAGENET_C_BAR: tuple[str, ...] = (
    "blue_noise_sample", "brownish_noise", "caustic_refraction", "checkerboard_cutout", "cocentric_sine_waves",
    "inverse_sparkles", "perlin_noise", "plasma_noise", "single_frequency_greyscale", "sparkles",
)  # fmt: skip
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

#: The corruptions that take an explicit ``seed`` in ``imagecorruptions`` (their randomness does not
#: come from NumPy's global generator).
_SEEDED_BY_ARGUMENT = ("impulse_noise", "glass_blur")
IMAGECORRUPTIONS_EXTRA = (
    "the ImageNet-C corruptions need the optional extra: pip install 'biasbench[imagenet-c]' "
    "(the imagecorruptions-imaug package)"
)


def corruption_seed(item: str, corruption: str, severity: int) -> int:
    """A seed in [0, 2**31) fixed by the image's name, the corruption and the severity (so a tree made
    twice, or in pieces, is the same bytes)."""
    digest = hashlib.sha256(f"{item}\n{corruption}\n{severity}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def corrupt_image(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """Hendrycks & Dietterich's ``corruption`` at ``severity`` (1..5) applied to an (H, W, 3) uint8 image,
    through the maintained ``imagecorruptions-imaug`` package; the result is (H, W, 3) uint8. The
    corruption's randomness is fixed by ``seed``."""
    if corruption not in (*IMAGENET_C_STANDARD, *IMAGENET_C_EXTRA):
        raise InputError(
            f"unknown ImageNet-C corruption {corruption!r}; known: "
            f"{', '.join((*IMAGENET_C_STANDARD, *IMAGENET_C_EXTRA))}"
        )
    if severity not in SEVERITIES:
        raise InputError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    try:
        from imagecorruptions import corrupt
    except ImportError as e:
        raise MissingExtra(IMAGECORRUPTIONS_EXTRA) from e
    kwargs = {"seed": seed} if corruption in _SEEDED_BY_ARGUMENT else {}
    state = np.random.get_state()
    np.random.seed(seed)  # the package draws from NumPy's global generator; restored afterwards
    try:
        out = corrupt(np.ascontiguousarray(image), corruption_name=corruption, severity=severity, **kwargs)
    finally:
        np.random.set_state(state)
    return np.asarray(out, dtype=np.uint8)
