"""Critical-band masking: which spatial-frequency band of noise a model is most sensitive to.

Citation: A. Subramanian, E. Sizikova, N. J. Majaj and D. G. Pelli, "Spatial-frequency channels,
shape bias, and adversarial robustness", NeurIPS 2023 — as used by P. Gavrikov and J. Keuper, "Can
Biases in ImageNet Models Explain Generalization?", CVPR 2024.

Definition (the study's constants). Per image: Resize(256), CenterCrop(224), grayscale with
PIL's "L" conversion (``(R·19595 + G·38470 + B·7471 + 2¹⁵) >> 16``, i.e. 0.299/0.587/0.114 rounded as
PIL rounds — computed on the device from the uint8 RGB batch), ``x / 255``, contrast reduction
``(x − mean(x)) · 0.2 + 0.449``. Noise: white ``N(0, sd²)`` → Laplacian pyramid (pyrtools
``LaplacianPyramid``: binom5, reflect1, auto height = 7 levels at 224 px) → keep only band ``f``
(``recon_pyr(levels=6 − f)``), rescaled to the RMS of the level-0 band (per image) → added to the
image. Out-of-range pixels (ε = 0.1): where image + noise < 0 the image pixel becomes ε − noise
(so the pixel shows ε), where > 1 it becomes 1 − ε − noise; if that new image value would itself
leave [0, 1], the pixel's noise is redrawn from ``N(0, sd²)`` until image + noise fits. The gray
result is stacked to 3 channels. Grid: bands f = 0 … 6 (centre 1.75·2^f cycles/image), sd ∈
{0.02, 0.04, 0.08, 0.16}, plus the clean condition (sd = 0): 29 conditions, 1000-class top-1.

Thresholds and fit (:mod:`biasbench.metrics.band_thresholds`): with ``M`` the accuracy matrix (rows sd
= 0, .02, .04, .08, .16), ``t_i`` = first ``j ∈ 0…4`` with ``M[4 − j, i] > 50 %`` (raw) or ``> 50 %`` of
the clean accuracy (normalised), else 4. ``A·exp(−(x − μ)²/(2σ²))`` fitted to ``t`` with scipy's
``curve_fit`` (p0 = [1, 0, 1], A ∈ [0, 4]): bandwidth = 2·sqrt(ln 4)·|σ| octaves, centre_frequency =
1.75·2^μ cycles/image, peak_noise_sensitivity = 2^(A − 4) (in general 2^((A − n_sd)·s) for n_sd noise
levels s octaves apart). Parameter ``noise_sds``: the noise grid (default: the label space's
``noise_sds``, else the study's four; the demo world has a finer one, see its label space).

Keys: ``clean_acc``; ``acc@f{f}_sd{sd}`` for every band and noise level (e.g. ``acc@f3_sd0.08``);
``threshold_raw@f{f}`` and ``threshold_norm@f{f}``; for ``v ∈ {raw, norm}``: ``bandwidth_v``,
``centre_frequency_v``, ``peak_noise_sensitivity_v`` and the fitted ``fit_A_v``, ``fit_mu_v``,
``fit_sigma_v``; ``n_bands``; ``colour_stimulus`` (1 for the colour rendering, 0 for the study's); ``out_of_range_pixel_fraction`` and ``redrawn_pixel_fraction`` (over all
noisy conditions; over channel values for the colour stimulus). Per-item outputs: label and one 0/1 column per condition.

Stimulus (parameter ``stimulus``): ``gray-low-contrast`` is the study's rendering above and the
default for every label space except the demo world, whose default is ``colour``: the image as
stored (colour, full contrast), with the same achromatic band noise added to all three channels and
the out-of-range rule applied per channel (a redraw there draws that channel's noise alone). Why:
the world's classes are drawn in random colours whose luminances may coincide, and its zoo never saw
gray or low-contrast images, so the study's rendering leaves every zoo model near chance (clean
accuracy 0.10–0.34 measured; thresholds flat, fits degenerate), while in colour the same noise grid
separates the recipes (e.g. blur-trained models fail on fine-band noise, noise-trained ones do not).

Flat thresholds (every band equal) carry no channel: the fit keys are then omitted and a flag says
so, rather than storing a degenerate fit (σ → ∞).

Other image sizes (the demo world is ≤ 64 px): the pyramid has pyrtools' auto height for the size
(``max_pyr_height + 1``: 7 levels at 224 px, 5 at 64 px, 4 at 32 px), and there is one band per level,
so the band count shrinks with the image: f = 0 … n−1, coarse to fine, band f = pyramid level
n − 1 − f. Band centres stay an octave apart with the finest at H/2 cycles/image, i.e. band 0 is
centred on ``f₀ = (H/2) / 2^(n−1)`` (1.75 at 224 px, 2 at 64 px) and centre_frequency = f₀·2^μ. The
noise levels, ε, contrast and the threshold rule (0 … 4) are unchanged. ImageNet datasets are
decoded at the fixed Resize(256) + CenterCrop(224) (``interpolation`` parameter, default bilinear);
the demo world's ``demo-world/test`` is used as stored.
``n_images``: as in :mod:`biasbench.metrics.spectral` (all images; a seeded 155 on the demo world).

Levels (parameter ``levels``): ``grid`` (the study's, and the default for every label space but the
demo world's) evaluates every band at every noise level. ``descending`` (the demo world's default) is
the psychophysicist's descending method of limits: per band, the noise levels from the strongest down
(the order in which the threshold rule scans them), stopping after the first level whose accuracy
passes both criteria (raw 50 %, normalised 50 % of the clean accuracy). A threshold is that first
passing level, so the levels below it never enter one: every threshold, fit and bias key equals the
grid's, bit for bit, as does each evaluated condition's ``acc@`` key, while the ``acc@`` keys (and
per-item columns) of the levels below the stop are not measured, and ``out_of_range_pixel_fraction``
and ``redrawn_pixel_fraction`` count the evaluated conditions. On the demo zoo it evaluates about half
of the 48 noisy conditions (47 % on the 13 demo checkpoints: the noise-trained ones stop early, the
blur- and texture-trained ones late). Each condition is then one ``ctx.predict`` of its own (the demo
net's rows do not depend on the other rows of their batch, so each evaluated condition's predictions
are the grid's), and an ensemble's members serve it the conditions they evaluated.

Implementation: grayscale, contrast, white noise, the pyramid (a few batched matmuls with exact
pyrtools operators, :mod:`biasbench.metrics.laplacian_pyramid`), the RMS equalisation and the
out-of-range rule (vectorised, with a redraw loop over only the pixels that need it) all run batched on
the device inside the ``transform`` given to ``EvalContext.predict``, in float32 with autocast off.
Noise is seeded per image and condition (``ctx.generator`` salted with band, sd and the image's index
in the dataset): results do not depend on batch size or worker count (they do on the device type,
whose random streams differ). The stimuli do not depend on the model either: the next checkpoint of a
run takes the previous one's (:mod:`biasbench.metrics.stimulus_memo`, when they fit in its memory cap).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from biasbench.metrics import stimulus_memo
from biasbench.metrics.band_thresholds import BandFit, fit_thresholds, thresholds
from biasbench.metrics.base import (
    WORK_DONE,
    Curve,
    CurvePanel,
    DatasetRequest,
    EvalContext,
    ImageSet,
    KeyRole,
    Metric,
    MetricError,
    MetricResult,
    ModelWrapper,
)
from biasbench.metrics.common import (
    eval_index,
    fixed_geometry_request,
    no_autocast,
    space_default,
    topk_correct,
)
from biasbench.metrics.laplacian_pyramid import (
    LaplacianBands,
    band_centre_frequency,
    equalised_band_noise,
    pyramid_levels,
)

NOISE_SDS: tuple[float, ...] = (0.02, 0.04, 0.08, 0.16)
CONTRAST = 0.2
MEAN_LEVEL = 0.449  # ImageNet mean (gray)
EPSILON = 0.1
GRAY_LOW_CONTRAST = "gray-low-contrast"
STIMULI = (GRAY_LOW_CONTRAST, "colour")
MAX_REDRAW_ROUNDS = 10_000
#: the accuracy a threshold asks for: raw, and as a share of the clean accuracy (normalised)
CRITERION = 0.5


def pil_grayscale(x: torch.Tensor) -> torch.Tensor:
    """PIL ``convert("L")`` of a float RGB batch that holds uint8 values / 255: (N, 3, H, W) → (N, H, W) in [0, 1].

    PIL computes ``L = (R·19595 + G·38470 + B·7471 + 0x8000) >> 16`` on the uint8 values.
    """
    u8 = (x * 255.0).round_().to(torch.int32)
    lum = (u8[:, 0] * 19595 + u8[:, 1] * 38470 + u8[:, 2] * 7471 + 0x8000) >> 16
    return lum.to(torch.float32) / 255.0


def reduce_contrast(
    gray: torch.Tensor, contrast: float = CONTRAST, mean_level: float = MEAN_LEVEL
) -> torch.Tensor:
    """``(x − mean(x)) · contrast + mean_level`` per image over its last two dimensions."""
    return (gray - gray.mean(dim=(-2, -1), keepdim=True)) * contrast + mean_level


def apply_out_of_range_rule(
    image: torch.Tensor,
    noise: torch.Tensor,
    draw: Callable[[int, int], torch.Tensor],
    sd: float,
    epsilon: float = EPSILON,
) -> tuple[torch.Tensor, int, int]:
    """Subramanian et al.'s out-of-range fix for ``image + noise`` (both (N, H, W)).

    Where ``image + noise < 0`` the image pixel becomes ``ε − noise``; where ``> 1`` it becomes
    ``1 − ε − noise``; if that new image value would leave [0, 1], the image pixel is kept and its
    noise is redrawn as ``sd · draw(i, k)`` (``k`` standard normals for image ``i``, in raster order of
    the pixels still out of range) until ``image + noise`` lies in [0, 1]. Returns the noisy image,
    the number of out-of-range pixels and the number that needed redraws.
    """
    noise = noise.clone()
    noisy = image + noise
    low, high = noisy < 0, noisy > 1
    shift_low, shift_high = epsilon - noise, (1.0 - epsilon) - noise
    redraw = (low & (shift_low > 1)) | (high & (shift_high < 0))
    image = torch.where(low & ~redraw, shift_low, image)
    image = torch.where(high & ~redraw, shift_high, image)
    n_oob = int((low | high).sum())
    n_redraw = int(redraw.sum()) if n_oob else 0
    bad = redraw
    rounds = 0
    while n_redraw and bool(bad.any()):
        rounds += 1
        if rounds > MAX_REDRAW_ROUNDS:
            raise MetricError(
                f"critical_band: out-of-range redraws did not settle after {MAX_REDRAW_ROUNDS} rounds"
            )
        # each image's draws in raster order of its pixels, images in order: the order of noise[bad]
        draws = [draw(i, int(k)) for i, k in enumerate(bad.flatten(1).sum(dim=1).tolist()) if k]
        noise[bad] = torch.cat(draws).to(noise.dtype) * sd
        out = image + noise
        bad = bad & ((out < 0) | (out > 1))
    return image + noise, n_oob, n_redraw


@contextlib.contextmanager
def full_fp32_matmul() -> Iterator[None]:
    """No TF32 / bf16 shortcuts in float32 matmuls while the pyramid runs (restored afterwards)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@dataclass
class NoiseStats:
    pixels: int = 0
    out_of_range: int = 0
    redrawn: int = 0

    def add(self, pixels: int, out_of_range: int, redrawn: int) -> None:
        self.pixels += pixels
        self.out_of_range += out_of_range
        self.redrawn += redrawn


class CriticalBandTransform:
    """The per-batch stimulus of one condition: gray, contrast-reduced, plus band-limited noise.

    ``level`` is the pyramid level (0 = finest; band f = levels − 1 − f); ``sd = 0`` is the clean
    condition. ``index`` maps batch rows (by the slice ``predict`` passes) to the images' dataset
    indices, which seed their generators.
    """

    def __init__(
        self,
        ctx: EvalContext,
        bands: LaplacianBands,
        level: int,
        sd: float,
        index: list[int],
        *,
        contrast: float = CONTRAST,
        mean_level: float = MEAN_LEVEL,
        epsilon: float = EPSILON,
        stats: NoiseStats | None = None,
        colour: bool = False,
    ) -> None:
        self.ctx, self.bands, self.level, self.sd = ctx, bands, level, float(sd)
        self.index, self.contrast, self.mean_level, self.epsilon = index, contrast, mean_level, epsilon
        self.stats = stats if stats is not None else NoiseStats()
        self.colour = colour

    def salt(self, i: int) -> str:
        return f"critical_band:f={self.bands.levels - 1 - self.level}:sd={self.sd:g}:image={i}"

    def gray(self, x: torch.Tensor) -> torch.Tensor:
        return reduce_contrast(pil_grayscale(x), self.contrast, self.mean_level)

    def noise(self, gens: list[torch.Generator], device: torch.device) -> torch.Tensor:
        """Band-limited, RMS-equalised noise (N, H, W) from each image's own generator."""
        h, w = self.bands.h, self.bands.w
        white = torch.stack([torch.randn(h, w, generator=g, device=device) for g in gens]) * self.sd
        return equalised_band_noise(white, self.level, self.bands)

    def __call__(self, x: torch.Tensor, sl: slice) -> torch.Tensor:
        with no_autocast(x.device), full_fp32_matmul():
            # (N, C·H, W): gray is one plane; colour stacks its channels so the rule runs per channel
            n, c, h, w = x.shape
            img = x.float().reshape(n, c * h, w) if self.colour else self.gray(x.float())
            if self.sd > 0:
                gens = [self.ctx.generator(self.salt(i)) for i in self.index[sl]]
                noise = self.noise(gens, x.device)
                if self.colour:
                    noise = noise[:, None].expand(-1, c, -1, -1).reshape(n, c * h, w)

                def draw(i: int, k: int) -> torch.Tensor:
                    return torch.randn(k, generator=gens[i], device=x.device)

                img, n_oob, n_redraw = apply_out_of_range_rule(img, noise, draw, self.sd, self.epsilon)
                self.stats.add(img.numel(), n_oob, n_redraw)
            out = img.reshape(n, c, h, w) if self.colour else img[:, None].expand(-1, 3, -1, -1)
            fmt = torch.channels_last if self.ctx.channels_last else torch.contiguous_format
            return out.contiguous(memory_format=fmt)


def fit_keys(fit: BandFit | None, suffix: str) -> dict[str, float]:
    if fit is None:
        return {}
    return {
        f"bandwidth_{suffix}": fit.bandwidth,
        f"centre_frequency_{suffix}": fit.centre_frequency,
        f"peak_noise_sensitivity_{suffix}": fit.peak_noise_sensitivity,
        f"fit_A_{suffix}": fit.a,
        f"fit_mu_{suffix}": fit.mu,
        f"fit_sigma_{suffix}": fit.sigma,
    }


#: conditions predicted in one call (full batches across conditions) while their images take at most
#: this many bytes (uint8) together; beyond it (ImageNet's 50,000 images) one call per condition
JOIN_MAX_BYTES = 128 * 2**20


class JoinedTransform:
    """The transforms of several conditions over one tensor holding the images once per condition:
    row ``r`` is image ``r % n`` under condition ``r // n``. Each condition's rows in a batch go through
    its own transform with their slice of the images (which seeds their noise), so every row gets
    exactly the stimulus a call per condition would give it."""

    def __init__(self, transforms: list[CriticalBandTransform], n: int) -> None:
        self.transforms, self.n = transforms, n

    def __call__(self, x: torch.Tensor, sl: slice) -> torch.Tensor:
        parts, start = [], sl.start
        while start < sl.stop:
            j, i = divmod(start, self.n)
            stop = min(sl.stop, (j + 1) * self.n)
            rows = slice(start - sl.start, stop - sl.start)
            parts.append(self.transforms[j](x[rows], slice(i, i + stop - start)))
            start = stop
        return torch.cat(parts) if len(parts) > 1 else parts[0]


def criteria(clean: float) -> dict[str, float]:
    """The threshold criteria: ``raw`` 50 % accuracy, ``norm`` 50 % of the clean accuracy."""
    return {"raw": CRITERION, "norm": CRITERION * clean}


@dataclass
class _Asking:
    """What every way of asking a job's conditions shares: the model and its context, the evaluated
    images and labels, each condition's stimulus (``transform(level, sd)``), the job's noise counters
    and what its stimuli depend on besides the images, conditions and batch size (``memo_key``)."""

    model: ModelWrapper
    ctx: EvalContext
    images: torch.Tensor
    labels: torch.Tensor
    transform: Callable[[int, float], CriticalBandTransform]
    dataset_name: str
    stats: NoiseStats
    memo_key: Hashable

    def remembered(
        self,
        key: Hashable,
        nbytes: int,
        t: Callable[[torch.Tensor, slice], torch.Tensor],
        part: Hashable = None,
    ) -> Callable[[torch.Tensor, slice], torch.Tensor]:
        """``t`` through the stimulus memo, with what building it adds to the job's counters."""
        stats = self.stats
        return stimulus_memo.remembered(
            key,
            nbytes,
            t,
            lambda: (stats.pixels, stats.out_of_range, stats.redrawn),
            lambda d: stats.add(*d),
            part=part,
        )

    def correct(self, condition: str, t: Callable[[torch.Tensor, slice], torch.Tensor]) -> torch.Tensor:
        """Top-1 correctness of one condition, asked in one ``ctx.predict``."""
        logits = self.ctx.predict(
            self.model, self.images, transform=t, description=_describe(condition, self.dataset_name)
        )
        return topk_correct(logits, self.labels, 1)


def _predict_conditions(
    job: _Asking, n_bands: int, sds: tuple[float, ...], descending: bool = False
) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Top-1 correctness of every evaluated condition and the accuracy matrix.

    ``descending=False`` (the grid): conditions run clean first, then band by band (coarse to fine),
    each band at every noise level — all in one ``ctx.predict`` over the images repeated per condition
    while they fit in :data:`JOIN_MAX_BYTES` (:class:`JoinedTransform`; the demo's 155 images × 49
    conditions), else one call per condition; the joined stimuli are remembered for the next checkpoint
    under ``memo_key`` (what they depend on besides the images, conditions and batch size) with what
    they added to ``stats`` (:mod:`biasbench.metrics.stimulus_memo`). ``descending=True``: one call per
    condition, each band from its strongest noise level down, stopping at the first level whose
    accuracy passes every criterion (:func:`_descending`). Returns (``{"clean": …, "f{f}_sd{sd}": …}``
    bool (N,) tensors of the evaluated conditions in that order, accuracy matrix (sd rows: clean, then
    ``sds``; band columns; NaN where not evaluated) with the clean accuracy in every column of row 0).
    """
    conditions = [("clean", 0, 0.0)] + [
        (f"f{f}_sd{sd:g}", n_bands - 1 - f, sd) for f in range(n_bands) for sd in sds
    ]
    images, ctx = job.images, job.ctx
    n = images.shape[0]
    if descending:
        asked = _descending(job, n_bands, sds)
        correct = {c: asked[c] for c, _, _ in conditions if c in asked}  # in grid order
    elif isinstance(images, torch.Tensor) and images.numel() * len(conditions) <= JOIN_MAX_BYTES:
        joined = job.remembered(  # the next checkpoint takes the same stimuli
            (job.memo_key, stimulus_memo.digest(images), tuple(conditions), ctx.batch_size),
            images.numel() * len(conditions) * 4,  # float32 stimuli
            JoinedTransform([job.transform(level, sd) for _, level, sd in conditions], n),
        )
        logits = ctx.predict(
            job.model,
            images.repeat(len(conditions), 1, 1, 1),
            transform=joined,
            description=f"critical band: {len(conditions)} conditions ({job.dataset_name})",
        )
        per = dict(zip([c for c, _, _ in conditions], logits.split(n), strict=True))
        correct = {c: topk_correct(per[c], job.labels, 1) for c, _, _ in conditions}
    else:
        correct = {c: job.correct(c, job.transform(level, sd)) for c, level, sd in conditions}
    acc = np.full((len(sds) + 1, n_bands), np.nan)
    acc[0, :] = _accuracy(correct["clean"])
    for f in range(n_bands):
        for j, sd in enumerate(sds, start=1):
            if f"f{f}_sd{sd:g}" in correct:
                acc[j, f] = _accuracy(correct[f"f{f}_sd{sd:g}"])
    return correct, acc


def _accuracy(correct: torch.Tensor) -> float:
    return float(correct.float().mean())


def _describe(condition: str, dataset_name: str) -> str:
    if condition == "clean":
        return f"critical band: clean ({dataset_name})"
    return f"critical band: {condition.replace('_', ' ')}"


def _descending(job: _Asking, n_bands: int, sds: tuple[float, ...]) -> dict[str, torch.Tensor]:
    """The descending series: the clean condition, then per band its noise levels from the strongest
    down, stopping after the first whose accuracy passes every criterion (:func:`criteria`). A threshold
    is the first level from the strongest that passes (:func:`~biasbench.metrics.band_thresholds.thresholds`),
    so the levels below it never enter one: the thresholds and fits equal the grid's, and each
    evaluated condition's accuracy too (one call per condition; the model's rows do not depend on the
    other rows of their batch, nor the stimuli on how the images are cut into batches).

    Each condition's stimuli are remembered for the next checkpoint (:mod:`biasbench.metrics.stimulus_memo`),
    and each condition is one ``ctx.predict`` of its own, so an ensemble's members serve it the
    conditions they evaluated (:mod:`~biasbench.harness.forward_memo`)."""
    # float32 stimuli of every noisy condition at most (the memo keeps a job's only when they all fit)
    images = job.images
    tensor = isinstance(images, torch.Tensor)  # a streamed set is never remembered
    nbytes = images.numel() * len(sds) * n_bands * 4 if tensor else 0
    small = tensor and nbytes <= stimulus_memo.MAX_BYTES
    key = (job.memo_key, "descending", stimulus_memo.digest(images)) if small else None

    def correct_of(condition: str, level: int, sd: float) -> torch.Tensor:
        t: Callable[[torch.Tensor, slice], torch.Tensor] = job.transform(level, sd)
        if key is not None:  # the next checkpoint takes the same stimuli
            t = job.remembered(key, nbytes, t, part=(condition, job.ctx.batch_size))
        return job.correct(condition, t)

    correct = {"clean": correct_of("clean", 0, 0.0)}
    stop = max(criteria(_accuracy(correct["clean"])).values())
    for f in range(n_bands):
        for sd in reversed(sds):  # a threshold's scan order: the last noise level first
            condition = f"f{f}_sd{sd:g}"
            correct[condition] = correct_of(condition, n_bands - 1 - f, sd)
            if _accuracy(correct[condition]) > stop:
                break  # this band's thresholds are found
    return correct


def _threshold_fit(
    acc: np.ndarray, criterion: float, suffix: str, base_frequency: float, a_max: float, step_octaves: float
) -> tuple[dict[str, float], list[str]]:
    """``threshold_{suffix}@f{f}`` per band plus the Gaussian fit's keys, and the flags they raise.

    The fit keys are omitted (with a flag) when the fit fails or the thresholds are flat.
    """
    n_bands = acc.shape[1]
    flags: list[str] = []
    t = thresholds(acc, criterion)
    scalars = {f"threshold_{suffix}@f{f}": float(t[f]) for f in range(n_bands)}
    fit: BandFit | None = None
    try:
        fit = fit_thresholds(t, base_frequency=base_frequency, a_max=a_max, step_octaves=step_octaves)
    except (RuntimeError, ValueError) as e:
        flags.append(f"critical_band: Gaussian fit of the {suffix} thresholds {t.tolist()} failed: {e}")
    if fit is not None and len(set(t.tolist())) == 1:
        flags.append(
            f"critical_band: {suffix} thresholds are flat ({t.tolist()}): no channel to fit, "
            f"bandwidth / centre frequency / peak sensitivity ({suffix}) omitted"
        )
        fit = None
    scalars.update(fit_keys(fit, suffix))
    return scalars, flags


def _scalars_and_flags(
    acc: np.ndarray, sds: tuple[float, ...], image_size: int, colour: bool, stats: NoiseStats
) -> tuple[dict[str, float], list[str]]:
    """The result's scalars (in the documented key order) and flags from the accuracy matrix."""
    n_bands = acc.shape[1]
    clean = float(acc[0, 0])
    scalars: dict[str, float] = {
        "clean_acc": clean,
        "n_bands": float(n_bands),
        "colour_stimulus": float(colour),
    }
    for f in range(n_bands):
        for j, sd in enumerate(sds, start=1):
            if not np.isnan(acc[j, f]):  # the descending series leaves the levels below a threshold out
                scalars[f"acc@f{f}_sd{sd:g}"] = float(acc[j, f])
    flags: list[str] = []
    base = band_centre_frequency(0, image_size, n_bands)
    step = math.log2(sds[-1] / sds[0]) / (len(sds) - 1) if len(sds) > 1 else 1.0  # octaves per level
    for suffix, criterion in criteria(clean).items():
        fit_scalars, fit_flags = _threshold_fit(acc, criterion, suffix, base, float(len(sds)), step)
        scalars.update(fit_scalars)
        flags.extend(fit_flags)
    if stats.pixels:
        scalars["out_of_range_pixel_fraction"] = stats.out_of_range / stats.pixels
        scalars["redrawn_pixel_fraction"] = stats.redrawn / stats.pixels
    if clean <= 0.5:
        flags.append(
            f"critical_band: clean accuracy {clean:.3f} ≤ 50 %: the raw thresholds are uninformative"
        )
    return scalars, flags


def _items(
    ds: ImageSet, index: list[int], labels: torch.Tensor, correct: dict[str, torch.Tensor]
) -> pd.DataFrame:
    """Per-item outputs: item id, label and one 0/1 ``correct_<condition>`` column per condition."""
    return pd.DataFrame(
        {
            "item": [ds.item_ids[i] for i in index],
            "label": labels.numpy(),
            **{f"correct_{k}": v.numpy().astype(np.int8) for k, v in correct.items()},
        }
    )


def band_tick(f: float, stored: pd.DataFrame) -> str:
    """Band ``f`` and its centre f₀·2^f cycles/image, with f₀ = centre_frequency / 2^μ of each
    checkpoint's stored fit (f₀ depends on the image size: 1.75 at 224 px, 2 at 32 and 64 px); the band
    alone when the report's checkpoints do not share one f₀ or none stores a fit."""
    base: set[float] = set()
    for v in ("norm", "raw"):
        if {f"centre_frequency_{v}", f"fit_mu_{v}"} <= set(stored.columns):
            both = stored[[f"centre_frequency_{v}", f"fit_mu_{v}"]].dropna()
            base |= {round(c / 2.0**mu, 3) for c, mu in both.itertuples(index=False)}
    return f"{int(f)}\n{base.pop() * 2.0**f:g}" if len(base) == 1 else f"{int(f)}"


class CriticalBand(Metric):
    """Critical-band masking (Subramanian et al. 2023): noise thresholds per spatial-frequency band and
    the fitted channel's bandwidth, centre frequency and peak noise sensitivity (raw and normalised)."""

    name = "critical_band"
    # 3: noise_sds from the label space (the demo world's finer grid); peak sensitivity per grid step
    # 4: ``levels`` (the descending series)
    version = "4"
    item_columns = ("label", "correct_clean")
    headline = ("clean_acc", "bandwidth_norm", "centre_frequency_norm", "peak_noise_sensitivity_norm")
    key_roles = {
        "bandwidth_norm": KeyRole("bias", None, "critical-band bandwidth (octaves, normalised)"),
        "centre_frequency_norm": KeyRole("bias", None, "critical-band centre frequency (c/img, normalised)"),
        "peak_noise_sensitivity_norm": KeyRole("bias", None, "peak noise sensitivity (normalised)"),
        "*acc*": KeyRole("diagnostic", True, "accuracy"),
    }
    curves = (
        Curve(
            name="bands",
            title="Critical-band masking: noise thresholds per band",
            y_label="threshold index (higher: more noise tolerated)",
            panels=(CurvePanel("threshold_norm@f{x}", "", "noise band f (centre frequency, cycles/image)"),),
            caption="Per noise band, the normalised threshold index: the noise level the model tolerates in "
            "that band (low = sensitive).",
            tick=band_tick,
        ),
    )

    @dataclass(frozen=True)
    class Params:
        dataset: str | None = None  # None: imagenet-val (ImageNet) / demo-world/test (demo world)
        interpolation: str = "bilinear"  # Resize(256) of the fixed ImageNet geometry
        # None: NOISE_SDS, or the label space's grid
        noise_sds: (
            Annotated[
                tuple[Annotated[float, Field(gt=0, allow_inf_nan=False)], ...],
                Field(min_length=1, description="positive numbers"),
            ]
            | None
        ) = None
        contrast: Annotated[float, Field(gt=0, le=1)] = CONTRAST
        mean_level: Annotated[float, Field(gt=0, le=1)] = MEAN_LEVEL
        epsilon: Annotated[float, Field(gt=0, le=0.5)] = EPSILON
        # None: gray-low-contrast (the study) / colour (demo world)
        stimulus: Literal["gray-low-contrast", "colour"] | None = None
        n_images: Annotated[int, Field(ge=1)] | None = (
            None  # None: all (ImageNet-style) / a seeded 155 (demo world)
        )
        # None: the label space's default, else "grid" (every band × noise level, the study's)
        levels: Literal["grid", "descending"] | None = None

    def datasets(self, label_space: str) -> dict[str, DatasetRequest]:
        return {
            "images": fixed_geometry_request(
                self.name, label_space, self.params.dataset, self.params.interpolation
            )
        }

    def work(self, role: str, n_images: int, label_space: str) -> float:
        """Images × conditions: the evaluated images (``n_images`` or the label space's default) × the
        clean condition and every band × noise level. The band count is the pyramid height of the
        label space's ``image_size`` (``defaults["critical_band"]``; the fixed geometry's 224 where it
        sets none). Out-of-range redraws cost no forward pass. With ``levels = "descending"`` this is
        the most the job can evaluate; it records the conditions it did (``WORK_DONE``)."""
        p = self.params
        n = p.n_images or space_default(self.name, label_space, "n_images")
        side = int(space_default(self.name, label_space, "image_size", 224))  # type: ignore[arg-type]
        grid = p.noise_sds or space_default(self.name, label_space, "noise_sds", NOISE_SDS)
        conditions = 1 + pyramid_levels(side, side) * len(grid)  # type: ignore[arg-type]
        return float(min(n_images, n or n_images) * conditions)

    def evaluate(self, model: ModelWrapper, data: dict[str, ImageSet], ctx: EvalContext) -> MetricResult:
        p = self.params
        ds = data["images"]
        keep = eval_index(ds, model, self.name, p.n_images, ctx.seed)
        index = keep.tolist()
        images, labels = ds.images[keep], ds.labels[keep]
        h, w = images.shape[-2:]
        bands = LaplacianBands(h, w)
        grid = p.noise_sds or space_default(self.name, model.label_space, "noise_sds", NOISE_SDS)
        n_bands, sds = bands.levels, tuple(float(s) for s in grid)  # type: ignore[union-attr]
        stats = NoiseStats()
        stimulus = p.stimulus or space_default(self.name, model.label_space, "stimulus", GRAY_LOW_CONTRAST)
        if stimulus not in STIMULI:  # a label space's default (the parameter was checked when built)
            raise MetricError(
                f"critical_band: unknown stimulus {stimulus!r}; choose one of {', '.join(STIMULI)}"
            )

        def transform(level: int, sd: float) -> CriticalBandTransform:
            return CriticalBandTransform(
                ctx,
                bands,
                level,
                sd,
                index,
                contrast=p.contrast,
                mean_level=p.mean_level,
                epsilon=p.epsilon,
                stats=stats,
                colour=stimulus == "colour",
            )

        # what the stimuli depend on besides the images, the conditions and the batch size
        memo_key = (
            self.name,
            tuple(index),
            (p.contrast, p.mean_level, p.epsilon, stimulus),
            ctx.seed,
            str(ctx.device),
            ctx.channels_last,
        )
        levels = p.levels or space_default(self.name, model.label_space, "levels", "grid")
        job = _Asking(model, ctx, images, labels, transform, ds.name, stats, memo_key)
        correct, acc = _predict_conditions(job, n_bands, sds, levels == "descending")
        scalars, flags = _scalars_and_flags(acc, sds, min(h, w), stimulus == "colour", stats)
        items = _items(ds, index, labels, correct)
        return MetricResult(
            scalars=scalars,
            n=len(index),
            items=items,
            flags=flags,
            timings={WORK_DONE: float(len(index) * len(correct))},  # the conditions evaluated
        )
