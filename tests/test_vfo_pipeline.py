"""visual_features on the embedded sample: kinds per tweet, caches, warm re-run, live LLM +
grounding path, the "w/o LLMs" ablation and the missing-resource messages."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tvolib.config import DataConfig, ModelConfig
from tvolib.data import load_dataset
from tvolib.resources import resolve
from tvolib.weights import ResourceMissing
from tvolib.vfo import pipeline as P
from tvolib.vfo.fusion import VisualFeatureOptimizer

from test_vfo_encoders import tiny_sentence_encoder, tiny_vit

UNRELATED = {"s0015", "s0031", "s0032", "s0033", "s0044", "s0048", "s0050", "s0076", "s0089", "s0091",
             "s0110", "s0116"}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for v in ("TVOMNER_LLM_BASE_URL", "TVOMNER_LLM_MODEL", "TVOMNER_GROUNDING_MODEL"):
        monkeypatch.delenv(v, raising=False)


@pytest.fixture(scope="module")
def encoders():
    return tiny_vit(), tiny_sentence_encoder()


def run(tmp_path, encoders, data_kw=None, model_kw=None, **kw):
    dc = DataConfig(cache_dir=str(tmp_path), **(data_kw or {}))
    mc = dataclasses.replace(ModelConfig(), **(model_kw or {}))
    ds = load_dataset(dc.data_dir, dc.image_dir, name=dc.dataset, max_samples=kw.pop("max_samples", None))
    img, sent = encoders
    return ds, dc, mc, vis(ds, dc, mc, image_encoder=img, sentence_encoder=sent, **kw)


def vis(ds, dc, mc, **kw):
    """``visual_features`` with the resources and side inputs resolved at the edge."""
    return P.visual_features(ds, mc, resolve(dc, mc), P.SideInputs.from_config(dc), **kw)


def test_sample_kinds_counts_and_warm_rerun(tmp_path, encoders):
    ds, dc, mc, vf = run(tmp_path, encoders)
    assert len(vf.ids) == 120 and vf.index["s0063"] == vf.ids.index("s0063")
    assert vf.glob.shape == (120, vf.d_v) and vf.glob_caption.shape == (120, vf.d_caption)
    kinds = dict(zip(vf.ids, vf.glob_kind))
    assert kinds["s0063"] == kinds["s0105"] == "caption" and vf.counts["glob_kind"] == {"image": 118, "caption": 2}
    ok = dict(zip(vf.ids, vf.obj_kind))
    assert all(ok[k] == "none" for k in UNRELATED)                   # LLM said []: zero vector, masked
    assert ok["s0063"] == "phrases" and ok["s0001"] == "image"
    assert (vf.obj[~vf.obj_mask] == 0).all() and vf.obj_mask.sum() == sum(k != "none" for k in vf.obj_kind)
    assert vf.counts["boxes_source"] == {"sample-ground-truth": 118}
    assert vf.counts["phrases_source"] == {"sample-template": 120}
    rep = json.loads((tmp_path / "sample" / "visual_report.json").read_text())
    assert rep["glob_kind"] == vf.counts["glob_kind"]

    class Boom:                                                       # warm: no model may run
        name, dim = encoders[1].name, encoders[1].dim

        def encode(self, *a, **k):
            raise AssertionError("warm run encoded something")
    vf2 = vis(ds, dc, mc, image_encoder=encoders[0], sentence_encoder=Boom())
    assert torch.equal(vf2.glob, vf.glob) and torch.equal(vf2.obj, vf.obj) and vf2.obj_kind == vf.obj_kind
    assert vf2.counts["seconds"] < vf.counts["seconds"]
    print("timings cold", vf.counts["timings"], "warm", vf2.counts["timings"])

    b = vf.batch(["s0001", "s0063", "s0015"])
    assert b["glob_kind"].tolist() == [1, 2, 1] and b["obj_mask"].tolist() == [True, True, False]
    m = VisualFeatureOptimizer(ModelConfig(latent_dim=8), 16, vf.dims)
    V, l_vae, w = m(torch.randn(3, 4, 16), torch.randn(3, 16), torch.ones(3, 4, dtype=torch.bool), b)
    assert V.shape == (3, vf.d_v) and torch.allclose(w.sum(-1), torch.ones(3)) and w[2, 2] == 0
    with pytest.raises(KeyError, match="no visual features"):
        vf.batch(["nope"])


def test_without_llms_uses_five_random_regions(tmp_path, encoders):
    _, _, _, vf = run(tmp_path, encoders, model_kw={"object_source": "random"}, max_samples=4)
    assert vf.counts["boxes_source"] == {"random-boxes": 12} and vf.counts["boxes"] == 60
    assert vf.counts["obj_kind"] == {"image": 12}


def test_captions_only_dataset(tmp_path, encoders):
    _, _, _, vf = run(tmp_path, encoders, data_kw={"image_dir": None, "phrases": None}, max_samples=5)
    assert vf.counts["glob_kind"] == {"caption": 15} and vf.counts["obj_kind"] == {"none": 15}
    assert (vf.glob == 0).all() and vf.d_caption == encoders[1].dim


def test_no_phrases_no_endpoint_is_resource_missing(tmp_path, encoders):
    with pytest.raises(ResourceMissing, match="TVOMNER_LLM_BASE_URL"):
        run(tmp_path, encoders, data_kw={"phrases": None}, max_samples=2)


def test_no_boxes_no_grounder_is_resource_missing(tmp_path, encoders):
    with pytest.raises(ResourceMissing, match="TVOMNER_GROUNDING_MODEL"):
        run(tmp_path, encoders, data_kw={"boxes": None}, max_samples=2)


def test_live_llm_and_grounding_path(tmp_path, encoders, monkeypatch):
    """Endpoint + GroundingDINO configured: phrases from the server, boxes from the model."""
    from test_vfo_grounding import tiny_grounding_dino
    from test_vfo_llm import FakeLLM
    gd = tiny_grounding_dino(tmp_path / "gd")
    with FakeLLM(faults={"429": 0.2}, seed=2) as fake:
        monkeypatch.setenv("TVOMNER_LLM_BASE_URL", fake.url)
        monkeypatch.setenv("TVOMNER_LLM_MODEL", "fake-model")
        monkeypatch.setenv("TVOMNER_GROUNDING_MODEL", gd)
        _, _, _, vf = run(tmp_path / "c", encoders, data_kw={"phrases": None, "boxes": None, "captions": None},
                          max_samples=2)
    assert vf.counts["llm_captions"]["computed"] == 6                # captions first (image as data URL)
    assert vf.counts["glob_kind"] == {"image": 6}
    assert vf.counts["phrases_source"] == {"llm": 6} and vf.counts["llm_phrases"]["computed"] == 6
    caps = [json.loads(l) for l in (tmp_path / "c" / "sample" / "captions-llm.jsonl").read_text().splitlines()]
    assert {c["caption"] for c in caps} == {"an image of 256 by 256 pixels"}
    assert vf.counts["boxes_source"] == {"groundingdino": 6}
    assert vf.counts["obj_kind"]["image"] >= 1


def test_text_only_setting_computes_nothing(tmp_path, encoders):
    _, _, _, vf = run(tmp_path, encoders, model_kw={"visual": "none"}, max_samples=2)
    assert vf.counts["glob_kind"] == {"none": 6} and not any((tmp_path / "sample").glob("features-*"))


def test_caption_noun_chunks_stand_in_for_the_llm_phrases(tmp_path, encoders):
    """Without images (captions only, as on the real benchmarks) and without an LLM, the noun chunks
    of each caption become the phrases whose embeddings stand in for v_obj, and say so."""
    pytest.importorskip("spacy")
    from tvolib.vfo.caption_phrases import load_parser, noun_phrases
    try:
        nlp = load_parser()
    except ResourceMissing as e:
        pytest.skip(str(e))
    assert noun_phrases(["michael jackson at the new york theatre", "a picture of it"], nlp) == \
        [["michael jackson", "new york theatre"], []]
    ds, dc, mc, vf = run(tmp_path, encoders, data_kw={"image_dir": None, "phrases": P.CAPTION_PHRASES})
    assert vf.counts["glob_kind"] == {"caption": 120}
    assert vf.counts["phrases_source"] == {"caption-noun-chunks": 120}
    ok = dict(zip(vf.ids, vf.obj_kind))
    assert set(ok.values()) == {"phrases"}                  # every sample caption names a shape
    recs = [json.loads(l) for l in (tmp_path / "sample" / "phrases-caption-noun-chunks.jsonl").read_text().splitlines()]
    assert len(recs) == 120 and all(r["parser"].startswith("spacy-") for r in recs)
    assert "red circle" in recs[0]["phrases"] or any("circle" in p for r in recs for p in r["phrases"])
