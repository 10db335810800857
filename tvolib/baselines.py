"""Word-level text-only baselines of Table 1, trained by the same trainer as TVOMNER.

* ``ModelConfig(arch="bilstm_crf", visual="none")``: word embeddings → BiLSTM → CRF (Huang et al., 2015).
* ``ModelConfig(arch="cnn_bilstm_crf", visual="none")``: [word embedding; character-CNN] → BiLSTM → CRF
  (Ma and Hovy, 2016): characters embedded, one convolution (kernel 3), max-pooled over the word.
* The third baseline, encoder-BiLSTM-CRF, is ``ModelConfig(visual="none")`` with the transformer.

No pretrained word vectors (GloVe) can be downloaded here, so word embeddings are either
``word_init="encoder"`` (default): each word's vector is the **mean of the offline text encoder's
input (sub-token) embeddings of its word pieces** (MiniLM: 384-d), fine-tuned during training — the
vocabulary then covers every word of every split, as a GloVe table would, using no labels; or
``word_init="random"``: trained from scratch (``word_dim``), vocabulary = training words (others → <unk>).
Words are lower-cased for the word table; the character CNN sees the original case.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch
import torch.nn as nn
from transformers import AutoModel, AutoTokenizer

PAD, UNK = "<pad>", "<unk>"


def build_vocab(train_words: Sequence[Sequence[str]], extra_words: Sequence[Sequence[str]] = ()) -> dict:
    """Word (lower-cased) and character vocabularies as plain lists (stored in checkpoints)."""
    wc = Counter(w.lower() for s in list(train_words) + list(extra_words) for w in s)
    cc = Counter(c for s in train_words for w in s for c in w)
    return {"words": [PAD, UNK] + sorted(wc), "chars": [PAD, UNK] + sorted(cc)}


class Vocab:
    def __init__(self, d: dict):
        self.words, self.chars = list(d["words"]), list(d["chars"])
        self.w2i = {w: i for i, w in enumerate(self.words)}
        self.c2i = {c: i for i, c in enumerate(self.chars)}

    def to_dict(self) -> dict:
        return {"words": self.words, "chars": self.chars}

    def encode(self, tokens: Sequence[str], max_chars: int = 20) -> dict:
        return {"word_ids": [self.w2i.get(w.lower(), 1) for w in tokens],
                "char_ids": [[self.c2i.get(c, 1) for c in w[:max_chars]] or [1] for w in tokens]}


def collate_words(examples: list[dict]) -> dict:
    """Pad word ids (B, W) and char ids (B, W, C)."""
    B = len(examples)
    W = max(len(e["word_ids"]) for e in examples)
    C = max(len(c) for e in examples for c in e["char_ids"])
    word_ids = torch.zeros(B, W, dtype=torch.long)
    char_ids = torch.zeros(B, W, C, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["word_ids"])
        word_ids[i, :n] = torch.tensor(e["word_ids"])
        for j, cs in enumerate(e["char_ids"]):
            char_ids[i, j, :len(cs)] = torch.tensor(cs)
    return {"word_ids": word_ids, "char_ids": char_ids, "word_mask": word_ids != 0}


def encoder_word_vectors(words: Sequence[str], encoder_path: str) -> torch.Tensor:
    """Mean of the encoder's input sub-token embeddings over each word's pieces (row 0 = pad = 0)."""
    tok = AutoTokenizer.from_pretrained(encoder_path)
    emb = AutoModel.from_pretrained(encoder_path).get_input_embeddings().weight.detach()
    out = torch.zeros(len(words), emb.shape[1])
    for i, w in enumerate(words):
        if i == 0:
            continue
        ids = tok(w, add_special_tokens=False)["input_ids"] if w != UNK else [tok.unk_token_id]
        ids = ids or [tok.unk_token_id]
        out[i] = emb[ids].mean(0)
    return out


class WordEncoder(nn.Module):
    """Text module of the word-level baselines: (T, t_cls) like the transformer's TextEncoder.
    T = [word embedding; char-CNN] per word; t_cls = masked mean of T (unused without CFF)."""

    def __init__(self, n_words: int, word_dim: int, n_chars: int = 0, char_dim: int = 30,
                 char_filters: int = 50, dropout: float = 0.3, word_vectors: torch.Tensor | None = None):
        super().__init__()
        self.word = nn.Embedding(n_words, word_dim, padding_idx=0)
        if word_vectors is not None:
            self.word.weight.data.copy_(word_vectors)
        self.use_chars = n_chars > 0
        if self.use_chars:
            self.char = nn.Embedding(n_chars, char_dim, padding_idx=0)
            self.conv = nn.Conv1d(char_dim, char_filters, kernel_size=3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.hidden_size = word_dim + (char_filters if self.use_chars else 0)

    def forward(self, word_ids, word_mask, char_ids=None):
        x = self.word(word_ids)
        if self.use_chars:
            B, W, C = char_ids.shape
            c = self.char(char_ids.view(B * W, C)).transpose(1, 2)          # (BW, dc, C)
            c = self.conv(self.drop(c))
            c = c.masked_fill((char_ids.view(B * W, 1, C) == 0), -1e4).max(-1).values
            c = torch.where(word_mask.view(B * W, 1), c, torch.zeros_like(c))
            x = torch.cat([x, c.view(B, W, -1)], dim=-1)
        m = word_mask.unsqueeze(-1).to(x.dtype)
        t_cls = (x * m).sum(1) / m.sum(1).clamp(min=1)
        return x, t_cls
