"""Retrieval-augmented text input and the text encoder of the TFO module (section 4.1, Eq. 1).

Template (section 4.1), with the tokenizer's own special tokens (``[CLS]``/``[SEP]`` for BERT,
``<s>``/``</s>`` for RoBERTa)::

    [CLS] tweet [SEP] E1: K1 [SEP] E2: K2 [SEP] ... [SEP]

* Word alignment: every tweet word is tokenized on its own (``is_split_into_words``); its FIRST
  sub-token's position goes into ``word_index`` so that T has exactly one vector per tweet word.
  A word that tokenizes to nothing (U+00A0, some control characters in Twitter-2015) gets the UNK
  token, so every word has a position.
* Truncation only ever cuts knowledge: the tweet is always whole. The knowledge budget
  ``max_length - (len(tweet) + 2)`` is shared among the candidates by water-filling (the longest
  knowledge texts are cut first); candidate names are kept; if even the names do not fit, the last
  candidates are dropped. A tweet longer than ``max_length - 2`` sub-tokens raises max_length for
  that tweet (no knowledge is added to it) up to the model's position limit
  (``model_max_length``); beyond that a ``ValueError`` names the tweet length.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from ..weights import resolve_text_encoder


BPE_MODEL_TYPES = ("roberta", "xlm-roberta", "deberta", "deberta-v2", "gpt2", "bart", "longformer", "mpnet")


def load_tokenizer(name_or_path: str = "minilm"):
    """The tokenizer of an encoder (offline names resolved); byte-level BPE tokenizers (RoBERTa...)
    get ``add_prefix_space=True``, which ``is_split_into_words`` needs."""
    path = resolve_text_encoder(name_or_path)
    try:
        mtype = json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        mtype = None
    if mtype in BPE_MODEL_TYPES and mtype != "mpnet":
        return AutoTokenizer.from_pretrained(path, add_prefix_space=True)
    return AutoTokenizer.from_pretrained(path)


def _word_pieces(tokenizer, tokens: list[list[str]]) -> list[list[list[int]]]:
    """Sub-token ids of every word of every tweet (empty words → [UNK])."""
    unk = tokenizer.unk_token_id
    out = []
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(tokens, is_split_into_words=True, add_special_tokens=False)
        for b, words in enumerate(tokens):
            pieces = [[] for _ in words]
            for tid, w in zip(enc["input_ids"][b], enc.word_ids(b)):
                if w is not None:
                    pieces[w].append(tid)
            out.append([p if p else [unk] for p in pieces])
    else:
        for words in tokens:
            pieces = [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(w)) for w in words]
            out.append([p if p else [unk] for p in pieces])
    return out


def _fit_knowledge(segments: list[tuple[list[int], list[int]]], budget: int) -> list[list[int]]:
    """Cut knowledge (never names) so that sum(len(name)+len(know)+1) <= budget (water-filling)."""
    names = [n for n, _ in segments]
    knows = [k for _, k in segments]
    # drop trailing candidates whose names alone do not fit
    while names and sum(len(n) + 1 for n in names) > budget:
        names.pop(); knows.pop()
    room = budget - sum(len(n) + 1 for n in names)
    lens = [len(k) for k in knows]
    if sum(lens) > room:
        # largest cap c such that sum(min(len, c)) <= room
        lo, hi = 0, max(lens)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if sum(min(l, mid) for l in lens) <= room:
                lo = mid
            else:
                hi = mid - 1
        knows = [k[:lo] for k in knows]
    return [n + k for n, k in zip(names, knows)]


def build_inputs(tokenizer, tokens: list[list[str]], augs: list[list[tuple[str, str]]],
                 max_length: int) -> dict:
    """Tensors for a batch: ``input_ids``, ``attention_mask`` (B, L), ``word_index`` (B, W)
    (first sub-token of each tweet word, 0-padded), ``word_mask`` (B, W) bool."""
    if len(tokens) != len(augs):
        raise ValueError(f"{len(tokens)} tweets but {len(augs)} augmentation lists")
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls is None or sep is None:   # e.g. GPT-style tokenizers: fall back to bos/eos
        cls = cls if cls is not None else tokenizer.bos_token_id
        sep = sep if sep is not None else tokenizer.eos_token_id
    if cls is None or sep is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no CLS/SEP (or BOS/EOS) token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model_max = getattr(tokenizer, "model_max_length", 512)
    model_max = model_max if model_max and model_max < 100_000 else 512
    pieces = _word_pieces(tokenizer, tokens)
    # candidate names "E:" and knowledge " K", tokenized in one batch each
    flat_names = [f"{e}:" if k else e for a in augs for e, k in a]
    flat_know = [k for a in augs for _, k in a]
    name_ids = tokenizer(flat_names, add_special_tokens=False)["input_ids"] if flat_names else []
    know_ids = tokenizer([k if k else "" for k in flat_know], add_special_tokens=False)["input_ids"] if flat_know else []
    seqs, word_pos = [], []
    j = 0
    for b, words in enumerate(pieces):
        ids, pos = [cls], []
        for p in words:
            pos.append(len(ids))
            ids.extend(p)
        ids.append(sep)
        if len(ids) > max_length:
            if len(ids) > model_max:
                raise ValueError(f"tweet {b} has {len(ids)} sub-tokens with [CLS]/[SEP], more than the "
                                 f"model's limit {model_max}; it cannot be encoded whole")
            warnings.warn(f"tweet {b} has {len(ids)} sub-tokens > max_length={max_length}: kept whole, "
                          f"without knowledge", stacklevel=2)
        n_aug = len(augs[b])
        segs = [(name_ids[j + i], know_ids[j + i] if flat_know[j + i] else []) for i in range(n_aug)]
        j += n_aug
        budget = max(0, max_length - len(ids))
        for s in _fit_knowledge(segs, budget):
            ids.extend(s)
            ids.append(sep)
        seqs.append(ids)
        word_pos.append(pos)
    L = max(len(s) for s in seqs) if seqs else 0
    W = max((len(p) for p in word_pos), default=0)
    B = len(seqs)
    input_ids = torch.full((B, L), pad, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    word_index = torch.zeros((B, W), dtype=torch.long)
    word_mask = torch.zeros((B, W), dtype=torch.bool)
    for b, (s, p) in enumerate(zip(seqs, word_pos)):
        input_ids[b, :len(s)] = torch.tensor(s)
        attention_mask[b, :len(s)] = 1
        word_index[b, :len(p)] = torch.tensor(p, dtype=torch.long)
        word_mask[b, :len(p)] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "word_index": word_index, "word_mask": word_mask}


class SelfAttentionLN(nn.Module):
    """Eq. 1: T^ = LN(MP(softmax(Q K^T / sqrt(d_t)) V)), Q = K = V = T_rag.

    Our reading of "MP": the merge of the h heads' outputs. Each head attends in a d/h subspace;
    the heads are concatenated and mixed by the output projection W_O — a learned (weighted)
    pooling of the heads. A literal mean over token positions would collapse the sequence to one
    vector, which contradicts "taking the first n tokens of T^". As in a Transformer layer we add
    the residual connection before LN, so at initialisation T^ stays close to the pretrained
    encoder's output. Padding positions are masked out of the keys.
    """

    def __init__(self, d: int, num_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        if d % num_heads:
            raise ValueError(f"hidden size {d} is not divisible by num_heads={num_heads}")
        self.h, self.dk = num_heads, d // num_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)          # W_O: "MP", merge of the heads
        self.drop = nn.Dropout(dropout)
        self.ln = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.h, self.dk).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dk)         # Eq. 1: QK^T / sqrt(d_t)
        if attention_mask is not None:
            scores = scores.masked_fill(~attention_mask.bool()[:, None, None, :], float("-inf"))
        att = self.drop(torch.softmax(scores, dim=-1))                 # Eq. 1: softmax
        heads = (att @ v).transpose(1, 2).reshape(B, L, d)
        return self.ln(x + self.drop(self.proj(heads)))                # Eq. 1: LN(MP(.)) (+ residual)


class TextEncoder(nn.Module):
    """HF encoder over the augmented input → Eq. 1 → T (first sub-token of each tweet word), t_cls."""

    def __init__(self, name_or_path: str = "minilm", num_heads: int = 8, dropout: float = 0.1,
                 _backbone=None):
        super().__init__()
        if _backbone is None:
            _backbone = AutoModel.from_pretrained(resolve_text_encoder(name_or_path))
        self.name = name_or_path
        self.backbone = _backbone
        self.hidden_size = int(_backbone.config.hidden_size)
        heads = num_heads
        while self.hidden_size % heads:   # e.g. 384 with 8 heads is fine; fall back gracefully
            heads -= 1
        self.attn = SelfAttentionLN(self.hidden_size, heads, dropout)

    @classmethod
    def from_config(cls, config, num_heads: int = 8, dropout: float = 0.1) -> "TextEncoder":
        return cls(f"random:{config.model_type}", num_heads, dropout, _backbone=AutoModel.from_config(config))

    def forward(self, input_ids, attention_mask, word_index, word_mask):
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # T_rag
        t_hat = self.attn(h, attention_mask)                                                      # Eq. 1
        idx = word_index.unsqueeze(-1).expand(-1, -1, t_hat.size(-1))
        T = torch.gather(t_hat, 1, idx) * word_mask.unsqueeze(-1).to(t_hat.dtype)  # first n tokens
        return T, t_hat[:, 0]
