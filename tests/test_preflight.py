"""The paper's recipe (``params/paper_*.yaml``) and its preflight (``python -m tvolib.runs --params FILE
--preflight``): with nothing configured, a report that names every missing resource with its fix and
exit status 1; with local stand-ins (data, images, a Hugging Face cache holding the weights'
files, a MediaWiki and an OpenAI-compatible server on 127.0.0.1, a GroundingDINO folder, a GPU)
every check present and exit status 0; without CUDA, the GPU named as missing."""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from PIL import Image

from tvolib.runs import cli
from tvolib.runs import preflight as preflight_module
from tvolib.runs.plan import load_experiment, plan
from tvolib.runs.preflight import MISSING, PRESENT, preflight
from tvolib.settings import configs
from test_knowledge_llm import FakeLLM
from test_tfo_wikipedia import wiki  # noqa: F401  (the MediaWiki stand-in, a fixture)

REPO = Path(__file__).resolve().parent.parent
PAPER = {ds: REPO / "params" / f"paper_{ds}.yaml" for ds in ("twitter2015", "twitter2017")}
TWEETS = {"train": ["101", "102"], "valid": ["201"], "test": ["301"]}
VIT = "timm/vit_base_patch32_224.augreg_in21k_ft_in1k"


def test_the_paper_params_parse_and_hold_the_papers_recipe():
    for ds, path in PAPER.items():
        cfg = load_experiment(path)
        p = plan(path)
        assert [r.label for r in p.runs][:2] == [f"{ds} text-only s1", f"{ds} tvomner-live-wiki s1"]
        assert len(p.runs) == 6 and cfg["seeds"] == [1, 2, 3]
        spec = cfg["datasets"][ds]
        assert spec["image_dir"] and spec["phrases"] is None and spec["boxes"] is None   # images, LLM, GroundingDINO
        data, model, train = configs(ds, spec, "tvomner-live-wiki", 1, cfg["recipe"], cfg["model"])
        assert (model.text_encoder, model.image_encoder, model.dropout) == ("roberta-large", "vit_base_patch32_224", 0.3)
        assert (model.knowledge_source, model.visual, model.object_source) == ("wikipedia", "optimized", "llm")
        assert (train.batch_size, train.lr, train.device, train.precision) == (64, 3e-5, "cuda", "fp32")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/w/api.php"        # nothing listens there once the socket is closed


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A working folder with the benchmark files but no images, no weights, no endpoints, no GPU."""
    for k in list(os.environ):
        if k.startswith(("TVOMNER_", "OPENAI_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("TVOMNER_TRACKING", "0")
    monkeypatch.setenv("TVOMNER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TVOMNER_WIKI_API_URL", closed_port_url())     # hermetic: no request leaves the machine
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plenty = shutil.disk_usage(tmp_path)._replace(free=10**15)   # this machine's free disk is not the test's
    monkeypatch.setattr(preflight_module.shutil, "disk_usage", lambda path: plenty)
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "data" / "twitter2017"
    d.mkdir(parents=True)
    for split, ids in TWEETS.items():
        (d / f"{split}.txt").write_text("\n\n".join(f"IMGID:{i}\nObama\tB-PER\nvisits\tO\nParis\tB-LOC" for i in ids)
                                        + "\n")
    (tmp_path / "data" / "captions").mkdir()
    (tmp_path / "data" / "captions" / "blip2_twitter2017.json").write_text(
        json.dumps({i: "a man at a podium" for ids in TWEETS.values() for i in ids}))
    return tmp_path


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def test_nothing_configured_is_a_clear_report_and_exit_status_1(fresh, capsys):
    assert cli.main(["--params", str(PAPER["twitter2017"]), "--preflight"]) == 1
    out = capsys.readouterr().out
    c = by_name(preflight(PAPER["twitter2017"]))
    assert c["twitter2017 data"].status == PRESENT and c["twitter2017 data"].detail == "4 tweets (2 / 1 / 1)"
    assert c["twitter2017 captions"].status == PRESENT
    missing = {n: x.fix for n, x in c.items() if x.status != PRESENT}
    assert set(missing) == {"text encoder roberta-large", "twitter2017 candidate tagger", "Wikipedia API",
                            "twitter2017 images", "image encoder vit_base_patch32_224", "LLM endpoint",
                            "GroundingDINO", "GPU"}, missing
    assert all(missing.values()), missing                         # each with its fix
    assert "huggingface-cli download roberta-large" in missing["text encoder roberta-large"]
    assert f"huggingface-cli download {VIT}" in missing["image encoder vit_base_patch32_224"]
    assert "TVOMNER_LLM_BASE_URL" in missing["LLM endpoint"] and "TVOMNER_GROUNDING_MODEL" in missing["GroundingDINO"]
    assert "TVOMNER_WIKI_API_URL" in missing["Wikipedia API"] and "data/twitter2017_images" in missing["twitter2017 images"]
    for name in missing:                                          # the printed table names each, then its fix
        assert f"MISSING      {name}" in out
    assert out.count("fix: ") == len(missing) and "8 of 12 required resources are not present" in out


def test_too_little_free_disk_is_missing_with_how_much_to_free(fresh, monkeypatch):
    little = shutil.disk_usage(fresh)._replace(free=10**6)
    monkeypatch.setattr(preflight_module.shutil, "disk_usage", lambda path: little)
    disk = [x for x in preflight(PAPER["twitter2017"]) if x.name.startswith("disk for")]
    assert len(disk) == 1 and disk[0].status == MISSING and disk[0].detail == "0.0 GB free"
    assert float(disk[0].need.split()[1]) > 0
    assert disk[0].fix.startswith("free ") and "or set cache_dir / runs_dir to a larger disk" in disk[0].fix


def test_a_fresh_clone_without_data_names_the_data_root(fresh, capsys):
    (fresh / "data" / "twitter2017" / "train.txt").unlink()
    c = by_name(preflight(PAPER["twitter2017"]))
    assert c["twitter2017 data"].status == MISSING and "make data" in c["twitter2017 data"].fix
    assert c["twitter2017 images"].status == MISSING          # no folder at all: said before counting


def test_a_bad_params_file_is_exit_status_2(fresh, capsys):
    bad = fresh / "bad.yaml"
    bad.write_text(PAPER["twitter2017"].read_text() + "epochs: 3\n")
    assert cli.main(["--params", str(bad), "--preflight"]) == 2
    assert "unknown key(s) ['epochs']" in capsys.readouterr().err


def hf_cached(root: Path, repo: str, files: dict[str, str]) -> None:
    """A repository in a Hugging Face cache, as `huggingface-cli download` leaves it."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snap = folder / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for name, text in files.items():
        (snap / name).write_text(text)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)


@pytest.fixture
def stand_ins(fresh, monkeypatch, wiki):  # noqa: F811
    """Everything the paper's recipe needs, as local stand-ins."""
    images = fresh / "data" / "twitter2017_images"
    images.mkdir()
    for i in [i for ids in TWEETS.values() for i in ids]:
        Image.new("RGB", (8, 8), "red").save(images / f"{i}.jpg")
    hf = fresh / "hf"
    hf_cached(hf, "roberta-large", {"config.json": '{"model_type": "roberta"}', "model.safetensors": "w"})
    hf_cached(hf, VIT, {"config.json": "{}", "model.safetensors": "w"})
    dino = fresh / "grounding-dino-tiny"
    dino.mkdir()
    (dino / "config.json").write_text('{"model_type": "grounding-dino"}')
    (dino / "model.safetensors").write_text("w")
    monkeypatch.setenv("TVOMNER_GROUNDING_MODEL", str(dino))
    monkeypatch.setenv("TVOMNER_WIKI_API_URL", wiki.url)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Stand-in GPU")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: SimpleNamespace(total_memory=24e9))
    with FakeLLM() as llm:
        monkeypatch.setenv("TVOMNER_LLM_BASE_URL", llm.url)
        monkeypatch.setenv("TVOMNER_LLM_MODEL", "fake-model")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-0123456789")
        yield fresh


def test_with_local_stand_ins_every_check_is_present_and_the_key_is_never_shown(stand_ins, capsys):
    assert cli.main(["--params", str(PAPER["twitter2017"]), "--preflight"]) == 0
    out = capsys.readouterr().out
    c = by_name(preflight(PAPER["twitter2017"]))
    assert all(x.status == PRESENT for x in c.values()), [x for x in c.values() if x.status != PRESENT]
    assert c["twitter2017 images"].detail == "4 of 4 tweets have an image"
    assert c["GPU"].detail == "Stand-in GPU, 24 GB" and c["Wikipedia API"].detail.startswith("answers")
    assert "OPENAI_API_KEY set (not shown)" in c["LLM endpoint"].detail
    assert "SECRET" not in out and "every required resource is present" in out


def test_a_partial_image_folder_and_an_unreachable_llm_are_missing(stand_ins, monkeypatch):
    for p in sorted((stand_ins / "data" / "twitter2017_images").iterdir())[:2]:
        p.unlink()
    monkeypatch.setenv("TVOMNER_LLM_BASE_URL", closed_port_url().removesuffix("/w/api.php") + "/v1")
    c = by_name(preflight(PAPER["twitter2017"]))
    assert c["twitter2017 images"].status == MISSING and c["twitter2017 images"].detail == "2 of 4 tweets have an image"
    assert c["LLM endpoint"].status == MISSING and "not reachable" in c["LLM endpoint"].detail


def test_without_cuda_the_gpu_is_missing_with_the_fix(stand_ins, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["--params", str(PAPER["twitter2017"]), "--preflight"]) == 1
    gpu = by_name(preflight(PAPER["twitter2017"]))["GPU"]
    assert gpu.status == MISSING and gpu.required and "NVIDIA GPU" in gpu.fix
    assert "1 of 12 required resources are not present: GPU" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: SimpleNamespace(total_memory=8e9))
    gpu = by_name(preflight(PAPER["twitter2017"]))["GPU"]
    assert gpu.status == MISSING and "micro_batch_size" in gpu.fix


def test_bf16_without_bf16_units_is_an_optional_missing_line_with_the_fix():
    from tvolib.config import TrainConfig
    from tvolib.runs.preflight import bf16_check, report
    flags = "processor\t: 0\nflags\t\t: fpu sse2 avx2 {}\n"
    bf16 = TrainConfig(precision="bf16", device="cpu")
    slow = bf16_check(bf16, "local", flags.format(""))
    assert slow.status == MISSING and not slow.required and slow.ok and "fp32" in slow.fix
    assert bf16_check(bf16, "local", flags.format("avx512_bf16")).status == PRESENT
    assert bf16_check(TrainConfig(precision="fp32", device="cpu"), "local", flags.format("")) is None
    assert bf16_check(bf16, "slurm", flags.format("")) is None          # the nodes' CPUs are not this one's
    lines = report([slow, bf16_check(bf16, "local", flags.format("amx_bf16"))]).splitlines()
    assert lines[0].startswith("missing (optional) bf16") and lines[3].startswith("present (optional) bf16")
    assert lines[-1] == "every required resource is present"
