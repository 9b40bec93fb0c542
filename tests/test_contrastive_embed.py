"""``mmft embed``: the file holds the model's own embeddings of the same inputs, ids in record order, in both formats;
a trained LoRA folder embeds as the model that was saved; usage errors are one message. Tiny offline CLIP."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from mmft.commands.cli import main
from mmft.config.model_args import ModelArguments
from mmft.contrastive.embed import read_embeddings
from mmft.contrastive.models import load_dual_encoder, save_trained
from mmft.contrastive.towers import configure_towers

COLOURS = [(220, 30, 30), (30, 170, 40), (30, 60, 220), (235, 200, 20), (120, 120, 120)]


def _dataset(tmp_path, n=5):
    """A LLaVA JSONL file: record i has an image of colour i; records 0..n-2 two captions, the last one answer."""
    (tmp_path / "images").mkdir()
    lines = []
    for i in range(n):
        Image.new("RGB", (40 + 4 * i, 40), COLOURS[i % len(COLOURS)]).save(tmp_path / "images" / f"{i}.png")
        record = {"id": f"rec-{i}", "image": f"images/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": f"colour number {i}"}]}
        if i < n - 1:
            record["references"] = [f"colour number {i}", f"a patch of colour {i}"]
        lines.append(json.dumps(record))
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _own_image_embeddings(adapter, model, processor, tmp_path, n=5):
    """One image per forward pass: independent of how `mmft embed` batches."""
    rows = []
    with torch.no_grad():
        for i in range(n):
            image = Image.open(tmp_path / "images" / f"{i}.png").convert("RGB")
            rows.append(adapter.image_features(model, adapter.image_inputs(processor, [image]))[0])
    return torch.stack(rows)


def _own_text_embeddings(adapter, model, processor, texts):
    with torch.no_grad():
        return torch.stack([adapter.text_features(model, adapter.text_inputs(processor, [t]))[0] for t in texts])


@pytest.mark.parametrize("suffix", [".safetensors", ".parquet"])
def test_image_embeddings_equal_the_models_own_in_record_order(tmp_path, suffix, capsys):
    data = _dataset(tmp_path)
    out = tmp_path / f"emb{suffix}"
    main(["embed", "mmft:tiny-clip", "--dataset_name", str(data), "--output", str(out), "--batch_size", "2",
          "--device", "cpu"])
    assert "Wrote 5 image embeddings" in capsys.readouterr().out
    ids, embeddings = read_embeddings(out)
    assert ids == [f"rec-{i}" for i in range(5)]
    adapter, model, processor = load_dual_encoder(ModelArguments(model_name_or_path="mmft:tiny-clip"))
    expected = _own_image_embeddings(adapter, model.eval(), processor, tmp_path)
    assert embeddings.dtype == torch.float32 and embeddings.shape == expected.shape
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(5))
    # the images differ, so a file of one repeated row (or rows out of order) would not pass
    assert (embeddings @ embeddings.T).fill_diagonal_(-1).max() < 0.99999


@pytest.mark.parametrize("suffix", [".safetensors", ".parquet"])
def test_text_embeddings_are_one_row_per_caption_with_their_record(tmp_path, suffix):
    data = _dataset(tmp_path)
    out = tmp_path / f"texts{suffix}"
    main(["embed", "mmft:tiny-clip", "--dataset_name", str(data), "--output", str(out), "--modality", "text",
          "--batch_size", "3", "--device", "cpu"])
    ids, embeddings = read_embeddings(out)
    assert ids == [f"rec-{i}#{k}" for i in range(4) for k in range(2)] + ["rec-4"]
    texts = [t for i in range(4) for t in (f"colour number {i}", f"a patch of colour {i}")] + ["colour number 4"]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert table.column("text").to_pylist() == texts
        assert table.column("record_id").to_pylist() == [f"rec-{i}" for i in range(4) for _ in range(2)] + ["rec-4"]
    else:
        from safetensors import safe_open

        with safe_open(str(out), framework="pt") as handle:
            assert json.loads(handle.metadata()["texts"]) == texts and handle.metadata()["modality"] == "text"
    adapter, model, processor = load_dual_encoder(ModelArguments(model_name_or_path="mmft:tiny-clip"))
    torch.testing.assert_close(embeddings, _own_text_embeddings(adapter, model.eval(), processor, texts),
                               atol=1e-5, rtol=1e-4)


def test_a_trained_lora_folder_embeds_as_the_saved_model(tmp_path):
    data = _dataset(tmp_path)
    adapter, model, processor = load_dual_encoder(ModelArguments(model_name_or_path="mmft:tiny-clip"))
    model = configure_towers(model, adapter, {"image": "lora", "text": "lora"}, lora_r=4, lora_alpha=8,
                             lora_dropout=0.0)
    torch.manual_seed(0)
    with torch.no_grad():  # as if trained: LoRA's B starts at zero, which would equal the base model
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    save_trained(adapter, model, processor, str(tmp_path / "run"), "mmft:tiny-clip")
    out = tmp_path / "emb.safetensors"
    main(["embed", str(tmp_path / "run"), "--dataset_name", str(data), "--output", str(out), "--device", "cpu"])
    _, embeddings = read_embeddings(out)
    expected = _own_image_embeddings(adapter, model.eval(), processor, tmp_path)
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=1e-4)
    base_adapter, base, _ = load_dual_encoder(ModelArguments(model_name_or_path="mmft:tiny-clip"))
    base_embeddings = _own_image_embeddings(base_adapter, base.eval(), processor, tmp_path)
    assert not torch.allclose(embeddings, base_embeddings, atol=1e-3)  # the adapter was applied


def test_usage_errors_are_one_message(tmp_path, capsys):
    data = _dataset(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "mmft:tiny-clip", "--dataset_name", str(data), "--output", str(tmp_path / "emb.npy")])
    assert exit_info.value.code == 2 and "must end in .safetensors or .parquet" in capsys.readouterr().err
    text_only = tmp_path / "text_only.jsonl"
    text_only.write_text(json.dumps({"id": "no-image-7", "conversations": [
        {"from": "human", "value": "hi"}, {"from": "gpt", "value": "a dog"}]}) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "mmft:tiny-clip", "--dataset_name", str(text_only), "--output", str(tmp_path / "e.parquet"),
              "--device", "cpu"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "no-image-7" in err and "--pair_policy drop" in err
    assert "Traceback" not in err and not (tmp_path / "e.parquet").exists()
