"""Shared fixtures. Every test runs offline: the Hub is unreachable here and in CI, and nothing may try it."""

import os
import socket

# Set before transformers/datasets/evaluate are imported by any test module.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


class NetworkAccessError(RuntimeError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Make any attempt to resolve or connect to a host fail loudly (covers requests/httpx/urllib3)."""

    def refuse(*args, **kwargs):
        raise NetworkAccessError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # The guard itself must work, otherwise the tests that use it would prove nothing.
    with pytest.raises(NetworkAccessError):
        socket.create_connection(("huggingface.co", 443), timeout=1)


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    """The tiny LLaVA (random weights, real classes) built once per test session."""
    from mmft.testing import TinyLlavaSpec, tiny_llava_path

    return tiny_llava_path(TinyLlavaSpec(), root=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_llava_pad_eos_dir(tmp_path_factory):
    """The same tiny LLaVA with ``pad_token == eos_token`` (as many real checkpoints ship)."""
    from mmft.testing import TinyLlavaSpec, tiny_llava_path

    return tiny_llava_path(TinyLlavaSpec(pad_is_eos=True), root=tmp_path_factory.mktemp("models_pad_eos"))


@pytest.fixture(scope="session")
def tiny_llava_wide_dir(tmp_path_factory):
    """The tiny LLaVA with a 128-wide text model, for LoRA on a random base.

    LoRA leaves the random LM head frozen, and its logits are bounded by about 0.02 * width (init std times
    the norm of the normalised hidden state): at width 96 the loss cannot fall much below 5.1 nats whatever
    the adapter learns; at 128 it reaches 4.7 in 20 steps, which is what the LoRA test asserts.
    """
    from mmft.testing import TinyLlavaSpec, tiny_llava_path

    return tiny_llava_path(TinyLlavaSpec(text_hidden=128), root=tmp_path_factory.mktemp("models_wide"))


@pytest.fixture(scope="session")
def tiny_processor(tiny_llava_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_llava_dir)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """Small shapes splits on disk (LLaVA JSONL + PNGs): {"train": path, "test": path}."""
    from mmft.data.shapes import write_split

    root = tmp_path_factory.mktemp("shapes")
    return {"train": write_split(root, "train", 64, turns=(1, 3)), "test": write_split(root, "test", 32)}


def pytest_report_header(config):
    """The versions this run tests (constraints.txt pins them; MMFT_CI_LATEST=1 takes the newest)."""
    from importlib import metadata

    names = ("torch", "torchvision", "transformers", "tokenizers", "peft", "accelerate", "datasets", "evaluate")
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} missing")
    return "mmft tested with: " + ", ".join(versions)
