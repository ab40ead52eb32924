"""timm's pretrained weights: ``timm:<name>[.<tag>]``, fetched through the Hugging Face hub
(``model.safetensors``, else ``pytorch_model.bin``) or timm's URL; cached by huggingface_hub /
torch.hub. Loaded into the same timm architecture they go through timm's own loader
(:mod:`biasbench.registry.loading`)."""

from __future__ import annotations

from pathlib import Path

from biasbench.core.errors import StateError
from biasbench.registry.download import download_url_to_hub_cache
from biasbench.registry.sources import ResolvedWeights, Source, WeightSource
from biasbench.registry.spec import CheckpointError


def download_timm_pretrained(name: str) -> Path:
    """Fetch timm's pretrained weight file for ``name`` (``arch`` or ``arch.tag``) and return its path.

    Mirrors timm's own choice: the Hugging Face hub repository of the pretrained config
    (``model.safetensors``, else ``pytorch_model.bin``; or the config's ``hf_hub_filename``), else the
    config's URL into the torch.hub cache. Tests replace this function (no network here).
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise StateError(f"timm has no pretrained weights for {name!r}")
    if cfg.hf_hub_id:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        last: Exception | None = None
        for filename in names:
            try:
                return Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision or None))
            except LocalEntryNotFoundError:  # offline and not cached: trying other names will not help
                raise
            except EntryNotFoundError as e:  # the repository has no such file: try the next name
                last = e
        raise StateError(f"none of {names} found in the hub repository {cfg.hf_hub_id}: {last}")
    if cfg.url:
        return download_url_to_hub_cache(cfg.url)
    if cfg.file:
        return Path(cfg.file)
    raise StateError(f"the pretrained config of {name!r} names no hub repository, URL or file")


class TimmPretrained(Source):
    """timm's pretrained weights for a model name (and tag)."""

    scheme = "timm"
    syntax = "timm:<name>[.<tag>]"
    self_check = "hub"

    def resolve(
        self, value: str, checkpoint_id: str, *, sha256: str | None, cache_dir: Path
    ) -> ResolvedWeights:
        try:
            path = download_timm_pretrained(value)
        except Exception as e:  # noqa: BLE001 - network/hub errors of many kinds
            raise CheckpointError(
                f"checkpoint {checkpoint_id!r}: cannot get timm's pretrained weights {value!r}: {e}"
            ) from e
        return ResolvedWeights(
            WeightSource(self.scheme, value), path=path, description=f"timm pretrained {value} ({path})"
        )
