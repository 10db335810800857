"""Eq. 2 (text-guided VAE) and Eq. 3 (adaptive fusion) of section 4.2, and the module CFF uses.

Shapes (B tweets, W words, d_T text width, d_z latent, d_v visual width):

=======================  =====================================================================
``T``                    (B, W, d_T)   optimized text features (TFO, Eq. 1), zeros at padding
``word_mask``            (B, W) bool
``t_cls``                (B, d_T)
``v_t``                  (B, d_v)      text-guided visual feature (VAE decoder)
``v_glob``               (B, d_v)      global feature: the image's, or the caption's projected
``v_obj``                (B, d_v)      mean of the grounded objects' features
``V``                    (B, d_v)      Eq. 3
``weights``              (B, 3)        ω_t, ω_g, ω_o
=======================  =====================================================================

The visual space is the image encoder's (``d_v = feats_dims["image"]``: 1280 for EfficientNet-
Lite0, 768 for ViT-B/32). Captions (the stand-in for a missing image) and phrases (the stand-in for
objects of a missing image) are sentence embeddings (``feats_dims["caption"]``, 384 for MiniLM);
``caption_proj``, a learned linear layer trained by the NER loss, maps them into the visual space.
"""
from __future__ import annotations

import torch
from torch import nn

GLOB_NONE, GLOB_IMAGE, GLOB_CAPTION = 0, 1, 2     # values of visual["glob_kind"]
OBJ_NONE, OBJ_IMAGE, OBJ_PHRASES = 0, 1, 2        # values of visual["obj_kind"]


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) || N(0, I)) per row, summed over the latent dims (closed form)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


class TextGuidedVAE(nn.Module):
    """Eq. 2: μ = T W_μ, σ = T W_σ, z = μ + σ ⊙ ε, v_t = z W_z,
    L_VAE = ||v_glob − v_t||² + KL(q(z|T) || p(z)).

    Interpretations (the paper leaves them open):
    * T is a sequence; the encoder reads its masked mean over the tweet's words (B, d_T), so there
      is one latent per tweet, as v_glob is one vector per tweet.
    * ``W_σ`` gives log σ² (a linear map can be negative; σ = exp(½ · T W_σ)).
    * ε ~ N(0, I) in training; at evaluation z = μ (deterministic predictions).
    * v_glob is a **detached** target (the frozen encoder's feature, or the projected caption): the
      reconstruction trains the VAE towards the visual feature, not the visual feature towards it.
      Rows without a global feature (glob_mask False) have no reconstruction term.
    * ||·||² is summed over d_v and both terms are averaged over the batch.
    """

    def __init__(self, d_text: int, d_z: int, d_v: int):
        super().__init__()
        self.w_mu = nn.Linear(d_text, d_z, bias=False)        # W_μ ∈ R^{d_T×d_z}
        self.w_sigma = nn.Linear(d_text, d_z, bias=False)     # W_σ ∈ R^{d_T×d_z} (log σ²)
        self.w_z = nn.Linear(d_z, d_v, bias=False)            # W_z ∈ R^{d_z×d_v}

    def forward(self, T: torch.Tensor, word_mask: torch.Tensor, v_glob: torch.Tensor | None = None,
                glob_mask: torch.Tensor | None = None):
        """Returns ``v_t`` (B, d_v), the loss (scalar), and ``(mu, logvar)`` (B, d_z) each."""
        m = word_mask.unsqueeze(-1).to(T.dtype)
        t = (T * m).sum(1) / m.sum(1).clamp(min=1.0)         # (B, d_T)
        mu, logvar = self.w_mu(t), self.w_sigma(t).clamp(-10.0, 10.0)
        if self.training:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)     # reparameterization
        else:
            z = mu
        v_t = self.w_z(z)                                     # (B, d_v)
        kl = kl_standard_normal(mu, logvar).mean()
        if v_glob is None:
            return v_t, kl, (mu, logvar)
        rec = (v_glob.detach() - v_t).pow(2).sum(-1)          # ||v_glob − v_t||² per tweet
        if glob_mask is not None:
            gm = glob_mask.to(rec.dtype)
            rec = (rec * gm).sum() / gm.sum().clamp(min=1.0)
        else:
            rec = rec.mean()
        return v_t, rec + kl, (mu, logvar)                    # Eq. 2


class AdaptiveFusion(nn.Module):
    """Eq. 3: V = ω_t · v_t + ω_g · v_glob + ω_o · v_obj with ω_t + ω_g + ω_o = 1.

    Each feature has its own FFNN; s_i = sigmoid(FFNN_i([LN(v_i); t_cls])) and ω_i = s_i / Σ_j s_j
    over the features present (a masked feature gets ω_i = 0; its FFNN is not consulted). The
    scorer sees the tweet (t_cls) as well as the feature, so the weight of an image can depend on
    whether it is related to the text ("adaptively"), our reading of "feed them into different
    FFNNs and utilize the sigmoid function". A tweet with no feature at all gets ω = 0 and V = 0.
    """

    def __init__(self, d_v: int, d_text: int, n_terms: int = 3, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d_v) for _ in range(n_terms))
        self.ffnns = nn.ModuleList(
            nn.Sequential(nn.Linear(d_v + d_text, hidden), nn.GELU(), nn.Dropout(dropout),
                          nn.Linear(hidden, 1)) for _ in range(n_terms))

    def forward(self, feats: list[torch.Tensor], masks: torch.Tensor, t_cls: torch.Tensor):
        """``feats``: n_terms tensors (B, d_v); ``masks`` (B, n_terms) bool → V (B, d_v), ω (B, n)."""
        scores = torch.cat([torch.sigmoid(f(torch.cat([ln(v), t_cls], -1)))
                            for f, ln, v in zip(self.ffnns, self.norms, feats)], -1)   # (B, n)
        scores = scores * masks.to(scores.dtype)
        weights = scores / scores.sum(-1, keepdim=True).clamp(min=1e-6)
        V = sum(weights[:, i:i + 1] * v for i, v in enumerate(feats))                 # Eq. 3
        return V, weights


class VisualFeatureOptimizer(nn.Module):
    """The VFO module: v_t (Eq. 2), v_glob, v_obj → V (Eq. 3).

    ``feats_dims``: ``{"image": d_img, "caption": d_cap}`` (``VisualFeatures.dims``).
    ``visual`` (from ``VisualFeatures.batch``): ``glob_image`` (B, d_img), ``glob_caption``
    (B, d_cap), ``glob_kind`` (B,) long, ``obj_image`` (B, d_img), ``obj_text`` (B, d_cap),
    ``obj_kind`` (B,) long. Honours ``model_cfg.visual`` ("optimized" | "global": V = v_glob,
    l_vae = 0, ω = (0, 1, 0)), ``use_vae`` (False: Eq. 3 over v_glob and v_obj only, l_vae = 0) and
    ``object_source == "none"`` (v_obj always masked).
    """

    def __init__(self, model_cfg, d_text: int, feats_dims: dict):
        super().__init__()
        self.cfg = model_cfg
        self.d_v = int(feats_dims["image"])
        d_cap = int(feats_dims.get("caption") or 0)
        # caption / phrase space → visual space (learned, trained by the NER loss)
        self.caption_proj = nn.Linear(d_cap, self.d_v) if d_cap else None
        self.optimized = model_cfg.visual == "optimized"
        self.use_vae = self.optimized and model_cfg.use_vae
        self.use_obj = self.optimized and model_cfg.object_source != "none"
        self.vae = TextGuidedVAE(d_text, model_cfg.latent_dim, self.d_v) if self.use_vae else None
        self.fusion = AdaptiveFusion(self.d_v, d_text, dropout=model_cfg.dropout) if self.optimized else None

    def _mix(self, image, text, kind, k_image, k_text, like):
        """Pick the image feature or the projected text feature per tweet (zeros when none)."""
        B = kind.shape[0]
        out = like.new_zeros(B, self.d_v)
        is_img = (kind == k_image).unsqueeze(-1)
        if image is not None and image.numel():
            out = torch.where(is_img, image.to(like), out)
        if self.caption_proj is not None and text is not None and text.numel():
            is_txt = (kind == k_text).unsqueeze(-1)
            out = torch.where(is_txt, self.caption_proj(text.to(like)), out)
        present = (kind == k_image) | ((kind == k_text) & (self.caption_proj is not None))
        return out, present

    def global_feature(self, visual: dict, like: torch.Tensor):
        kind = visual["glob_kind"].to(like.device)
        return self._mix(visual.get("glob_image"), visual.get("glob_caption"), kind, GLOB_IMAGE,
                         GLOB_CAPTION, like)

    def object_feature(self, visual: dict, like: torch.Tensor):
        kind = visual["obj_kind"].to(like.device)
        return self._mix(visual.get("obj_image"), visual.get("obj_text"), kind, OBJ_IMAGE,
                         OBJ_PHRASES, like)

    def forward(self, T: torch.Tensor, t_cls: torch.Tensor, word_mask: torch.Tensor, visual: dict):
        B = T.shape[0]
        v_glob, glob_mask = self.global_feature(visual, t_cls)
        zero = T.new_zeros(())
        if not self.optimized:                                     # "w/o O-V": V = v_glob
            w = T.new_zeros(B, 3)
            w[:, 1] = 1.0
            return v_glob, zero, w
        if self.use_obj:
            v_obj, obj_mask = self.object_feature(visual, t_cls)
        else:
            v_obj, obj_mask = T.new_zeros(B, self.d_v), torch.zeros(B, dtype=torch.bool, device=T.device)
        if self.use_vae:
            v_t, l_vae, _ = self.vae(T, word_mask, v_glob, glob_mask)     # Eq. 2
            t_mask = torch.ones(B, dtype=torch.bool, device=T.device)
        else:                                                      # "w/o VAE"
            v_t, l_vae = T.new_zeros(B, self.d_v), zero
            t_mask = torch.zeros(B, dtype=torch.bool, device=T.device)
        masks = torch.stack([t_mask, glob_mask, obj_mask], -1)
        V, weights = self.fusion([v_t, v_glob, v_obj], masks, t_cls)      # Eq. 3
        return V, l_vae, weights
