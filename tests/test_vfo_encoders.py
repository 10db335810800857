"""Frozen image encoder, safetensors feature caches, masked rows, warm re-runs."""
from __future__ import annotations

import shutil

import pytest
import timm
import torch
from PIL import Image

from tvolib.cache import FeatureCache
from tvolib.sample import SAMPLE_DIR
from tvolib.vfo.encoders import ImageEncoder, extract_image_features, extract_text_features, stack_rows


def tiny_vit():
    torch.manual_seed(0)
    m = timm.create_model("vit_base_patch32_224", pretrained=False, num_classes=0, depth=1,
                          embed_dim=32, num_heads=2)
    return ImageEncoder("tiny-vit", model=m)


def tiny_sentence_encoder():
    from transformers import BertConfig
    from tvolib.weights import resolve_text_encoder
    from tvolib.tfo.relevance import SentenceEncoder
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=128)
    return SentenceEncoder.from_config(cfg, tokenizer=tok)


def images_folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for k in ("s0001", "s0002", "s0003"):
        shutil.copy(SAMPLE_DIR / "images" / f"{k}.png", d / f"{k}.png")
    (d / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.new("L", (300, 120), 80).save(d / "gray.png")          # converted to RGB
    return d


def test_vit_feature_is_the_cls_state():
    enc = tiny_vit()
    im = Image.open(SAMPLE_DIR / "images" / "s0001.png").convert("RGB")
    f = enc.encode([im])
    x = enc.transform(im).unsqueeze(0)
    with torch.no_grad():
        cls = enc.model.forward_features(x)[:, 0]
    assert f.shape == (1, 32) and torch.allclose(f, cls, atol=1e-5)
    assert not any(p.requires_grad for p in enc.model.parameters())   # frozen


def test_efficientnet_lite0_offline_default():
    enc = ImageEncoder()
    assert enc.dim == 1280 and enc.name == "efficientnet_lite0"
    ims = [Image.open(SAMPLE_DIR / "images" / f"s000{i}.png").convert("RGB") for i in (1, 2)]
    f = enc.encode(ims)
    assert f.shape == (2, 1280) and torch.isfinite(f).all() and (f >= 0).all()   # post-ReLU pooling
    assert not torch.allclose(f[0], f[1])


def test_extract_masks_missing_and_broken_images_and_warm_run_loads_nothing(tmp_path):
    d = images_folder(tmp_path)
    items = [("s0001", d / "s0001.png"), ("s0002", d / "s0002.png"), ("gone", None),
             ("bad", d / "bad.jpg"), ("gray", d / "gray.png"), ("s0003", d / "s0003.png")]
    enc = tiny_vit()
    calls = []

    def factory():
        calls.append(1)
        return enc

    path = tmp_path / "features-tiny.safetensors"
    cache, st = extract_image_features(items, path, factory, batch_size=2, metadata={"image_dir": str(d)})
    assert calls == [1] and st["computed"] == 4 and st["missing"] == 2
    assert st["status"]["gone"] == "missing" and st["status"]["bad"].startswith("unreadable")
    feats, mask = stack_rows(cache, [k for k, _ in items], enc.dim)
    assert mask.tolist() == [True, True, False, False, True, True]
    assert (feats[~mask] == 0).all()
    ref = enc.encode([Image.open(d / "s0002.png").convert("RGB")])[0]
    assert torch.allclose(feats[1], ref, atol=1e-5)                   # batching changes nothing

    def no_factory():
        raise AssertionError("warm run must not build the encoder")

    cache2, st2 = extract_image_features(items, path, no_factory, metadata={"image_dir": str(d)})
    assert st2["cached"] == 6 and st2["computed"] == 0 and st2["missing"] == 2
    with pytest.raises(ValueError, match="other settings"):
        extract_image_features(items, path, no_factory, metadata={"image_dir": "/elsewhere"})


def test_caption_only_dataset_builds_no_image_encoder(tmp_path):
    def no_factory():
        raise AssertionError("no image → no encoder")
    _, st = extract_image_features([("a", None), ("b", None)], tmp_path / "f.safetensors", no_factory)
    assert st["missing"] == 2


def test_text_features_cache_and_empty_text(tmp_path):
    enc = tiny_sentence_encoder()
    texts = {"a": "a red circle on a wall", "b": "", "c": "a blue square"}
    cache, st = extract_text_features(texts, tmp_path / "cap.safetensors", enc)
    feats, mask = stack_rows(FeatureCache(cache.path), ["a", "b", "c"], enc.dim)
    assert mask.tolist() == [True, False, True]
    assert torch.allclose(feats[0], enc.encode([texts["a"]])[0], atol=1e-5)
    assert torch.allclose(feats[0].norm(), torch.tensor(1.0), atol=1e-4)
    _, st2 = extract_text_features(texts, tmp_path / "cap.safetensors", lambda: 1 / 0)
    assert st2["cached"] == 3


def test_interrupted_extraction_resumes_from_last_flush(tmp_path):
    d = images_folder(tmp_path)
    items = [(k, d / f"{k}.png") for k in ("s0001", "s0002", "s0003")] + [("gray", d / "gray.png")]
    enc = tiny_vit()

    class Crash(ImageEncoder):
        def __init__(self):
            self.__dict__.update(enc.__dict__)
            self.calls = 0

        def encode(self, images, batch_size=32):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return enc.encode(images, batch_size)

    path = tmp_path / "f.safetensors"
    with pytest.raises(KeyboardInterrupt):
        extract_image_features(items, path, Crash(), batch_size=2, flush_every=1)
    (partial,) = tmp_path.glob("f-*.safetensors")
    assert len(FeatureCache(partial)) == 2                    # the first batch was kept on disk
    cache, st = extract_image_features(items, path, enc, batch_size=2)
    assert st["cached"] == 0 and st["computed"] == 4         # a partial set is computed whole again
    fresh, _ = extract_image_features(items, tmp_path / "fresh" / "f.safetensors", enc, batch_size=2)
    assert all(torch.equal(cache[k], fresh[k]) for k, _ in items)


def test_a_set_gets_the_same_bits_whatever_was_computed_before(tmp_path):
    """Rows computed in a batch depend on the other rows of the batch, so a quick run on a subset
    that filled the cache first must not leave its rows to the full set."""
    enc = tiny_sentence_encoder()
    texts = {str(i): "a " + " ".join(["red circle"] * (1 + i % 7)) + f" number {i}" for i in range(40)}
    subset = {k: texts[k] for k in list(texts)[::3]}
    extract_text_features(subset, tmp_path / "a" / "cap.safetensors", enc, batch_size=4)
    after_subset, _ = extract_text_features(texts, tmp_path / "a" / "cap.safetensors", enc, batch_size=4)
    fresh, _ = extract_text_features(texts, tmp_path / "b" / "cap.safetensors", enc, batch_size=4)
    assert all(torch.equal(after_subset[k], fresh[k]) for k in texts)
    alone, _ = extract_text_features(subset, tmp_path / "c" / "cap.safetensors", enc, batch_size=4)
    again, _ = extract_text_features(subset, tmp_path / "a" / "cap.safetensors", enc, batch_size=4)
    assert all(torch.equal(alone[k], again[k]) for k in subset)


def test_paper_vit_without_weights_fails_fast_and_auto_falls_back(monkeypatch):
    import time
    from tvolib.weights import ResourceMissing
    from tvolib.vfo import encoders as E
    monkeypatch.setattr(E, "timm_weights_cached", lambda name: False)
    t0 = time.perf_counter()
    with pytest.raises(ResourceMissing, match="vit_base_patch32_224"):
        ImageEncoder("vit_base_patch32_224")
    assert time.perf_counter() - t0 < 10                      # no network retries
    assert E.resolve_image_encoder("auto") == "efficientnet_lite0"
    assert E.resolve_image_encoder("auto", weights="/some/vit.safetensors") == "vit_base_patch32_224"
    monkeypatch.setattr(E, "timm_weights_cached", lambda name: name == "vit_base_patch32_224")
    assert E.resolve_image_encoder("auto") == "vit_base_patch32_224"
