"""OOD accuracy: a checkpoint on every requested distribution-shifted set, and the study's four
generalization aggregates (Gavrikov & Keuper, "Can Biases in ImageNet Models Explain
Generalization?", CVPR 2024).

Sets (parameter ``sets``, short names; default: every set the model's label space defines — for
ImageNet-1k all ten below, so a set the user has not got fails the job with its ``DatasetMissing``
message instead of being dropped; narrow them with ``-p ood.sets=v2,a,r``):

* ``imagenet``: the label space's clean set (``imagenet-val``; the demo world's ``test``), top-1 and
  top-5 → ``imagenet_top1``, ``imagenet_top5``.
* ``real``: ImageNet-val with the ReaL multi-labels (Beyer et al. 2020); an image whose label list is
  empty is excluded; correct = the top-1 class is in the list → ``real_top1`` (n = labelled images).
* ``v2``: ImageNetV2 matched-frequency (Recht et al. 2019) → ``v2_top1``.
* ``a``, ``r``: ImageNet-A / -R (Hendrycks et al. 2021), 200 classes each: the logits are restricted
  to the subset's 200 ImageNet indices before the argmax → ``a_top1``, ``r_top1``.
* ``sketch``: ImageNet-Sketch (Wang et al. 2019) → ``sketch_top1``.
* ``c``: ImageNet-C (Hendrycks & Dietterich 2019), 19 corruptions × 5 severities, images used as
  stored → ``c_top1@<corruption>-<severity>`` per cell, ``c15_mean`` (15 standard) and ``c19_mean``
  (all 19) — the means over the cells. The demo world: its 8 corruptions × 5 → ``c_mean``.
* ``cbar``: ImageNet-C̄ (Mintun et al. 2021), 10 × 5 → cells and ``cbar_mean``.
* ``stylized16``, ``edges``, ``silhouettes``: shape-only sets; decisions in the set's label space
  (ImageNet-1k models: the 16-category rule of the shape-bias protocol) → ``<set>_acc16`` (16-class)
  or ``<set>_top1`` (same label space, the demo world).
* ``pgd40``: L∞ PGD-40 on the clean set in pixel space (:mod:`biasbench.metrics.pgd`; ImageNet:
  ε = 0.5/255, step 2/255; the demo world: ε = 2/255, step 8/255, the adversarial recipe's training ε),
  seeded random start → ``pgd40_top1`` (robust accuracy).

Calibration (:mod:`biasbench.metrics.calibration`), from the same logits (no extra forward pass): on
every set whose decisions are the model's own top-1 over its label space — ``imagenet``, ``v2``, ``a``,
``r`` (softmax over the 200 restricted classes), ``sketch``, each corruption cell of ``c``/``cbar``, and
on the demo world its clean, edges and silhouettes sets — ``<set>_ece`` (15 equal-width right-closed
bins of the top-1 softmax confidence, Guo et al. 2017), ``<set>_nll`` (mean −log p(true class)) and
``<set>_brier`` (multi-class sum form, [0, 2]); cells ``c_ece@<corruption>-<severity>`` …, and per
family mean ``<mean>`` the means over its cells ``c19_ece_mean``, ``cbar_nll_mean``, ``c_brier_mean`` …
(``c_mean`` → ``c_ece_mean``). Not for ``real`` (multi-label), the 16-class decision sets (no
probability of the true class) nor PGD. Lower is better for all three.

Aggregates (stored when all their parts are; otherwise absent, with a flag naming the missing part —
never a partial mean): ``id`` = mean(imagenet, v2, real), ``robustness`` = mean(a, c19_mean,
cbar_mean), ``concepts`` = mean(sketch, r, stylized16), ``adversarial`` = pgd40. The demo world:
id = its clean top-1, robustness = c_mean, concepts = mean(edges, silhouettes), adversarial = pgd40.
The label space holds these compositions (``LabelSpace.defaults["ood"]``). Calibration aggregates
``id_<m>`` and ``robustness_<m>`` (m = ece, nll, brier; the label space's ``calibration_aggregates``,
``{m}`` standing for the measure) follow the accuracy aggregates with the parts that have a calibration:
ImageNet ``id_ece`` = mean(imagenet_ece, v2_ece) (ReaL has none), ``robustness_ece`` = mean(a_ece,
c19_ece_mean, cbar_ece_mean); the demo world ``id_ece`` = its clean set's, ``robustness_ece`` =
c_ece_mean. There is no concepts or adversarial calibration aggregate (Stylized-16 and PGD have none).
``id_ece`` and ``robustness_ece`` are generalization keys (report columns); the NLL and Brier
aggregates are diagnostic (``--generalization`` adds them).

``max_per_set``: a seeded, class-stratified subsample of every set (and of every corruption cell);
``pgd_n_images`` the same for PGD. Both are part of the job's content key; the demo world's label
space defaults them to 200 and 32 and its corruption cells to 25 each (a family's ``max_per_cell``,
used when ``max_per_set`` is not given: 1,000 images over the 40 cells measure the robustness mean as
reliably as the clean set does accuracy; ``benchmarks/demo_retest.py``), ImageNet to the whole set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from biasbench.core import labels
from biasbench.core.errors import InputError
from biasbench.metrics.base import (
    DatasetRequest,
    EvalContext,
    ImageSet,
    KeyRole,
    Metric,
    MetricError,
    MetricResult,
    ModelWrapper,
    NotApplicable,
)
from biasbench.metrics.calibration import MEASURES, calibration
from biasbench.metrics.common import decide, topk_correct
from biasbench.metrics.lockstep import evaluate_in_lockstep
from biasbench.metrics.pgd import pgd_linf

#: short name -> (kind, label-space purpose or family, subset)
SETS: dict[str, tuple[str, str, str | None]] = {
    "imagenet": ("top1", "clean", None),
    "real": ("real", "real", None),
    "v2": ("top1", "v2", None),
    "a": ("top1", "a", "imagenet-a"),
    "r": ("top1", "r", "imagenet-r"),
    "sketch": ("top1", "sketch", None),
    "c": ("family", "c", None),
    "cbar": ("family", "cbar", None),
    "stylized16": ("decision", "stylized-16", None),
    "edges": ("decision", "edges", None),
    "silhouettes": ("decision", "filled-silhouettes", None),
    "pgd40": ("pgd", "clean", None),
}
PGD_STEPS = 40
#: forward-pass equivalents of one PGD-40 image (:meth:`OOD.work`)
PGD_PASSES = 3 * PGD_STEPS + 1


def stratified_subset(labels_: torch.Tensor, n: int | None, seed: int, salt: str) -> torch.Tensor:
    """Sorted indices of a seeded, class-stratified subsample of ``n`` items (all when ``n`` is None
    or ≥ the set): classes take turns, each contributing its items in a seeded random order."""
    total = int(labels_.shape[0])
    if n is None or n >= total:
        return torch.arange(total)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), *salt.encode()]))
    order = rng.permutation(total)
    lab = labels_.numpy()[order]
    rank = np.zeros(total, dtype=np.int64)
    seen: dict[int, int] = {}
    for i, c in enumerate(lab.tolist()):
        rank[i] = seen.get(c, 0)
        seen[c] = rank[i] + 1
    pick = order[np.lexsort((lab, rank))[:n]]
    return torch.as_tensor(np.sort(pick), dtype=torch.long)


def _ood_defaults(label_space: str) -> dict[str, Any]:
    """The label space's OOD definition (sets, corruption families, aggregates, PGD constants)."""
    space = labels.find(label_space)
    conf = space.defaults.get("ood") if space is not None else None
    return dict(conf) if conf else {}


class OOD(Metric):
    """OOD accuracy on ImageNet-v2/ReaL/A/R/Sketch/C/C̄/Stylized-16 and PGD-40, with the study's four
    generalization aggregates (id, robustness, concepts, adversarial)."""

    name = "ood"
    version = "2"  # 2: calibration keys (ECE, NLL, Brier); every accuracy key as in 1
    headline = ("id", "robustness", "concepts", "adversarial")
    # the study's four aggregates are the report's columns; per-set keys join on request (--generalization)
    key_roles = {
        "id": KeyRole("generalization", True, "in-distribution accuracy"),
        "robustness": KeyRole("generalization", True, "robustness (corruptions, natural adversarial)"),
        "concepts": KeyRole("generalization", True, "concepts (sketches, renditions, shape-only sets)"),
        "adversarial": KeyRole("generalization", True, "adversarial (PGD-40 robust accuracy)"),
        "id_ece": KeyRole("generalization", False, "in-distribution ECE (15 bins)"),
        "id_nll": KeyRole("diagnostic", False, "in-distribution NLL"),
        "id_brier": KeyRole("diagnostic", False, "in-distribution Brier score"),
        "robustness_ece": KeyRole("generalization", False, "robustness-set ECE (15 bins)"),
        "robustness_nll": KeyRole("diagnostic", False, "robustness-set NLL"),
        "robustness_brier": KeyRole("diagnostic", False, "robustness-set Brier score"),
        "*_top*": KeyRole("diagnostic", True, "per-set accuracy", proportion=True),
        "*_acc16": KeyRole("diagnostic", True, "per-set 16-class accuracy", proportion=True),
        # before "*_mean": a family's calibration means (c19_ece_mean …) are calibration, not accuracy
        "*_ece*": KeyRole("diagnostic", False, "per-set ECE (15 bins)"),
        "*_nll*": KeyRole("diagnostic", False, "per-set NLL"),
        "*_brier*": KeyRole("diagnostic", False, "per-set Brier score"),
        "*_mean": KeyRole("diagnostic", True, "mean accuracy over corruption cells"),
    }
    item_columns = ("set", "label", "correct")
    # --group: the K models' predictions on each set and corruption cell share one decode (PGD runs per model)
    shares_batches = True

    @dataclass(frozen=True)
    class Params:
        sets: tuple[str, ...] | None = None  # None: every set of the model's label space
        max_per_set: Annotated[int, Field(ge=1)] | None = (
            None  # None: the label space's default (demo 200; its cells 25) / the whole set
        )
        pgd_n_images: Annotated[int, Field(ge=1)] | None = (
            None  # None: the label space's default (demo 32) / max_per_set
        )

        def __post_init__(self) -> None:
            sets = self.sets
            if isinstance(sets, str):
                sets = tuple(s.strip() for s in sets.split(",") if s.strip())
            if sets is not None:
                if not isinstance(sets, (list, tuple)) or not all(isinstance(s, str) for s in sets):
                    raise InputError(f"ood: parameter sets = {self.sets!r} is not a list of set names")
                unknown = [s for s in sets if s not in SETS]
                if unknown or not sets:
                    raise InputError(
                        f"ood: parameter sets has unknown or no sets {unknown}; known: {', '.join(SETS)}"
                    )
                object.__setattr__(self, "sets", tuple(dict.fromkeys(sets)))

    # -- planning ----------------------------------------------------------------------------------
    def _plan(self, label_space: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        conf = _ood_defaults(label_space)
        if not conf:
            raise NotApplicable(f"ood has no OOD sets for label space {label_space!r}")
        sets = self.params.sets or tuple(conf["sets"])
        return conf, sets

    def work(self, role: str, n_images: int, label_space: str) -> float:
        """Images × conditions of a role: its images after ``max_per_set`` (PGD: ``pgd_n_images``);
        a PGD-40 image costs 40 forward + backward passes (a backward ≈ 2 forwards) and the final
        forward: 3 · 40 + 1 = :data:`PGD_PASSES` forward equivalents."""
        conf, _ = self._plan(label_space)
        max_n = self.params.max_per_set or conf.get("max_per_set")
        kind, purpose, _ = SETS.get(role.partition(":")[0], ("", "", None))
        if kind == "pgd":
            pgd_n = self.params.pgd_n_images or conf.get("pgd_n_images") or max_n
            return float(min(n_images, pgd_n or n_images) * PGD_PASSES)
        if kind == "family":
            max_n = self._per_cell(conf.get("families", {}).get(purpose, {}), max_n)
        return float(min(n_images, max_n or n_images))

    def _per_cell(self, fam: dict, max_n: int | None) -> int | None:
        """Images per corruption cell: ``max_per_set`` when given, else the family's own default
        (``max_per_cell``, the demo world's 25), else the label space's ``max_per_set``."""
        return self.params.max_per_set or fam.get("max_per_cell") or max_n

    def datasets(self, label_space: str) -> dict[str, DatasetRequest]:
        conf, sets = self._plan(label_space)
        space = labels.get(label_space)
        out: dict[str, DatasetRequest] = {}
        for s in sets:
            kind, purpose, _ = SETS[s]
            if kind == "family":
                fam = conf.get("families", {}).get(purpose)
                if fam is None:
                    raise NotApplicable(f"ood: label space {label_space!r} has no {s!r} corruptions")
                for corr in fam["corruptions"]:
                    for sev in fam["severities"]:
                        out[f"{s}:{corr}-{sev}"] = DatasetRequest(f"{fam['family']}/{corr}-{sev}")
                continue
            name = space.dataset(purpose)
            if name is None:
                raise NotApplicable(f"ood: label space {label_space!r} has no {purpose!r} set (for {s!r})")
            out[s] = DatasetRequest(name)
        return out

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(self, model: ModelWrapper, data: dict[str, ImageSet], ctx: EvalContext) -> MetricResult:
        conf, sets = self._plan(model.label_space)
        max_n = self.params.max_per_set or conf.get("max_per_set")
        out = _Tally()
        for s in sets:
            kind, purpose, subset = SETS[s]
            if kind == "family":
                self._family(s, conf["families"][purpose], model, data, ctx, max_n, out)
            elif kind == "pgd":
                pgd_n = self.params.pgd_n_images or conf.get("pgd_n_images") or max_n
                self._pgd(s, conf, model, data[s], ctx, pgd_n, out)
            else:
                self._set(s, kind, subset, model, data[s], ctx, max_n, out)
        flags = out.aggregates(conf.get("aggregates", {}))
        flags += out.aggregates(_calibration_spec(conf.get("calibration_aggregates", {})))
        items = pd.concat(out.frames, ignore_index=True) if out.frames else None
        return MetricResult(scalars=out.scalars, n=out.n, items=items, flags=flags)

    def evaluate_group(
        self, models: list[ModelWrapper], data: dict[str, ImageSet], ctx: EvalContext
    ) -> list[MetricResult | Exception]:
        """``evaluate`` for each model, their predictions on each set served once for all
        (:func:`~biasbench.metrics.lockstep.evaluate_in_lockstep`)."""
        return evaluate_in_lockstep(self, models, data, ctx)

    def _set(
        self,
        s: str,
        kind: str,
        subset: str | None,
        model: ModelWrapper,
        ds: ImageSet,
        ctx: EvalContext,
        max_n: int | None,
        out: _Tally,
    ) -> None:
        idx = stratified_subset(ds.labels, max_n, ctx.seed, s)
        images, y = _pick(ds.images, idx), ds.labels[idx]
        logits = ctx.predict(model, images, description=f"ood {s} ({ds.name})")
        if kind == "decision":
            dec = decide(logits, model.label_space, ds)
            key = f"{s}_top1" if ds.label_space == model.label_space else f"{s}_acc16"
            correct = out.record(key, dec.decision == y, y >= 0)
            if ds.label_space == model.label_space:  # the model's own top-1 (argmax): a probability of y
                out.calibrate(s, "", logits, y, dec.decision == y)
        elif kind == "real":
            real = [ds.meta["real"][i] for i in idx.tolist()]
            keep = torch.tensor([len(r) > 0 for r in real], dtype=torch.bool)
            pred = logits.argmax(dim=1).tolist()
            hit = torch.tensor([p in r for p, r in zip(pred, real, strict=True)], dtype=torch.bool)
            correct = out.record("real_top1", hit, keep)
        else:
            if ds.label_space != model.label_space:
                raise MetricError(
                    f"ood: set {s!r} ({ds.name}) is labeled in {ds.label_space!r}, the model in "
                    f"{model.label_space!r}"
                )
            if subset is not None:  # restrict the logits to the set's classes before the argmax
                cls = torch.as_tensor(labels.get(model.label_space).subset(subset), dtype=torch.long)
                mask = torch.full((logits.shape[1],), float("-inf"))
                mask[cls] = 0.0
                logits = logits + mask
            hit = topk_correct(logits, y.clamp(min=0), 1)
            correct = out.record(f"{s}_top1", hit, y >= 0)
            out.calibrate(s, "", logits, y, hit)  # over the restricted classes for a / r
            if s == "imagenet" and logits.shape[1] >= 5:
                out.record("imagenet_top5", topk_correct(logits, y.clamp(min=0), 5), y >= 0)
        out.frames.append(_frame(s, ds, idx, y, correct))

    def _family(
        self,
        s: str,
        fam: dict,
        model: ModelWrapper,
        data: dict[str, ImageSet],
        ctx: EvalContext,
        max_n: int | None,
        out: _Tally,
    ) -> None:
        cell: dict[str, float] = {}
        cal: dict[str, dict[str, float]] = {m: {} for m in MEASURES}
        cells = [f"{corr}-{sev}" for corr in fam["corruptions"] for sev in fam["severities"]]
        per_cell = self._per_cell(fam, max_n)
        picks = {c: stratified_subset(data[f"{s}:{c}"].labels, per_cell, ctx.seed, f"{s}:{c}") for c in cells}
        joined = _joined_cells(s, cells, picks, data, model, ctx)
        for c in cells:
            ds, idx = data[f"{s}:{c}"], picks[c]
            y = ds.labels[idx]
            if joined is not None:
                logits = joined[c]
            else:
                logits = ctx.predict(model, _pick(ds.images, idx), description=f"ood {s} {c}")
            key = f"{s}_top1@{c}"
            hit = topk_correct(logits, y.clamp(min=0), 1)
            correct = out.record(key, hit, y >= 0)
            cell[c] = out.scalars[key]
            for m, v in out.calibrate(s, f"@{c}", logits, y, hit).items():
                cal[m][c] = v
            out.frames.append(_frame(f"{s}:{c}", ds, idx, y, correct))
        for key, corrs in fam["means"].items():
            parts = [cell[f"{c}-{v}"] for c in corrs for v in fam["severities"]]
            out.put(key, float(np.mean(parts)), len(parts))
        for key, corrs in fam["means"].items():
            for m in MEASURES:
                parts = [cal[m][f"{c}-{v}"] for c in corrs for v in fam["severities"]]
                out.put(_calibration_mean_key(key, m), float(np.mean(parts)), len(parts))

    def _pgd(
        self,
        s: str,
        conf: dict,
        model: ModelWrapper,
        ds: ImageSet,
        ctx: EvalContext,
        pgd_n: int | None,
        out: _Tally,
    ) -> None:
        idx = stratified_subset(ds.labels, pgd_n, ctx.seed, s)
        y_all = ds.labels[idx]
        eps, step = float(conf["pgd_eps"]), float(conf["pgd_step"])
        handle = ctx.task(f"ood {s} (ε = {eps * 255:g}/255)", len(idx))
        # every image's random start is drawn up front on the CPU: independent of the batch size
        gen = torch.Generator().manual_seed(int(ctx.seed) * 1_000_003 + 40)
        noise = torch.rand((len(idx), *ds.images.shape[1:]), generator=gen)

        def run(sl: slice) -> torch.Tensor:
            x = ctx.to_device(ds.images[idx[sl]])
            y = y_all[sl].clamp(min=0).to(ctx.device)
            start = noise[sl].to(x.device, non_blocking=True)
            xa = pgd_linf(model, x, y, eps=eps, step=step, steps=PGD_STEPS, noise=start)
            with torch.inference_mode():
                return model(xa).float().argmax(dim=1).cpu()

        pred = (
            torch.cat(ctx.map_batches(len(idx), run, handle))
            if len(idx)
            else torch.empty(0, dtype=torch.long)
        )
        correct = out.record("pgd40_top1", pred == y_all, y_all >= 0)
        out.frames.append(_frame(s, ds, idx, y_all, correct))


#: corruption cells predicted in one call (one stream of full batches) up to this many images in all
JOIN_CELLS_MAX_IMAGES = 20_000


def _joined_cells(
    s: str,
    cells: list[str],
    picks: dict[str, torch.Tensor],
    data: dict[str, ImageSet],
    model: ModelWrapper,
    ctx: EvalContext,
) -> dict[str, torch.Tensor] | None:
    """Every cell's logits from one ``ctx.predict`` over the cells' picked images, one after another
    (full batches instead of a short last batch per cell: the demo's 25-image cells), or None where
    the cells are streamed sets or too many images to hold at once (then each cell is predicted alone).
    An image's logits do not depend on the batch it is in (``tests/test_plugin_contracts.py``)."""
    sets = [data[f"{s}:{c}"].images for c in cells]
    if not all(isinstance(x, torch.Tensor) for x in sets):
        return None
    if sum(len(picks[c]) for c in cells) > JOIN_CELLS_MAX_IMAGES:
        return None
    images = torch.cat([_pick(x, picks[c]) for x, c in zip(sets, cells, strict=True)])
    logits = ctx.predict(model, images, description=f"ood {s} ({len(cells)} cells)")
    return dict(zip(cells, logits.split([len(picks[c]) for c in cells]), strict=True))


def _pick(images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``images[idx]``, without copying the whole set when ``idx`` is all of it (a full ImageNet set is
    7.5 GB of uint8; a memory-mapped or streamed set stays as it is)."""
    return images if len(idx) == images.shape[0] else images[idx]


@dataclass
class _Tally:
    """What one evaluation stores: scalars and the number of items each rests on, and per-item frames."""

    scalars: dict[str, float] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)
    frames: list[pd.DataFrame] = field(default_factory=list)

    def put(self, key: str, value: float, count: int) -> None:
        self.scalars[key], self.n[key] = value, count

    def record(self, key: str, hit: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Store ``key`` = the fraction of kept (labelled) items that are hits, and its n; return the
        per-item correctness (False for items not kept)."""
        correct = hit & keep
        k = int(keep.sum())
        self.put(key, float(correct[keep].float().mean()) if k else math.nan, k)
        return correct

    def calibrate(
        self, s: str, suffix: str, logits: torch.Tensor, y: torch.Tensor, hit: torch.Tensor
    ) -> dict[str, float]:
        """Store ``<s>_<m><suffix>`` for m = ece, nll, brier (:func:`~biasbench.metrics.calibration.calibration`
        of ``logits`` against ``y``, labels < 0 excluded; the ECE's correctness is ``hit``, the stored
        top-1's) and their n; return ``{m: value}``."""
        cal = calibration(logits, y, correct=hit)
        values = cal.as_dict()
        for m, v in values.items():
            self.put(f"{s}_{m}{suffix}", v, cal.n)
        return values

    def aggregates(self, spec: dict[str, tuple[str, ...]]) -> list[str]:
        """Store each aggregate of ``spec`` (name -> the scalars it averages; n: their smallest); a
        flag for each one whose parts are not all stored."""
        flags = []
        for name, parts in spec.items():
            missing = [p for p in parts if p not in self.scalars]
            if missing:
                flags.append(f"aggregate {name!r} not stored: missing {', '.join(missing)} (narrowed sets?)")
                continue
            self.put(name, float(np.mean([self.scalars[p] for p in parts])), min(self.n[p] for p in parts))
        return flags


def _calibration_mean_key(mean_key: str, m: str) -> str:
    """A family mean's calibration counterpart: ``c19_mean`` → ``c19_ece_mean``."""
    stem = mean_key.removesuffix("_mean")
    return f"{stem}_{m}_mean" if stem != mean_key else f"{mean_key}_{m}"


def _calibration_spec(spec: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The label space's ``calibration_aggregates`` (``{m}`` standing for the measure) for each measure:
    ``{"id_{m}": ("imagenet_{m}",)}`` → ``{"id_ece": ("imagenet_ece",), "id_nll": …}``."""
    return {
        name.replace("{m}", m): tuple(p.replace("{m}", m) for p in parts)
        for name, parts in spec.items()
        for m in MEASURES
    }


def _frame(s: str, ds: ImageSet, idx: torch.Tensor, y: torch.Tensor, correct: torch.Tensor) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item": [f"{s}/{ds.item_ids[i]}" for i in idx.tolist()],
            "set": s,
            "label": y.numpy(),
            "correct": correct.numpy().astype(np.int8),
        }
    )
