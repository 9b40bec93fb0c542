"""Keeping the Hub token out of everything written: ``protect_hub_token``.

The token comes from ``HF_TOKEN`` / ``hf auth login`` (or ``--hub_token``); ``protect_hub_token`` makes a
``--hub_token`` value pickle as a placeholder, so the ``training_args.bin`` that transformers writes next to every
checkpoint and uploads never carries it.
"""

from __future__ import annotations

TOKEN_PLACEHOLDER = "<HUB_TOKEN>"


class SecretToken(str):
    """A token that works as the string it is, but never leaves the process by pickling, copying or ``repr``.

    ``Trainer`` saves ``torch.save(self.args)`` as ``training_args.bin`` beside the model and in every checkpoint,
    and uploads it with ``--push_to_hub``: a plain ``--hub_token`` would be published with it. Pickled, this
    class becomes the string ``"<HUB_TOKEN>"``.
    """

    def __reduce__(self):
        return (str, (TOKEN_PLACEHOLDER,))

    def __repr__(self):
        return repr(TOKEN_PLACEHOLDER)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def protect_hub_token(args) -> None:
    """Wrap ``args.hub_token`` (when set) so that saving the arguments never writes it."""
    token = getattr(args, "hub_token", None)
    if token and not isinstance(token, SecretToken):
        args.hub_token = SecretToken(token)
