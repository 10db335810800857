"""GroundingDINO on a tiny random config: phrases → boxes JSONL cache → crops → encoder → v_obj."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from tvolib.cache import JsonlCache
from tvolib.weights import ResourceMissing
from tvolib.sample import SAMPLE_DIR
from tvolib.vfo import grounding as G

from test_vfo_encoders import tiny_vit


def tiny_grounding_dino(folder):
    """A randomly initialised GroundingDINO (tiny Swin backbone, tiny BERT text encoder with
    MiniLM's local vocabulary), saved with its processor like a downloaded checkpoint."""
    from transformers import (AutoTokenizer, BertConfig, GroundingDinoConfig,
                              GroundingDinoForObjectDetection, GroundingDinoImageProcessor,
                              GroundingDinoProcessor, SwinConfig)
    from tvolib.weights import minilm_path
    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1],
                          num_heads=[1, 1, 2, 2], window_size=4, out_indices=[2, 3, 4])
    text = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)
    cfg = GroundingDinoConfig(backbone_config=backbone, text_config=text, num_queries=20, encoder_layers=1,
                              decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64, d_model=32,
                              encoder_attention_heads=2, decoder_attention_heads=2, num_feature_levels=3,
                              encoder_n_points=2, decoder_n_points=2, max_text_len=64)
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(cfg).save_pretrained(folder)
    ip = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 64})
    GroundingDinoProcessor(image_processor=ip, tokenizer=tok).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def gd_folder(tmp_path_factory):
    return tiny_grounding_dino(tmp_path_factory.mktemp("gdino"))


def img(k):
    return SAMPLE_DIR / "images" / f"{k}.png"


def test_grounding_end_to_end(tmp_path, gd_folder):
    grounder = G.Grounder(G.GroundingConfig(model=gd_folder, box_threshold=0.0, text_threshold=0.0))
    items = {"s0001": (img("s0001"), ["large red round emblem", "green triangle sign"]),
             "s0015": (img("s0015"), []),                          # unrelated image: no phrase
             "s0063": (img("s0063"), ["red circle"])}              # image file missing
    cache = JsonlCache(tmp_path / "boxes-llm.jsonl", key="imgid")
    st = G.ground_images(items, cache, grounder)
    assert st["computed"] == 3
    r = cache["s0001"]
    assert r["source"] == "groundingdino" and r["model"] == gd_folder and r["box_threshold"] == 0.0
    assert [b["phrase"] for b in r["boxes"]] == items["s0001"][1]   # one box per phrase, in order
    for b in r["boxes"]:
        x0, y0, x1, y1 = b["box"]
        assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256 and 0 <= b["score"] <= 1
    assert cache["s0015"]["boxes"] == [] and cache["s0015"]["source"] == "no-phrases"
    assert cache["s0063"]["source"] == "no-image"

    def no_grounder():
        raise AssertionError("cached: no model")
    assert G.ground_images(items, cache, no_grounder)["computed"] == 0
    items["s0001"] = (img("s0001"), ["blue square"])                # new phrases → regrounded
    G.ground_images(items, cache, grounder)
    assert [b["phrase"] for b in JsonlCache(tmp_path / "boxes-llm.jsonl", key="imgid")["s0001"]["boxes"]] == ["blue square"]

    enc = tiny_vit()
    boxes = {k: (p, cache[k]["boxes"]) for k, (p, _) in items.items()}
    fc, st = G.object_features(boxes, tmp_path / "obj.safetensors", enc)
    im = Image.open(img("s0001")).convert("RGB")
    ref = enc.encode([G.crop(im, b["box"]) for b in cache["s0001"]["boxes"]]).mean(0)
    assert torch.allclose(fc["s0001"], ref, atol=1e-5)              # crops → encoder → mean
    assert fc["s0015"].numel() == 0 and fc["s0063"].numel() == 0     # masked rows


def test_no_grounding_weights_is_resource_missing():
    with pytest.raises(ResourceMissing, match="TVOMNER_GROUNDING_MODEL"):
        G.Grounder(G.GroundingConfig(model=None))
    with pytest.raises(ResourceMissing, match="could not be loaded"):
        G.Grounder(G.GroundingConfig(model="/nonexistent/grounding-dino"))


def test_random_regions_for_the_without_llms_ablation(tmp_path, gd_folder):
    cache = JsonlCache(tmp_path / "r.jsonl", key="imgid")
    G.random_regions({"s0001": img("s0001"), "s0063": img("s0063")}, cache, n=5)
    boxes = cache["s0001"]["boxes"]
    assert len(boxes) == 5 and cache["s0001"]["source"] == "random-boxes"
    assert all(0 <= b["box"][0] < b["box"][2] <= 256 and 0 <= b["box"][1] < b["box"][3] <= 256 for b in boxes)
    assert boxes == G.random_boxes("s0001", (256, 256), 5) != G.random_boxes("s0002", (256, 256), 5)
    assert cache["s0063"]["boxes"] == []
    g = G.Grounder(G.GroundingConfig(model=gd_folder, box_threshold=0.0))
    c2 = JsonlCache(tmp_path / "r2.jsonl", key="imgid")
    G.random_regions({"s0002": img("s0002")}, c2, n=5, grounder=g)
    assert c2["s0002"]["source"] == "groundingdino-generic" and len(c2["s0002"]["boxes"]) == 5


def test_import_boxes_records_its_source(tmp_path):
    cache = JsonlCache(tmp_path / "b.jsonl", key="imgid")
    phrases = {"s0001": ["big red thing", "green thing"]}
    n = G.import_boxes(SAMPLE_DIR / "objects.jsonl", cache, phrases=phrases, keep={"s0001", "s0015", "s0063"})
    assert n == 2                                                    # s0063: no image was written
    r = cache["s0001"]
    assert r["source"] == "sample-ground-truth" and [b["phrase"] for b in r["boxes"]] == phrases["s0001"]
    assert cache["s0015"]["boxes"] == []                             # unrelated image
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"imgid": "x", "objects": []}) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        G.import_boxes(bad, JsonlCache(tmp_path / "c.jsonl", key="imgid"))


def test_object_features_recomputed_when_boxes_change(tmp_path):
    enc = tiny_vit()
    p = tmp_path / "o.safetensors"
    a = [{"box": [0, 0, 100, 100]}]
    fc, st = G.object_features({"s0001": (img("s0001"), a)}, p, enc)
    fc2, st2 = G.object_features({"s0001": (img("s0001"), a)}, p, enc)
    assert st2["computed"] == 0
    fc3, st3 = G.object_features({"s0001": (img("s0001"), [{"box": [100, 100, 250, 250]}])}, p, enc)
    assert st3["computed"] == 1 and not torch.allclose(fc["s0001"], fc3["s0001"])


def test_thresholds_from_the_environment():
    cfg = G.GroundingConfig.from_env({"TVOMNER_GROUNDING_BOX_THRESHOLD": "0.5",
                                      "TVOMNER_GROUNDING_TEXT_THRESHOLD": "0.4"})
    assert (cfg.box_threshold, cfg.text_threshold) == (0.5, 0.4)
