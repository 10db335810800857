"""Eq. 2 (VAE) and Eq. 3 (adaptive fusion): closed-form KL, weights, masks, gradients."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from tvolib.config import ModelConfig
from tvolib.vfo.fusion import (GLOB_CAPTION, GLOB_IMAGE, GLOB_NONE, OBJ_IMAGE, OBJ_NONE, OBJ_PHRASES,
                               AdaptiveFusion, TextGuidedVAE, VisualFeatureOptimizer, kl_standard_normal)

D_T, D_IMG, D_CAP, B, W = 24, 20, 12, 6, 5


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    T = torch.randn(B, W, D_T, generator=g)
    word_mask = torch.ones(B, W, dtype=torch.bool)
    word_mask[0, 3:] = False
    T[~word_mask] = 0
    t_cls = torch.randn(B, D_T, generator=g)
    visual = {"glob_image": torch.randn(B, D_IMG, generator=g), "glob_caption": torch.randn(B, D_CAP, generator=g),
              "glob_kind": torch.tensor([GLOB_IMAGE, GLOB_IMAGE, GLOB_CAPTION, GLOB_CAPTION, GLOB_NONE, GLOB_IMAGE]),
              "obj_image": torch.randn(B, D_IMG, generator=g), "obj_text": torch.randn(B, D_CAP, generator=g),
              "obj_kind": torch.tensor([OBJ_IMAGE, OBJ_NONE, OBJ_PHRASES, OBJ_NONE, OBJ_NONE, OBJ_IMAGE])}
    return T, t_cls, word_mask, visual


def vfo(**kw):
    torch.manual_seed(0)
    cfg = dataclasses.replace(ModelConfig(latent_dim=8, dropout=0.0), **kw)
    return VisualFeatureOptimizer(cfg, D_T, {"image": D_IMG, "caption": D_CAP})


def test_kl_matches_closed_form_and_torch():
    mu, logvar = torch.randn(7, 5), torch.randn(7, 5)
    ours = kl_standard_normal(mu, logvar)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(kl_standard_normal(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def test_vae_loss_is_reconstruction_plus_kl():
    torch.manual_seed(0)
    vae = TextGuidedVAE(D_T, 8, D_IMG).eval()
    T, _, wm, _ = batch()
    v_glob = torch.randn(B, D_IMG)
    gm = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    v_t, loss, (mu, logvar) = vae(T, wm, v_glob, gm)
    assert v_t.shape == (B, D_IMG) and mu.shape == (B, 8)
    t = (T * wm.unsqueeze(-1)).sum(1) / wm.sum(1, keepdim=True)
    assert torch.allclose(mu, vae.w_mu(t), atol=1e-6)                 # μ = T W_μ (pooled)
    assert torch.allclose(v_t, vae.w_z(mu), atol=1e-6)                # eval: z = μ
    rec = ((v_glob - v_t) ** 2).sum(-1)[gm].mean()
    kl = kl_standard_normal(mu, logvar).mean()
    assert torch.allclose(loss, rec + kl, atol=1e-4)
    vae.train()
    a, _, _ = vae(T, wm, v_glob, gm)
    b, _, _ = vae(T, wm, v_glob, gm)
    assert not torch.allclose(a, b)                                   # reparameterized sampling


def test_fusion_weights_sum_to_one_and_masks():
    torch.manual_seed(0)
    f = AdaptiveFusion(D_IMG, D_T, dropout=0.0)
    feats = [torch.randn(B, D_IMG) for _ in range(3)]
    masks = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    V, w = f(feats, masks, torch.randn(B, D_T))
    assert w.shape == (B, 3) and not torch.isnan(w).any() and not torch.isnan(V).any()
    assert torch.allclose(w[:5].sum(-1), torch.ones(5), atol=1e-6)
    assert (w[~masks] == 0).all() and (w[masks] > 0).all()
    assert torch.allclose(V[5], torch.zeros(D_IMG))                   # nothing present → 0
    ref = sum(w[:, i:i + 1] * feats[i] for i in range(3))
    assert torch.allclose(V, ref, atol=1e-6)                          # Eq. 3


def test_optimizer_shapes_weights_and_every_parameter_gets_gradient():
    m = vfo()
    m.train()
    T, t_cls, wm, visual = batch()
    T.requires_grad_(True)
    V, l_vae, w = m(T, t_cls, wm, visual)
    assert V.shape == (B, D_IMG) and m.d_v == D_IMG and l_vae.ndim == 0 and l_vae > 0
    assert torch.allclose(w.sum(-1), torch.ones(B), atol=1e-6)        # v_t always present
    assert (w[visual["obj_kind"] == OBJ_NONE, 2] == 0).all()
    assert (w[visual["glob_kind"] == GLOB_NONE, 1] == 0).all()
    (V.pow(2).sum() + l_vae).backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, no_grad
    assert T.grad is not None and T.grad.abs().sum() > 0


def test_vae_target_is_detached_from_caption_projection():
    m = vfo()
    T, t_cls, wm, visual = batch()
    _, l_vae, _ = m(T, t_cls, wm, visual)
    l_vae.backward()
    assert m.caption_proj.weight.grad is None or m.caption_proj.weight.grad.abs().sum() == 0
    assert m.vae.w_z.weight.grad.abs().sum() > 0


def test_caption_rows_use_projection_and_image_rows_the_image():
    m = vfo(visual="global")
    T, t_cls, wm, visual = batch()
    V, l_vae, w = m(T, t_cls, wm, visual)
    gk = visual["glob_kind"]
    assert torch.allclose(V[gk == GLOB_IMAGE], visual["glob_image"][gk == GLOB_IMAGE])
    assert torch.allclose(V[gk == GLOB_CAPTION], m.caption_proj(visual["glob_caption"][gk == GLOB_CAPTION]))
    assert (V[gk == GLOB_NONE] == 0).all()
    assert float(l_vae) == 0 and (w == torch.tensor([0.0, 1.0, 0.0])).all()


@pytest.mark.parametrize("kw,zero_col", [({"use_vae": False}, 0), ({"object_source": "none"}, 2)])
def test_ablations_drop_their_term(kw, zero_col):
    m = vfo(**kw)
    T, t_cls, wm, visual = batch()
    V, l_vae, w = m(T, t_cls, wm, visual)
    assert (w[:, zero_col] == 0).all() and not torch.isnan(w).any()
    present = w.sum(-1) > 0
    assert torch.allclose(w[present].sum(-1), torch.ones(int(present.sum())), atol=1e-6)
    if "use_vae" in kw:
        assert float(l_vae) == 0 and m.vae is None
