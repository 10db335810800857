"""TVOMNER's Cross-modal Feature Fusion (section 4.3) and the whole tagger.

    batch ──TextEncoder (TFO, Eq. 1)──> T (B, W, d), t_cls (B, d)
          ──VisualFeatureOptimizer (VFO, Eq. 2–3)──> V (B, d_v), L_VAE
    [t_cls; T] ──L × CrossAttentionLayer (T queries V, + LN + FFN)──> C = [c_cls; c_1..c_n]
    g = sigmoid((LN(c_cls + t_cls) W1) W2)                                   # Eq. 4
    R = g ⊙ T + (1 − g) ⊙ C                                                  # Eq. 5
    e = BiLSTM(R)                                                            # Eq. 6
    p(y | e) = CRF(E e)                                                      # Eq. 7, L_NER Eq. 8
    L = L_NER + λ L_VAE                                                      # Eq. 9

One class covers the full model, every ablation of Table 2 (``ModelConfig`` switches only) and the
text-only baselines of Table 1:

* ``visual == "none"``: no VFO and no CFF, R = T: the encoder-BiLSTM-CRF baseline;
* ``arch == "bilstm_crf"`` / ``"cnn_bilstm_crf"``: the text module is a word-embedding (plus
  character-CNN) encoder from ``tvolib.baselines`` instead of the transformer; no visual part.

Reading of the cross-attention (section 4.3). V is one vector per tweet, so attention over V alone
is degenerate: softmax over a single key is 1 and every token receives the same W_o W_v V whatever
its query. We keep the paper's structure (text queries, visual keys/values, residual + LN, FFN +
residual + LN, L layers) and give the softmax a second, learned "null" key/value slot
(``ModelConfig.cross_memory = "fused+null"``, the default): each token decides how much of the
visual vector it takes (an irrelevant image can be ignored token by token, on top of the gate of
Eq. 4). ``cross_memory = "fused"`` is the literal single-key reading.

Why C starts as T (``ModelConfig.cross_norm = "pre"``, the default). With post-norm layers
(``"post"``, LN(x + Attn), LN(x + FFN)) a fresh layer maps T to a random-looking C. Eq. 5 then mixes
a useful T with a useless C; the BiLSTM learns to read T, the gate g of Eq. 4 moves towards 1, and
the gradient that reaches the cross-attention is scaled by (1 − g), so C never becomes useful and
the gate closes for good: on the visual-probe benchmark (``tvolib.sample.probe``, where only the
image tells the type of a third of the entities) the trained gate sat at 0.999, forcing g = 0 scored
F1 0, and giving every tweet another tweet's image changed nothing, whatever the initial gate. With
pre-norm layers whose output projections start at zero, C = T + ΔC with ΔC = 0 at the start, so
R = T + (1 − g) ΔC: T always reaches R whole, no branch is worse than the other at the start, the
gate only scales the visual update, and g = 0 still leaves a working tagger. (A final LN over the
stack, C = LN(T + ΔC), brings the failure back: C no longer carries T exactly, and on the probe the
gate shut at 0.994 with shuffle ΔF1 0.00.) Adam moves the zero-started output projections by about
the learning rate per step, so ΔC grows fast at a high ``head_lr``: at 3e-3 on the 80-tweet sample it
swamped T and nothing was learned; 1e-3, the default, does not. The paper's structure is kept (text
queries, visual keys/values, LN and FFN with residuals, L layers, Eq. 4–5); only the place of the LN
and the initialisation differ. ``ModelConfig.gate_init`` (default 0.5, neutral) sets the gate's
starting value through the bias of W_g^2.

The gate under bf16 autocast (``TrainConfig.precision = "bf16"``). A gate above about 0.998 (logit
6.2) rounds to exactly 1.0 in bf16; g(1 − g), the gate's own gradient, and (1 − g), C's, are then
exactly zero, so nothing reopens it (in fp32 both stay small but non-zero, and Adam's steps do not
shrink with the gradient). ``ModelConfig.fusion_fp32`` computes Eq. 4–5 in fp32; it is off by
default, so that the committed bf16 runs (MPNet-base, whose gates end at 0.996–1.000) re-run as
they ran.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
from torchcrf import CRF
from transformers import PreTrainedModel

from .config import ModelConfig

TEXT_KEYS = ("input_ids", "attention_mask", "word_index", "word_mask")   # transformer inputs
WORD_KEYS = ("word_ids", "word_mask", "char_ids")                        # word-level baselines


class CrossAttentionLayer(nn.Module):
    """One layer of section 4.3: multi-head cross-attention (text queries, visual keys/values) and an
    FFN, each with a residual connection and LN.

    ``norm="pre"`` (default): x + Attn(LN(x), V), then + FFN(LN(.)), with the output projections of
    both sub-layers initialised to zero, so that a fresh layer is the identity and C = T at the start.
    ``norm="post"``: LN(x + Attn(x, V)), then LN(. + FFN(.)) (the Transformer's post-norm), where a
    fresh layer maps T to a random-looking C."""

    def __init__(self, d: int, num_heads: int, dropout: float, norm: str = "pre"):
        super().__init__()
        if norm not in ("pre", "post"):
            raise ValueError(f"cross_norm must be 'pre' or 'post', got {norm!r}")
        self.pre = norm == "pre"
        self.attn = nn.MultiheadAttention(d, num_heads, dropout=dropout, batch_first=True)
        self.ln1 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.ln2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        if self.pre:
            for lin in (self.attn.out_proj, self.ffn[-1]):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pre:
            q = self.ln1(x)
            a, w = self.attn(q, memory, memory, need_weights=True)   # Q = text, K = V = visual
            x = x + self.drop(a)
            return x + self.drop(self.ffn(self.ln2(x))), w
        a, w = self.attn(x, memory, memory, need_weights=True)
        x = self.ln1(x + self.drop(a))
        x = self.ln2(x + self.drop(self.ffn(x)))
        return x, w


class CrossModalFusion(nn.Module):
    """Section 4.3: L cross-attention layers giving C, the gate (Eq. 4) and the mix (Eq. 5)."""

    #: inference-time probe (``benchmarks/branch_usage.py``): a float replaces g of Eq. 4 for every
    #: tweet (1.0 = text branch T only, 0.0 = cross-modal branch C only); None = the learned gate
    gate_override: float | None = None

    def __init__(self, d: int, d_v: int, cfg: ModelConfig):
        super().__init__()
        if d % cfg.num_heads:
            raise ValueError(f"text width {d} is not divisible by num_heads={cfg.num_heads}")
        if cfg.cross_memory not in ("fused+null", "fused"):
            raise ValueError(f"cross_memory must be 'fused+null' or 'fused', got {cfg.cross_memory!r}")
        # V into the text width (d_v may differ from d). V's scale depends on the image encoder
        # (EfficientNet features, projected captions...): LN first, so that the attention output
        # cannot swamp the residual text stream of every token.
        self.v_proj = nn.Sequential(nn.LayerNorm(d_v), nn.Linear(d_v, d))
        self.null = nn.Parameter(torch.zeros(1, 1, d)) if cfg.cross_memory == "fused+null" else None
        self.layers = nn.ModuleList(CrossAttentionLayer(d, cfg.num_heads, cfg.dropout, cfg.cross_norm)
                                    for _ in range(cfg.cross_layers))
        # Eq. 4: W_g^1 in R^{d×d}, W_g^2 in R^{d×1} (no non-linearity in between, as written)
        self.gate_ln = nn.LayerNorm(d)
        self.w_g1 = nn.Linear(d, d)
        self.w_g2 = nn.Linear(d, 1)
        if not 0.0 < cfg.gate_init < 1.0:
            raise ValueError(f"gate_init must lie strictly between 0 and 1, got {cfg.gate_init}")
        self.fusion_fp32 = cfg.fusion_fp32
        with torch.no_grad():   # the gate starts near gate_init (bias = its logit)
            self.w_g2.bias.fill_(math.log(cfg.gate_init / (1.0 - cfg.gate_init)))

    def forward(self, T: torch.Tensor, t_cls: torch.Tensor, V: torch.Tensor):
        B, _, d = T.shape
        memory = self.v_proj(V).unsqueeze(1)                            # (B, 1, d)
        if self.null is not None:
            memory = torch.cat([self.null.expand(B, 1, d).to(memory.dtype), memory], dim=1)
        x = torch.cat([t_cls.unsqueeze(1), T], dim=1)                   # queries [t_cls; t_1..t_n]
        attn = None
        for layer in self.layers:
            x, attn = layer(x, memory)
        c_cls, C = x[:, 0], x[:, 1:]                                    # C = {c_cls, c_1, ..., c_n}
        # fusion_fp32: out of bf16 autocast, where a gate above ~0.998 rounds to 1.0 and g(1 − g),
        # the gate's own gradient, and (1 − g), C's, are both exactly zero
        with torch.autocast(T.device.type, enabled=False) if self.fusion_fp32 else contextlib.nullcontext():
            if self.fusion_fp32:
                T, t_cls, C, c_cls = T.float(), t_cls.float(), C.float(), c_cls.float()
            g = torch.sigmoid(self.w_g2(self.w_g1(self.gate_ln(c_cls + t_cls))))   # Eq. 4, (B, 1)
            if self.gate_override is not None:
                g = torch.full_like(g, float(self.gate_override))
            g = g.unsqueeze(-1)                                         # (B, 1, 1)
            R = g * T + (1 - g) * C                                     # Eq. 5
        # share of attention each token gives the visual slot (1.0 with cross_memory="fused")
        visual_attn = attn[..., -1] if attn is not None else None
        return R, g.view(B), visual_attn


class TVOMNER(nn.Module):
    """The tagger. ``text`` maps the batch to (T, t_cls); ``vfo`` maps (T, t_cls, word_mask,
    visual) to (V, L_VAE, ω); both are built by ``build_model``."""

    def __init__(self, cfg: ModelConfig, num_labels: int, text: nn.Module, vfo: nn.Module | None = None,
                 text_keys: tuple[str, ...] = ("input_ids", "attention_mask", "word_index", "word_mask")):
        super().__init__()
        self.cfg = cfg
        self.text = text
        self.text_keys = text_keys
        d = text.hidden_size
        self.use_visual = cfg.visual != "none" and vfo is not None
        if cfg.visual != "none" and vfo is None:
            raise ValueError(f"visual={cfg.visual!r} needs a VisualFeatureOptimizer")
        self.vfo = vfo if self.use_visual else None
        self.cff = CrossModalFusion(d, vfo.d_v, cfg) if self.use_visual else None
        self.drop = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(d, cfg.lstm_hidden, batch_first=True, bidirectional=True)   # Eq. 6
        self.emit = nn.Linear(2 * cfg.lstm_hidden, num_labels)                          # E of Eq. 7
        self.crf = CRF(num_labels, batch_first=True)                                     # Eq. 7–8

    def text_features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, t_cls) of Eq. 1: the TFO input through the encoder and its self-attention + LN."""
        return self.text(**{k: batch[k] for k in self.text_keys})

    def emissions(self, batch: dict, text: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
        """``text``: this batch's ``text_features`` when already computed (in eval mode the branch probe
        runs the visual branch several ways over one T)."""
        word_mask = batch["word_mask"].bool()
        T, t_cls = text if text is not None else self.text_features(batch)
        out: dict = {}
        l_vae = T.new_zeros(())
        if self.use_visual:
            V, l_vae, weights = self.vfo(T, t_cls, word_mask, batch["visual"])
            R, g, vis_attn = self.cff(T, t_cls, V.to(T.dtype))
            out.update(gate=g, fusion_weights=weights, visual_attn=vis_attn)
        else:
            R = T
        R = self.drop(R)
        lengths = word_mask.sum(1).clamp(min=1).cpu()
        with torch.autocast(R.device.type, enabled=False):   # BiLSTM and CRF in fp32 under bf16 autocast
            packed = nn.utils.rnn.pack_padded_sequence(R.float(), lengths, batch_first=True, enforce_sorted=False)
            e, _ = self.lstm(packed)                                                  # Eq. 6
            e, _ = nn.utils.rnn.pad_packed_sequence(e, batch_first=True, total_length=R.shape[1])
            out["emissions"] = self.emit(self.drop(e)).float()                        # E e_i of Eq. 7
        out["l_vae"] = l_vae.float() if torch.is_tensor(l_vae) else torch.tensor(float(l_vae))
        out["word_mask"] = word_mask
        return out

    def forward(self, batch: dict) -> dict:
        """Loss (Eq. 9) when ``batch["labels"]`` is given, plus emissions and diagnostics."""
        out = self.emissions(batch)
        if "labels" in batch:
            mask = out["word_mask"]
            tags = batch["labels"].clamp(min=0) * mask
            l_ner = -self.crf(out["emissions"], tags, mask=mask, reduction="mean")   # Eq. 8
            out["l_ner"] = l_ner
            out["loss"] = l_ner + self.cfg.vae_weight * out["l_vae"].to(l_ner.device)   # Eq. 9
        return out

    @torch.no_grad()
    def decode(self, batch: dict) -> list[list[int]]:
        """Viterbi label ids per tweet (one per word)."""
        out = self.emissions(batch)
        return self.crf.decode(out["emissions"], mask=out["word_mask"])


def encoder_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters that belong to a pretrained transformer (lr = TrainConfig.lr);
    everything else (Eq. 1 attention, VFO, CFF, BiLSTM, CRF) is a new layer (head_lr)."""
    names = set()
    for mname, m in model.named_modules():
        if isinstance(m, PreTrainedModel):
            names |= {f"{mname}.{n}" if mname else n for n, _ in m.named_parameters()}
    return names
