"""Experiment settings (``tvolib.settings``): names, the untyped knowledge transform, the configs of
a run, and which settings are identical by construction on a dataset."""
from __future__ import annotations

import dataclasses
import json

import pytest

from tvolib.config import DataConfig, ModelConfig
from tvolib.settings import (ABLATION_IDS, BASES, DatasetFacts, all_settings, configs, dataset_facts, get_setting,
                             identical_settings, knowledge_has_type_labels, model_config, split_recipe,
                             strip_type_labels, untyped_knowledge_file, why_identical)

PGIM = ("Named entities: 1. Kawhi Leonard (person/player) 2. NBA (league/organization) 3. Block of the Year "
        "(award/title) Reasoning: The sentence mentions Kawhi Leonard (a player), who won the award.")


def test_strip_type_labels_removes_the_entity_list_labels_only():
    assert strip_type_labels(PGIM) == ("Named entities: 1. Kawhi Leonard 2. NBA 3. Block of the Year Reasoning: "
                                       "The sentence mentions Kawhi Leonard (a player), who won the award.")
    # no blanks around the labels (the PGIM texts often glue them): words stay apart, items stay split
    assert strip_type_labels("1. Blackburn Festival (event/festival)2. 2017 (year)Reasoning:The (big) fest") == \
        "1. Blackburn Festival2. 2017 Reasoning:The (big) fest"
    assert strip_type_labels("1. X (team (sports)/club) 2. Y (city)") == "1. X 2. Y"      # nested, no reasoning
    assert strip_type_labels("no labels here. Reasoning: (kept)") == "no labels here. Reasoning: (kept)"
    assert strip_type_labels(strip_type_labels(PGIM)) == strip_type_labels(PGIM)          # idempotent


def test_untyped_knowledge_file_is_derived_once_under_another_name(tmp_path):
    src = tmp_path / "pgim_x.jsonl"
    src.write_text(json.dumps({"split": "train", "imgid": "1", "aux": PGIM}) + "\n\n"
                   + json.dumps({"split": "test", "imgid": "2", "aux": "plain text"}) + "\n")
    out = untyped_knowledge_file(src, tmp_path / "derived")
    assert out.name == "pgim_x.untyped.jsonl" and out.name != src.name    # the knowledge cache keys on the name
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["imgid"] for r in recs] == ["1", "2"] and recs[0]["aux"] == strip_type_labels(PGIM)
    assert recs[1]["aux"] == "plain text" and recs[0]["split"] == "train"
    mtime = out.stat().st_mtime_ns
    assert untyped_knowledge_file(src, tmp_path / "derived") == out and out.stat().st_mtime_ns == mtime
    src.write_text(json.dumps({"split": "train", "imgid": "1", "aux": "Named entities: 1. A (x)"}) + "\n")
    assert json.loads(untyped_knowledge_file(src, tmp_path / "derived").read_text())["aux"] == "Named entities: 1. A"
    assert knowledge_has_type_labels(src) and not knowledge_has_type_labels(out)
    src.write_text('{"imgid": "1"}\n')
    with pytest.raises(ValueError, match=r"pgim_x\.jsonl:1: expected a JSON object with a string 'aux'"):
        untyped_knowledge_file(src, tmp_path / "derived")


def test_text_only_means_the_tweet_alone_everywhere():
    cfg = model_config("text-only")
    assert (cfg.use_candidates, cfg.use_knowledge, cfg.visual) == (False, False, "none")
    assert ModelConfig().ablation("text-only") == cfg
    assert ModelConfig().ablation("no-visual") == model_config("tvomner-wiki.no-visual")
    assert model_config("tvomner-wiki").knowledge_source == "local"
    assert model_config("tvomner+pgim").knowledge_source == "tweet_files"
    assert model_config("tvomner-live-wiki").knowledge_source == "wikipedia"
    assert get_setting("tvomner+pgim-untyped").knowledge_transform == "untyped"


def test_every_ablation_is_its_base_plus_model_config_ablations():
    assert set(ABLATION_IDS.values()) == set(ModelConfig.ABLATIONS) - {"full", "text-only"}
    for base in ("tvomner-wiki", "tvomner+pgim", "tvomner+pgim-untyped"):
        for abl, label in ABLATION_IDS.items():
            s = get_setting(f"{base}.{abl}")
            assert s.base == base and s.label == label
            assert model_config(s.name) == dataclasses.replace(model_config(base), **ModelConfig.ABLATIONS[label])
            assert s.knowledge_transform == BASES[base].knowledge_transform
    assert len(all_settings()) == len(BASES) + (len(BASES) - 1) * len(ABLATION_IDS)
    for bad in ("full", "text-only.wo-VAE", "tvomner+pgim.wo-vae", "w/o VAE"):
        with pytest.raises(KeyError, match="unknown setting"):
            get_setting(bad)


def test_configs_of_a_run(tmp_path):
    data, train = split_recipe({"epochs": 4, "lr": 5e-5, "max_length": 160, "max_train_samples": 8})
    assert data == {"max_length": 160, "max_train_samples": 8} and train == {"epochs": 4, "lr": 5e-5}
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['lrr'\]"):
        split_recipe({"lrr": 1})
    with pytest.raises(ValueError, match="decided by the setting"):
        model_config("tvomner+pgim", {"knowledge_source": "local"})
    d, m, t = configs("sample", {}, "tvomner+pgim.wo-VAE", 3, {"epochs": 2, "max_length": 64},
                      {"gate_init": 0.9}, output_dir=str(tmp_path / "r"), cache_dir=str(tmp_path / "c"))
    assert (d.dataset, d.max_length, d.cache_dir) == ("sample", 64, str(tmp_path / "c"))
    assert (m.use_vae, m.knowledge_source, m.gate_init) == (False, "tweet_files", 0.9)
    assert (t.seed, t.epochs, t.resume, t.num_threads, t.output_dir) == (3, 2, True, 1, str(tmp_path / "r"))
    # the untyped control reads a derived copy of the per-tweet file (written only with materialize)
    src = tmp_path / "pgim_sample.jsonl"
    src.write_text(json.dumps({"split": "train", "imgid": "s0001", "aux": PGIM}) + "\n")
    d, _, _ = configs("sample", {"knowledge_file": str(src)}, "tvomner+pgim-untyped", 1, cache_dir=str(tmp_path / "c"))
    assert d.knowledge_file == str(tmp_path / "c" / "sample" / "knowledge-untyped" / "pgim_sample.untyped.jsonl")
    assert not (tmp_path / "c").exists()
    d, _, _ = configs("sample", {"knowledge_file": str(src)}, "tvomner+pgim-untyped", 1, cache_dir=str(tmp_path / "c"),
                      materialize=True)
    assert "(person/player)" not in open(d.knowledge_file).read()


def test_settings_identical_by_construction():
    names = ["text-only", "tvomner-wiki", "tvomner+pgim", "tvomner+pgim-untyped", "tvomner+pgim.wo-LLMs",
             "tvomner+pgim.wo-OT", "tvomner-wiki.wo-OT", "tvomner+pgim.wo-Wiki", "tvomner-wiki.wo-Wiki",
             "tvomner+pgim.wo-VAE", "tvomner+pgim.no-visual"]
    # the real data: no images, no LLM phrases, typed PGIM texts
    real = identical_settings(names, DatasetFacts(has_images=False, has_phrases=False, knowledge_typed=True))
    assert real == {"tvomner+pgim.wo-LLMs": "tvomner+pgim",            # v_obj masked either way
                    "tvomner-wiki.wo-OT": "tvomner+pgim.wo-OT",        # no candidates: no knowledge source
                    "tvomner-wiki.wo-Wiki": "tvomner+pgim.wo-Wiki"}    # candidates without knowledge
    assert "object features are masked" in why_identical("tvomner+pgim.wo-LLMs", "tvomner+pgim",
                                                         DatasetFacts(False, False, True))
    # a phrases stand-in (or images) makes w/o LLMs a real ablation
    assert "tvomner+pgim.wo-LLMs" not in identical_settings(names, DatasetFacts(False, True, True))
    assert "tvomner+pgim.wo-LLMs" not in identical_settings(names, DatasetFacts(True, False, True))
    # texts without type labels: the untyped control is the same run
    plain = identical_settings(names, DatasetFacts(True, True, False))
    assert plain["tvomner+pgim-untyped"] == "tvomner+pgim"
    assert "tvomner+pgim-untyped" not in real


def test_dataset_facts_name_the_phrase_stand_in(tmp_path):
    from tvolib.settings import dataset_facts
    from tvolib.vfo.pipeline import CAPTION_PHRASES
    cap = tmp_path / "captions.json"
    cap.write_text('{"1": "a man on a stage"}')
    facts = dataset_facts(DataConfig(dataset="x", image_dir=None, captions=str(cap), phrases=CAPTION_PHRASES,
                                     cache_dir=str(tmp_path / "cache")))
    assert facts.has_phrases and "caption's noun chunks (offline stand-in)" in facts.describe()
    assert "LLM phrases: no" in DatasetFacts(False, False, None).describe()
    assert "LLM phrases: yes" in DatasetFacts(False, True, None).describe()


def test_sample_facts():
    from tvolib.config import DataConfig
    f = dataset_facts(DataConfig())
    assert f.has_images and f.has_phrases and f.knowledge_typed is False
    f = dataset_facts(DataConfig(image_dir=None, phrases=None, cache_dir="/nonexistent"))
    assert not f.has_images and not f.has_phrases


@pytest.mark.realdata
def test_real_pgim_texts_lose_their_labels(shared_data):
    lines = (shared_data / "llm_knowledge" / "pgim_twitter2017.jsonl").read_text().splitlines()[:200]
    auxes = [json.loads(l)["aux"] for l in lines]
    stripped = [strip_type_labels(a) for a in auxes]
    assert sum(a != s for a, s in zip(auxes, stripped)) > 150
    heads = [s.split("Reasoning")[0] for s in stripped]
    assert not any("(person" in h or "(location" in h for h in heads)
    # the reasoning is left as it was
    assert all(a.split("Reasoning", 1)[-1] == s.split("Reasoning", 1)[-1] for a, s in zip(auxes, stripped)
               if "Reasoning" in a)
