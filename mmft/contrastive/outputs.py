"""What every dual-encoder adapter shares (``models`` and ``openclip`` both import it): the outputs and unwrapping."""

from __future__ import annotations


class ModelOutputs(dict):
    """``image_embeds`` / ``text_embeds``, L2-normalised (what ``CLIPModel`` and ``SiglipModel`` return)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def unwrap(model):
    """The model under DDP / PEFT wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model
