"""Spectral bias: accuracy under square-box low-pass and high-pass Fourier filters (LPP / HPP).

Citation: P. Gavrikov and J. Keuper, "Can Biases in ImageNet Models Explain Generalization?",
CVPR 2024 (the low-/high-frequency preference measurements of their §3).

Definition (the constants of the study). ImageNet val, Resize(256) + CenterCrop(224), pixel
space [0, 1], all 3 channels. ``F = fftshift(fft2(x))``, centre ``c0 = 112``. A low-pass with cutoff ``c``
keeps the square box ``ky, kx ∈ [c0 − r, c0 + r)`` with ``r = floor(c · 112)``; a high-pass with cutoff
``c`` zeroes the box of ``r = floor((1 − c) · 112)``. The filtered image is
``ifft2(ifftshift(F · mask)).real.clip(0, 1)`` and goes to the model (which normalises inside).

* cutoffs ``c ∈ {0.01, 0.1, 0.2, …, 0.9, 0.99}``, both filter types: 22 filtered conditions + clean;
* ratio = filtered top-1 / clean top-1;
* ``LPP`` = mean low-pass ratio over ``c ∈ {0.1, …, 0.5}``, ``HPP`` = mean high-pass ratio over the
  same cutoffs, ``spectral_bias = HPP / (LPP + HPP)`` (0: relies on low frequencies only, 1: high).

Keys: ``clean_acc``; ``lowpass_acc@c``, ``highpass_acc@c``, ``lowpass_ratio@c``, ``highpass_ratio@c``
for every cutoff (``c`` printed with ``%g``: ``0.01``, ``0.1``, …, ``0.99``); ``LPP``, ``HPP``,
``spectral_bias``. Per-item outputs: the label, the clean prediction and one 0/1 column per condition.

Other image sizes (the demo world is ≤ 64 px): the box is scaled with the image — ``c0 = H // 2`` and
``r = floor(c · H / 2)`` (``floor((1 − c) · H / 2)`` for the high-pass) per axis — so a cutoff always
means the same fraction of the spectrum. At 64 px the extreme cutoffs degenerate (``r = 0``): the
0.01 low-pass is a black image and the 0.99 high-pass the unfiltered image; LPP/HPP use c = 0.1…0.5
and are unaffected.

Datasets: ImageNet models get ``imagenet-val`` at the fixed Resize(256) + CenterCrop(224) (parameter
``interpolation``, default bilinear as torchvision's Resize; parameter ``dataset`` picks another
ImageNet-labeled set such as ``imagenet-sample``); demo-world models get ``demo-world/test`` as stored.
Parameter ``n_images``: ``None`` evaluates every labeled image of an ImageNet-style set and a seeded
subset of 200 of the demo world's 1000 test images (its label space's default); an integer picks a
seeded subset (``--seed``) of that size anywhere.

Implementation: every filter runs batched on the device inside the ``transform`` given to
``EvalContext.predict`` — one ``rfft2`` / ``irfft2`` pair per batch with the Hermitian-symmetrised mask,
which is exactly the ``.real`` of the complex definition (see :mod:`biasbench.metrics.fourier_filters`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from biasbench.metrics.base import (
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
from biasbench.metrics.fourier_filters import HIGHPASS, LOWPASS, box_filter

CUTOFFS: tuple[float, ...] = (0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99)
SUMMARY_CUTOFFS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
#: a ``Params`` declaration: at least one cutoff, each in [0, 1]
Cutoffs = Annotated[tuple[Annotated[float, Field(ge=0, le=1)], ...], Field(min_length=1)]


def fmt_cutoff(c: float) -> str:
    return f"{c:g}"


class Spectral(Metric):
    """Spectral bias (Gavrikov & Keuper 2024): top-1 under box low-/high-pass filters; LPP, HPP,
    spectral_bias = HPP / (LPP + HPP)."""

    name = "spectral"
    version = "2"
    item_columns = ("label", "prediction", "correct_clean")
    headline = ("clean_acc", "LPP", "HPP", "spectral_bias")
    key_roles = {
        "LPP": KeyRole("bias", None, "low-pass performance (LPP)"),
        "HPP": KeyRole("bias", None, "high-pass performance (HPP)"),
        "spectral_bias": KeyRole("bias", None, "spectral bias HPP / (LPP + HPP)"),
        "*_ratio@*": KeyRole("diagnostic", None, "filtered / clean accuracy"),
        "*acc*": KeyRole("diagnostic", True, "accuracy"),
    }
    curves = (
        Curve(
            name="spectral",
            title="Spectral bias: accuracy under Fourier filters",
            y_label="accuracy ratio",
            panels=(
                CurvePanel(
                    "lowpass_ratio@{x}",
                    "low-pass: filtered / clean accuracy",
                    "low-pass cutoff (fraction of the spectrum)",
                ),
                CurvePanel(
                    "highpass_ratio@{x}",
                    "high-pass: filtered / clean accuracy",
                    "high-pass cutoff (fraction of the spectrum)",
                ),
            ),
            caption="Filtered / clean accuracy per cutoff; LPP and HPP average the cutoffs 0.1–0.5.",
        ),
    )

    @dataclass(frozen=True)
    class Params:
        dataset: str | None = None  # None: imagenet-val (ImageNet) / demo-world/test (demo world)
        interpolation: str = "bilinear"  # Resize(256) of the fixed ImageNet geometry
        cutoffs: Cutoffs = CUTOFFS
        summary_cutoffs: Cutoffs = SUMMARY_CUTOFFS  # LPP / HPP average over these
        n_images: Annotated[int, Field(ge=1)] | None = (
            None  # None: all (ImageNet-style) / a seeded 200 (demo world)
        )

    def datasets(self, label_space: str) -> dict[str, DatasetRequest]:
        return {
            "images": fixed_geometry_request(
                self.name, label_space, self.params.dataset, self.params.interpolation
            )
        }

    def work(self, role: str, n_images: int, label_space: str) -> float:
        """Images × conditions: the evaluated images (``n_images`` or the label space's default) × the
        clean pass and every filter condition."""
        n = self.params.n_images or space_default(self.name, label_space, "n_images")
        return float(min(n_images, n or n_images) * (1 + len(self.conditions())))

    def conditions(self) -> list[tuple[str, float]]:
        cutoffs = sorted(set(self.params.cutoffs) | set(self.params.summary_cutoffs))
        return [(kind, c) for kind in (LOWPASS, HIGHPASS) for c in cutoffs]

    @staticmethod
    def transform(
        kind: str, cutoff: float, ctx: EvalContext
    ) -> Callable[[torch.Tensor, slice], torch.Tensor]:
        def run(x: torch.Tensor, sl: slice) -> torch.Tensor:
            with no_autocast(x.device):
                out = box_filter(x, cutoff, kind)
            if ctx.channels_last:
                out = out.contiguous(memory_format=torch.channels_last)
            return out

        return run

    def evaluate(self, model: ModelWrapper, data: dict[str, ImageSet], ctx: EvalContext) -> MetricResult:
        ds = data["images"]
        index = eval_index(ds, model, self.name, self.params.n_images, ctx.seed)
        images, labels = ds.images[index], ds.labels[index]
        item_ids = [ds.item_ids[i] for i in index.tolist()]

        clean_logits = ctx.predict(model, images, description=f"spectral: clean ({ds.name})")
        correct = {"clean": topk_correct(clean_logits, labels, 1)}
        for kind, c in self.conditions():
            logits = ctx.predict(
                model, images, transform=self.transform(kind, c, ctx), description=f"spectral: {kind} {c:g}"
            )
            correct[f"{kind}@{fmt_cutoff(c)}"] = topk_correct(logits, labels, 1)

        clean = float(correct["clean"].float().mean())
        if clean <= 0.0:
            raise MetricError(
                f"spectral: clean top-1 on {ds.name!r} is 0, so the filtered/clean ratios are undefined"
            )
        scalars: dict[str, float] = {"clean_acc": clean}
        ratios: dict[tuple[str, float], float] = {}
        for kind, c in self.conditions():
            acc = float(correct[f"{kind}@{fmt_cutoff(c)}"].float().mean())
            ratios[(kind, c)] = acc / clean
            scalars[f"{kind}_acc@{fmt_cutoff(c)}"] = acc
            scalars[f"{kind}_ratio@{fmt_cutoff(c)}"] = acc / clean
        lpp = float(np.mean([ratios[(LOWPASS, c)] for c in self.params.summary_cutoffs]))
        hpp = float(np.mean([ratios[(HIGHPASS, c)] for c in self.params.summary_cutoffs]))
        scalars["LPP"], scalars["HPP"] = lpp, hpp
        flags: list[str] = []
        if lpp + hpp > 0:
            scalars["spectral_bias"] = hpp / (lpp + hpp)
        else:
            flags.append("spectral_bias undefined: LPP + HPP = 0")

        items = pd.DataFrame(
            {
                "item": item_ids,
                "label": labels.numpy(),
                "prediction": clean_logits.argmax(dim=1).numpy(),
                **{f"correct_{k}": v.numpy().astype(np.int8) for k, v in correct.items()},
            }
        )
        return MetricResult(scalars=scalars, n=len(index), items=items, flags=flags)
