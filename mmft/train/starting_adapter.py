"""The starting adapter of a continued run: ``--adapter_name_or_path``, a local folder or a Hub id at
``--adapter_revision`` (see ``mmft.train.continual`` for the whole story).

:func:`resolve_starting_adapter` reads its ``adapter_config.json`` (``mmft.hub.merge.read_adapter_config``: a
safetensors LoRA/DoRA adapter, or a clear error), takes the base model and revision it records as the run's model
(naming another one is :class:`BaseModelMismatchError`), and ``modeling.prepare_model_for_training`` loads the
adapter's weights *trainable*, with its own shape, instead of attaching a fresh one. The optimizer and schedule
start fresh (this is not ``--resume_from_checkpoint``). The parent's id and revision go into the model card.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

logger = logging.getLogger("mmft")

ADAPTER_CONFIG = "adapter_config.json"  # mmft.hub.merge's name too; merge is imported only when an adapter is read
# What a continued run downloads of a Hub adapter: the adapter, its processor and chat template, its card. Never
# pickles (adapter_model.bin, training_args.bin) and never checkpoints.
ADAPTER_FILES = (ADAPTER_CONFIG, "adapter_model.safetensors", "*.json", "*.jinja", "*.txt", "*.model", "README.md")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class BaseModelMismatchError(UsageError):
    """``--model_name_or_path`` (or ``--model_revision``) names another model than the starting adapter's base."""


# ---- the starting adapter ---------------------------------------------------------------------------------------
@dataclass
class StartingAdapter:
    """The adapter a continued run starts from, as the model card names it.

    Args:
        name: ``--adapter_name_or_path`` as given.
        path: the local folder holding it (the Hub snapshot for a Hub id).
        revision: the commit it was read at (Hub adapters), else ``None``.
        requested_revision: ``--adapter_revision`` as given (a branch or tag may move; the commit does not).
        base: the base model its config records, and ``base_revision``, the revision recorded with it.
        config: its ``adapter_config.json``.
    """

    name: str
    path: Path
    revision: str | None
    requested_revision: str | None
    base: str
    base_revision: str | None
    config: dict = field(default_factory=dict, repr=False)

    @property
    def hub_id(self) -> str | None:
        """The Hub id when the adapter came from the Hub (a local folder is never published by path)."""
        return self.name if self.revision is not None else None

    @property
    def shape(self) -> str:
        method = "DoRA" if self.config.get("use_dora") else "LoRA"
        saved = self.config.get("modules_to_save") or []
        extra = f", modules saved in full: {', '.join(saved)}" if saved else ""
        return f"{method} r={self.config.get('r')}, alpha={self.config.get('lora_alpha')}{extra}"

    def lineage(self) -> dict:
        """What the card and ``retention_results.json`` record of the parent (no local path: only a folder name)."""
        if self.hub_id:
            return {"id": self.hub_id, "revision": self.revision, "requested_revision": self.requested_revision}
        return {"id": None, "name": Path(self.name).name or self.name, "revision": None}


def _download_adapter(repo_id: str, revision: str | None, token=None) -> Path:
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=list(ADAPTER_FILES),
                                    token=token))
    return folder


def _model_identity(name: str) -> str:
    """A comparable identity of a model name: the real path of local and built-in models, the Hub id otherwise."""
    if name.startswith("mmft:"):
        from ..testing import resolve_builtin_model

        try:
            name = resolve_builtin_model(name)
        except ValueError:
            return name
    path = Path(name).expanduser()
    return os.path.realpath(path) if path.exists() else name


def _recorded_base_usable(name: str) -> bool:
    from ..hub.merge import hub_id

    return name.startswith("mmft:") or Path(name).expanduser().exists() or hub_id(name) is not None


def resolve_starting_adapter(model_args, training_args=None) -> StartingAdapter | None:
    """Read ``--adapter_name_or_path`` (downloading a Hub adapter's files) and make the run's model its base.

    Sets ``model_args.model_name_or_path`` / ``model_revision`` to what the adapter records (an explicit one must
    name the same model: :class:`BaseModelMismatchError` otherwise), and, for a run pushed without
    ``--hub_model_id``, ``training_args.hub_model_id`` to the parent's Hub id (the new version is a new commit of
    the same repository). Returns ``None`` when no adapter was given.
    """
    from ..hub.merge import hub_id, read_adapter_config

    name = getattr(model_args, "adapter_name_or_path", None)
    if not name:
        if getattr(model_args, "adapter_revision", None):
            raise UsageError("--adapter_revision names a revision of --adapter_name_or_path, which is not set.")
        return None
    if not model_args.use_peft:
        raise UsageError(
            "--adapter_name_or_path continues a LoRA/DoRA adapter, but --use_peft is false. To continue a fully "
            "fine-tuned model, pass its folder or Hub id as --model_name_or_path (and drop --adapter_name_or_path)."
        )
    local = Path(name).expanduser()
    revision = None
    if local.exists():
        if model_args.adapter_revision:
            raise UsageError(f"--adapter_revision {model_args.adapter_revision!r} applies to Hub adapters, but "
                             f"{name!r} is a local folder.")
        path = local
    elif hub_id(name):
        token = getattr(training_args, "hub_token", None) if training_args is not None else None
        path = _download_adapter(name, model_args.adapter_revision, token)
        revision = path.name if _COMMIT.match(path.name) else (model_args.adapter_revision or "main")
    else:
        raise UsageError(f"--adapter_name_or_path {name!r} is neither a local folder nor a Hub id.")
    if not (path / ADAPTER_CONFIG).is_file() and (path / "config.json").is_file():
        raise UsageError(f"{name!r} holds a full model (config.json, no {ADAPTER_CONFIG}): to continue training it, "
                         "pass it as --model_name_or_path and drop --adapter_name_or_path.")
    config = read_adapter_config(path)  # MergeError (a UsageError) for anything that is not a safetensors LoRA
    base = config.get("base_model_name_or_path")
    if not base:
        raise UsageError(f"{ADAPTER_CONFIG} of {name!r} names no base model (base_model_name_or_path is empty); "
                         "set it to the model the adapter was trained on.")
    base_revision = config.get("revision")
    _adopt_base(model_args, name, base, base_revision)
    adapter = StartingAdapter(name=name, path=path, revision=revision, requested_revision=model_args.adapter_revision,
                              base=model_args.model_name_or_path, base_revision=model_args.model_revision,
                              config=config)
    if training_args is not None and training_args.push_to_hub and not training_args.hub_model_id and adapter.hub_id:
        training_args.hub_model_id = adapter.hub_id
        logger.info("--push_to_hub without --hub_model_id: the new version goes to %s as a new commit.",
                    adapter.hub_id)
    return adapter


def _adopt_base(model_args, adapter_name: str, base: str, base_revision: str | None) -> None:
    given, given_revision = model_args.model_name_or_path, model_args.model_revision
    recorded = f"{base!r}" + (f" at revision {base_revision!r}" if base_revision else "")
    if given is not None and not _recorded_base_usable(base):
        # The adapter was trained on another machine against a local folder: nothing here to compare with.
        logger.warning("The adapter %s records base model %r, which is not on this machine; using "
                       "--model_name_or_path %s as its base.", adapter_name, base, given)
        return
    if given is not None and _model_identity(given) != _model_identity(base):
        raise BaseModelMismatchError(
            f"--model_name_or_path {given!r} is not the base model of --adapter_name_or_path {adapter_name!r}, "
            f"which was trained on {recorded} (its {ADAPTER_CONFIG}). Drop --model_name_or_path to use the recorded "
            "base, or start a new adapter on the other model without --adapter_name_or_path."
        )
    if given_revision and base_revision and given_revision != base_revision:
        raise BaseModelMismatchError(
            f"--model_revision {given_revision!r} is not the revision --adapter_name_or_path {adapter_name!r} was "
            f"trained on: {recorded}. Drop --model_revision to use the recorded one."
        )
    model_args.model_name_or_path = given or base
    model_args.model_revision = given_revision or base_revision


def load_starting_processor(adapter: StartingAdapter, model_args):
    """The processor saved with the adapter (the chat template its run trained with), else the base model's."""
    from ..hub.merge import load_processor_for_merge
    from .modeling import resolve_model_path

    processor, _ = load_processor_for_merge(adapter.path, resolve_model_path(model_args.model_name_or_path),
                                            model_args.trust_remote_code, model_args.model_revision)
    return processor


def describe_start(adapter: StartingAdapter) -> str:
    """The one log line that says where training starts and that it is not a resume."""
    where = f"{adapter.hub_id}@{adapter.revision[:12]}" if adapter.hub_id else f"{adapter.name}"
    base = adapter.base + (f"@{adapter.base_revision}" if adapter.base_revision else "")
    return (f"Continuing adapter {where} ({adapter.shape}) on base {base}: training starts from its weights; the "
            "optimizer and learning-rate schedule start fresh (not a resume of its run).")

