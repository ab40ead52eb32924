"""``timm:<name>``: timm's models (``timm.create_model``), their data configs, and timm's own
pretrained loader for timm's own weights."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from biasbench.core.plugins import suggest
from biasbench.core.preprocess import Preprocess
from biasbench.registry.architectures import ArchitectureFamily
from biasbench.registry.sources import ResolvedWeights, WeightSource
from biasbench.registry.spec import CheckpointError, CheckpointSpec


def timm_preprocess(model_name: str) -> Preprocess:
    """timm's eval data config for ``model_name`` (``resolve_data_config`` on its pretrained config):
    crop = input size, resize = round(crop / crop_pct), the config's interpolation, mean and std.
    (Every crop mode is read as resize-short-side + centre-crop.)"""
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    from biasbench.registry.preprocessing import data_config_preprocess

    cfg = get_pretrained_cfg(model_name, allow_unregistered=True)
    return data_config_preprocess(
        resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg is not None else None)
    )


def _same_model(a: str, b: str) -> bool:
    from timm.models import split_model_name_tag

    return split_model_name_tag(a)[0] == split_model_name_tag(b)[0]


class Timm(ArchitectureFamily):
    """A timm model, built with random weights and the label space's class count."""

    family = "timm"
    syntax = "timm:<name>"

    def problem(self, name: str, *, trust: bool = False) -> str | None:
        import timm

        if timm.is_model(name):
            return None
        return f"unknown timm architecture {name!r}{suggest(name, timm.list_models())}"

    def build(self, name: str, num_classes: int, checkpoint_id: str, *, trust: bool = False) -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes)

    def default_weights(self, name: str, checkpoint_id: str) -> str:
        return f"timm:{name}"

    def preprocess(self, name: str, weights: str | None, checkpoint_id: str) -> Preprocess:
        """timm's data config of the weights' tag when the weights are timm's own for this
        architecture, else of the arch name (with its tag if any)."""
        cfg_name = name
        if weights and weights.startswith("timm:") and _same_model(weights[len("timm:") :], name):
            cfg_name = weights[len("timm:") :]
        return timm_preprocess(cfg_name)

    def native_load(self, spec: CheckpointSpec, source: WeightSource, adapters: list[Any]) -> bool:
        """timm's own weights into the same timm architecture, no adapters: timm's loader (its
        per-model checkpoint filters and custom loaders apply as in ``create_model(pretrained=True)``)."""
        return (
            source.kind == "timm" and not adapters and _same_model(source.value, spec.arch.partition(":")[2])
        )

    def reads_file_natively(self, rw: ResolvedWeights) -> bool:
        # timm's custom loaders (e.g. original JAX .npz files) read these with numpy, no pickles
        return rw.path is not None and rw.path.suffix == ".npz"

    def load_native(
        self, spec: CheckpointSpec, rw: ResolvedWeights, sd: dict[str, torch.Tensor], num_classes: int
    ) -> nn.Module:
        import timm
        from timm.models import get_pretrained_cfg

        name = rw.source.value
        try:
            cfg = get_pretrained_cfg(name)
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint {spec.id!r}: {e}") from e
        if cfg is None:
            raise CheckpointError(f"checkpoint {spec.id!r}: timm has no pretrained config for {name!r}")
        if cfg.num_classes and cfg.num_classes != num_classes:
            raise CheckpointError(
                f"checkpoint {spec.id!r}: timm's weights {name!r} have {cfg.num_classes} classes but label space "
                f"{spec.labels!r} has {num_classes}; timm would replace the classifier with a random one"
            )
        overlay: dict[str, Any] = {"file": str(rw.path)} if cfg.custom_load and not sd else {"state_dict": sd}
        try:
            net = timm.create_model(
                name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay
            )
        except Exception as e:  # noqa: BLE001 - timm's loader raises RuntimeError (keys) and others
            msg = " ".join(str(e).split())
            raise CheckpointError(
                f"checkpoint {spec.id!r}: timm could not load its weights {name!r} into {spec.arch!r}: "
                f"{msg[:1500]}"
            ) from e
        cfg_now = getattr(net, "pretrained_cfg", None)
        if isinstance(cfg_now, dict) and "state_dict" in cfg_now:
            cfg_now["state_dict"] = None  # do not keep a second copy of the weights alive
        return net
