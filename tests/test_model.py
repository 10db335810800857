"""CFF model: cross-attention, gate (Eq. 4), mix (Eq. 5), BiLSTM-CRF (Eq. 6–8), joint loss (Eq. 9),
ablation configs and the word-level baselines. Tiny random encoders only."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from tvolib.config import ModelConfig
from tvolib.data import LABELS

D_IMG, D_CAP = 12, 10


def tiny_encoder_config(hidden: int = 32):
    from transformers import BertConfig
    return BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=2 * hidden, max_position_embeddings=512)


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(num_heads=4, lstm_hidden=8, latent_dim=6, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


def fake_visual(B: int, seed: int = 0) -> dict:
    """A ``VisualFeatures.batch``-shaped dict (what the VFO optimizer reads)."""
    from tvolib.vfo.fusion import GLOB_CAPTION, GLOB_IMAGE, GLOB_NONE, OBJ_IMAGE, OBJ_NONE, OBJ_PHRASES
    g = torch.Generator().manual_seed(seed)
    gk = torch.tensor([(GLOB_IMAGE, GLOB_CAPTION, GLOB_NONE)[i % 3] for i in range(B)])
    ok = torch.tensor([(OBJ_IMAGE, OBJ_PHRASES, OBJ_NONE)[i % 3] for i in range(B)])
    return {"glob_image": torch.randn(B, D_IMG, generator=g), "glob_caption": torch.randn(B, D_CAP, generator=g),
            "glob_kind": gk, "glob_mask": gk != GLOB_NONE, "obj_image": torch.randn(B, D_IMG, generator=g),
            "obj_text": torch.randn(B, D_CAP, generator=g), "obj_kind": ok, "obj_mask": ok != OBJ_NONE}


def make_batch(B: int = 3, W: int = 5, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = [W] + [max(1, W - i - 1) for i in range(B - 1)]
    L = W + 8
    input_ids = torch.randint(1000, 2000, (B, L), generator=g)
    attention_mask = torch.ones(B, L, dtype=torch.long)
    word_index = torch.zeros(B, W, dtype=torch.long)
    word_mask = torch.zeros(B, W, dtype=torch.bool)
    for b, n in enumerate(lengths):
        word_index[b, :n] = torch.arange(1, n + 1)
        word_mask[b, :n] = True
        attention_mask[b, n + 2 + b:] = 0
    labels = torch.randint(0, len(LABELS), (B, W), generator=g) * word_mask
    return {"input_ids": input_ids, "attention_mask": attention_mask, "word_index": word_index,
            "word_mask": word_mask, "labels": labels, "visual": fake_visual(B, seed)}


def build(cfg: ModelConfig):
    from tvolib.assemble import build_model
    torch.manual_seed(0)
    return build_model(cfg, {"feats_dims": {"image": D_IMG, "caption": D_CAP}},
                       encoder_config=tiny_encoder_config())


def test_gate_and_mix_follow_eq4_eq5():
    from tvolib.model import CrossModalFusion
    cfg = tiny_cfg()
    torch.manual_seed(0)
    cff = CrossModalFusion(16, D_IMG, cfg).eval()
    T, t_cls, V = torch.randn(2, 4, 16), torch.randn(2, 16), torch.randn(2, D_IMG)
    R, g, vis = cff(T, t_cls, V)
    # recompute C and g by hand from the layers
    mem = torch.cat([cff.null.expand(2, 1, 16), cff.v_proj(V).unsqueeze(1)], 1)
    x = torch.cat([t_cls.unsqueeze(1), T], 1)
    for layer in cff.layers:
        x, _ = layer(x, mem)
    g_ref = torch.sigmoid(cff.w_g2(cff.w_g1(cff.gate_ln(x[:, 0] + t_cls)))).view(2)     # Eq. 4
    assert torch.allclose(g, g_ref, atol=1e-6)
    assert ((g > 0) & (g < 1)).all()
    R_ref = g_ref.view(2, 1, 1) * T + (1 - g_ref.view(2, 1, 1)) * x[:, 1:]             # Eq. 5
    assert torch.allclose(R, R_ref, atol=1e-6)
    # with the null slot each token's share of the visual slot lies strictly between 0 and 1
    assert vis.shape == (2, 5) and ((vis > 0) & (vis < 1)).all()


def test_gate_init_and_override():
    """gate_init sets g of Eq. 4 at initialisation; gate_override (the branch probe) replaces it."""
    from tvolib.model import CrossModalFusion
    # T comes out of Eq. 1's LN: normalised rows
    T, t_cls, V = torch.nn.functional.layer_norm(torch.randn(3, 4, 16), (16,)), torch.randn(3, 16), torch.randn(3, D_IMG)
    torch.manual_seed(0)
    g_half = CrossModalFusion(16, D_IMG, tiny_cfg(gate_init=0.5)).eval()(T, t_cls, V)[1]
    torch.manual_seed(0)
    cff = CrossModalFusion(16, D_IMG, tiny_cfg(gate_init=0.95)).eval()
    R, g, _ = cff(T, t_cls, V)
    # same weights, bias moved from 0 to logit(0.95): the logit shifts by exactly that much
    shift = torch.logit(g) - torch.logit(g_half)
    assert torch.allclose(shift, torch.full_like(shift, float(torch.logit(torch.tensor(0.95)))), atol=1e-4)
    assert (g > 0.8).all() and (g_half < 0.8).all()
    try:
        cff.gate_override = 1.0
        assert torch.allclose(cff(T, t_cls, V)[0], T)            # Eq. 5 with g = 1: R = T
        cff.gate_override = 0.0
        assert torch.allclose(cff(T, t_cls, V)[0], T, atol=1e-4)  # a fresh pre-norm C is T itself
        post = CrossModalFusion(16, D_IMG, tiny_cfg(gate_init=0.95, cross_norm="post")).eval()
        post.gate_override = 0.0
        R0 = post(T, t_cls, V)[0]
        assert not torch.allclose(R0, T) and not torch.allclose(R0, R)
    finally:
        cff.gate_override = None
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="gate_init"):
            CrossModalFusion(16, D_IMG, tiny_cfg(gate_init=bad))


@pytest.mark.parametrize("fusion_fp32", [False, True])
def test_a_saturated_gate_keeps_its_gradient_under_bf16_only_with_fusion_fp32(fusion_fp32):
    """Under bf16 autocast a gate logit of 8 (g = 0.99966) is exactly 1.0 in bf16: the gate and the
    cross-modal branch get no gradient at all. With ``fusion_fp32`` g stays below 1 and both get one;
    outside autocast the option changes nothing."""
    from tvolib.model import CrossModalFusion
    T, t_cls, V = torch.randn(2, 4, 16), torch.randn(2, 16), torch.randn(2, D_IMG)
    torch.manual_seed(0)
    cff = CrossModalFusion(16, D_IMG, tiny_cfg(gate_init=0.5, fusion_fp32=fusion_fp32))
    with torch.no_grad():
        cff.w_g2.weight.zero_()
        cff.w_g2.bias.fill_(8.0)
        for layer in cff.layers:            # a non-zero visual update, so that C ≠ T
            for p in layer.parameters():
                p.add_(0.1 * torch.randn_like(p))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        R, g, _ = cff(T, t_cls, V)
    R.float().square().sum().backward()
    cross_grad = sum(p.grad.abs().sum() for layer in cff.layers for p in layer.parameters() if p.grad is not None)
    if fusion_fp32:
        assert R.dtype == torch.float32 and (g < 1).all()
        assert cff.w_g2.bias.grad.abs() > 0 and cross_grad > 0
    else:
        assert (g == 1).all()
        assert cff.w_g2.bias.grad.abs() == 0 and cross_grad == 0
    cff.zero_grad()
    torch.manual_seed(0)
    other = CrossModalFusion(16, D_IMG, tiny_cfg(gate_init=0.5, fusion_fp32=not fusion_fp32))
    other.load_state_dict(cff.state_dict())
    assert torch.equal(cff(T, t_cls, V)[0], other(T, t_cls, V)[0])     # fp32: the same computation


def test_pre_norm_cross_attention_starts_as_the_identity_and_learns_from_v():
    """cross_norm="pre": C = LN(T + ΔC) with ΔC = 0 at initialisation (zeroed output projections), so
    Eq. 5 gives R = T whatever g (T leaves Eq. 1 normalised); after two optimizer steps C depends on V."""
    from tvolib.model import CrossModalFusion
    torch.manual_seed(0)
    cff = CrossModalFusion(16, D_IMG, tiny_cfg()).train()
    T = torch.nn.functional.layer_norm(torch.randn(3, 4, 16), (16,))    # Eq. 1 ends with an LN
    t_cls, V = torch.randn(3, 16), torch.randn(3, D_IMG)
    R, g, _ = cff(T, t_cls, V)
    assert torch.allclose(R, T, atol=1e-4) and torch.allclose(g, torch.full_like(g, 0.5), atol=0.2)
    target = torch.randn(3, 4, 16)
    opt = torch.optim.SGD(cff.parameters(), lr=0.1)
    for _ in range(2):          # step 1 moves the output projections, step 2 the rest
        loss = (cff(T, t_cls, V)[0] - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    cff.eval()
    R1 = cff(T, t_cls, V)[0]
    R2 = cff(T, t_cls, V.roll(1, 0))[0]
    assert not torch.allclose(R1, T) and not torch.allclose(R1, R2)    # the image now changes R
    with pytest.raises(ValueError, match="cross_norm"):
        CrossModalFusion(16, D_IMG, tiny_cfg(cross_norm="middle"))


def test_single_key_reading_is_degenerate():
    """cross_memory="fused": softmax over one key, every token gets the whole visual vector."""
    from tvolib.model import CrossModalFusion
    cff = CrossModalFusion(16, D_IMG, tiny_cfg(cross_memory="fused")).eval()
    _, _, vis = cff(torch.randn(2, 4, 16), torch.randn(2, 16), torch.randn(2, D_IMG))
    assert torch.allclose(vis, torch.ones_like(vis))
    with pytest.raises(ValueError, match="cross_memory"):
        CrossModalFusion(16, D_IMG, tiny_cfg(cross_memory="patches"))


def test_full_model_loss_is_eq9_and_all_parts_get_gradients():
    model = build(tiny_cfg(vae_weight=0.5)).train()
    out = model(make_batch())
    assert torch.isfinite(out["loss"])
    assert torch.allclose(out["loss"], out["l_ner"] + 0.5 * out["l_vae"])            # Eq. 9
    assert out["l_vae"] > 0 and out["l_ner"] > 0
    out["loss"].backward()
    for part in ("text", "vfo", "cff", "lstm", "emit", "crf"):
        grads = [p.grad for p in getattr(model, part).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), part
    w = out["fusion_weights"]
    assert torch.allclose(w.sum(-1), torch.ones(len(w)), atol=1e-5)


def test_crf_nll_is_eq8_mean_over_tweets():
    model = build(tiny_cfg(visual="none")).eval()
    batch = make_batch()
    out = model(batch)
    per = [-model.crf(out["emissions"][i:i + 1], batch["labels"][i:i + 1], mask=out["word_mask"][i:i + 1])
           for i in range(3)]
    assert torch.allclose(out["l_ner"], torch.stack(per).mean(), atol=1e-4)


def test_decode_gives_one_label_per_word_and_ignores_padding():
    model = build(tiny_cfg()).eval()
    batch = make_batch()
    ids = model.decode(batch)
    assert [len(s) for s in ids] == batch["word_mask"].sum(1).tolist()
    # padding words do not change the Viterbi path of a tweet
    one = {k: (v[:1] if torch.is_tensor(v) else {kk: vv[:1] for kk, vv in v.items()}) for k, v in batch.items()}
    assert model.decode(one)[0] == ids[0]


@pytest.mark.parametrize("name", list(ModelConfig.ABLATIONS))
def test_every_ablation_is_a_config(name):
    cfg = tiny_cfg().ablation(name)
    model = build(cfg)
    out = model(make_batch())
    assert torch.isfinite(out["loss"])
    if cfg.visual == "none":
        assert model.vfo is None and model.cff is None and "gate" not in out
    else:
        assert out["gate"].shape == (3,)
    if cfg.visual == "global" or not cfg.use_vae:
        assert float(out["l_vae"]) == 0.0


def test_text_only_has_no_visual_parameters():
    full, text = build(tiny_cfg()), build(tiny_cfg(visual="none"))
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(full) > n(text)
    assert not any(k.startswith(("vfo.", "cff.")) for k in text.state_dict())


def test_learning_rate_groups_separate_encoder_and_new_layers():
    from tvolib.config import TrainConfig
    from tvolib.train import param_groups
    model = build(tiny_cfg())
    groups = param_groups(model, TrainConfig(lr=1e-5, head_lr=1e-3))
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert by_id[id(model.crf.transitions)]["lr"] == 1e-3
    assert by_id[id(model.lstm.weight_ih_l0)]["lr"] == 1e-3
    assert by_id[id(model.text.attn.qkv.weight)]["lr"] == 1e-3          # Eq. 1 is a new layer
    assert by_id[id(model.cff.v_proj[1].weight)]["lr"] == 1e-3
    assert by_id[id(model.cff.w_g1.weight)]["lr"] == 1e-5                # the gate (Eq. 4) trains slowly
    emb = model.text.backbone.embeddings.word_embeddings.weight
    assert by_id[id(emb)]["lr"] == 1e-5 and by_id[id(emb)]["weight_decay"] > 0
    assert len(by_id) == sum(1 for p in model.parameters() if p.requires_grad)


def test_word_baselines_and_char_cnn():
    from tvolib.baselines import Vocab, build_vocab, collate_words
    from tvolib.assemble import build_model
    sents = [["Obama", "visits", "Paris"], ["hello", "NBA"]]
    vocab = build_vocab(sents)
    v = Vocab(vocab)
    assert v.encode(["obama", "zzz"])["word_ids"] == [v.w2i["obama"], 1]     # lower-cased, unk
    batch = collate_words([dict(labels=[0] * len(s), **v.encode(s)) for s in sents])
    batch["labels"] = torch.zeros_like(batch["word_ids"])
    for arch, width in (("bilstm_crf", 20), ("cnn_bilstm_crf", 20 + 7)):
        cfg = tiny_cfg(arch=arch, visual="none", word_init="random", word_dim=20, char_filters=7)
        model = build_model(cfg, {"vocab": vocab})
        assert model.text.hidden_size == width
        out = model(batch)
        assert torch.isfinite(out["loss"])
        assert [len(s) for s in model.decode(batch)] == [3, 2]
    with pytest.raises(ValueError, match="text-only"):
        build_model(tiny_cfg(arch="bilstm_crf", word_init="random"), {"vocab": vocab})


def test_encoder_initialised_word_vectors_are_mean_of_pieces(tmp_path):
    from transformers import AutoModel, AutoTokenizer
    from tvolib.baselines import encoder_word_vectors
    from tvolib.weights import resolve_text_encoder
    tok = AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
    torch.manual_seed(0)
    AutoModel.from_config(tiny_encoder_config(16)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    words = ["<pad>", "<unk>", "paris", "jaykenminaj"]
    vec = encoder_word_vectors(words, str(tmp_path))
    emb = AutoModel.from_pretrained(tmp_path).get_input_embeddings().weight.detach()
    pieces = tok("jaykenminaj", add_special_tokens=False)["input_ids"]
    assert len(pieces) > 1
    assert torch.allclose(vec[3], emb[pieces].mean(0))
    assert vec[0].abs().sum() == 0
