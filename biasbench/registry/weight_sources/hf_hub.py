"""One file of a Hugging Face hub repository: ``hf-hub:<org>/<repo>[@rev]/<file>``
(``huggingface_hub.hf_hub_download``)."""

from __future__ import annotations

from pathlib import Path

from biasbench.core.errors import StateError
from biasbench.registry.sources import ResolvedWeights, Source, WeightSource, strip_weight_suffixes
from biasbench.registry.spec import CheckpointError


def hf_download(repo_id: str, filename: str, revision: str | None) -> Path:
    """``huggingface_hub.hf_hub_download`` (imported lazily). Tests replace this function."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with timm
        raise StateError(
            "hf-hub: weights need the huggingface_hub package (pip install huggingface_hub)"
        ) from e
    return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))


def split_hf_hub(value: str, checkpoint_id: str) -> tuple[str, str, str | None]:
    """``org/repo[@revision]/path/to/file`` -> (repo_id, filename, revision)."""
    parts = value.split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: hf-hub weights must be 'hf-hub:<org>/<repo>[@revision]/<file>', "
            f"got 'hf-hub:{value}'"
        )
    org, repo, filename = parts
    repo, _, revision = repo.partition("@")
    return f"{org}/{repo}", filename, revision or None


class HFHubFile(Source):
    """One file of a Hugging Face hub repository."""

    scheme = "hf-hub"
    syntax = "hf-hub:<org>/<repo>[@rev]/<file>"
    self_check = "hub"

    def resolve(
        self, value: str, checkpoint_id: str, *, sha256: str | None, cache_dir: Path
    ) -> ResolvedWeights:
        repo_id, filename, revision = split_hf_hub(value, checkpoint_id)
        try:
            path = hf_download(repo_id, filename, revision)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint {checkpoint_id!r}: cannot get hf-hub:{value}: {e}") from e
        return ResolvedWeights(
            WeightSource(self.scheme, value), path=path, description=f"hf-hub {repo_id}/{filename} ({path})"
        )

    def default_id(self, value: str) -> str:
        parts = value.split("/", 2)
        repo = parts[1].partition("@")[0] if len(parts) > 1 else value
        return f"{repo}.{strip_weight_suffixes(Path(parts[-1]).name)}"
