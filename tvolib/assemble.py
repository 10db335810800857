"""Model assembly: the ``TVOMNER`` module (``tvolib.model``) for a ``ModelConfig``.

``arch="tvomner"``: the transformer text encoder with the attention of Eq. 1 (``tvolib.tfo.encoder``),
plus, unless ``visual="none"``, the VFO (``tvolib.vfo.fusion``) and the CFF of section 4.3.
``arch="bilstm_crf"`` / ``"cnn_bilstm_crf"``: the word-level encoders of ``tvolib.baselines``.
``meta`` carries what the inputs fixed (visual feature widths, the vocabulary) so that a checkpoint
rebuilds exactly the trained shapes without the training data.
"""
from __future__ import annotations

from transformers import AutoConfig

from .baselines import WordEncoder, encoder_word_vectors
from .config import ModelConfig
from .data import LABELS
from .model import TEXT_KEYS, TVOMNER, WORD_KEYS
from .tfo.encoder import TextEncoder
from .vfo.fusion import VisualFeatureOptimizer
from .weights import resolve_text_encoder


def build_model(model_cfg: ModelConfig, meta: dict, num_labels: int = len(LABELS), *,
                encoder_config=None, pretrained: bool = True) -> TVOMNER:
    """The model for a config. ``encoder_config`` (a transformers config) builds the text encoder
    with random weights (tests, checkpoints that bring their own weights)."""
    if model_cfg.arch == "tvomner":
        if encoder_config is not None:
            text = TextEncoder.from_config(encoder_config, num_heads=model_cfg.num_heads, dropout=model_cfg.dropout)
        else:
            text = TextEncoder(model_cfg.text_encoder, num_heads=model_cfg.num_heads, dropout=model_cfg.dropout)
        vfo = None
        if model_cfg.visual != "none":
            vfo = VisualFeatureOptimizer(model_cfg, text.hidden_size, meta["feats_dims"])
        return TVOMNER(model_cfg, num_labels, text, vfo, TEXT_KEYS)
    words, chars = meta["vocab"]["words"], meta["vocab"]["chars"]
    vectors, dim = None, meta.get("word_dim", model_cfg.word_dim)
    if model_cfg.word_init == "encoder" and (pretrained or "word_dim" not in meta):
        path = resolve_text_encoder(model_cfg.text_encoder)
        dim = AutoConfig.from_pretrained(path).hidden_size
        if pretrained:
            vectors = encoder_word_vectors(words, path)
    meta["word_dim"] = int(dim)          # checkpoints rebuild the table without the encoder
    text = WordEncoder(len(words), dim, len(chars) if model_cfg.arch == "cnn_bilstm_crf" else 0,
                       model_cfg.char_dim, model_cfg.char_filters, model_cfg.dropout, vectors)
    if model_cfg.visual != "none":
        raise ValueError(f"arch={model_cfg.arch!r} is text-only: set visual='none'")
    return TVOMNER(model_cfg, num_labels, text, None, WORD_KEYS)
