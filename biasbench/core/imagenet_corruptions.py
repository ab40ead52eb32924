"""The corruption sets of ImageNet-C (Hendrycks & Dietterich, ICLR 2019) and ImageNet-C̄ (Mintun et
al., NeurIPS 2021): names and severities, shared by their datasets and the ImageNet label space."""

from __future__ import annotations

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
