"""Augmented input template, word alignment, truncation, and the text encoder (Eq. 1)."""
import pytest
import torch

from tvolib.weights import resolve_text_encoder
from tvolib.tfo.encoder import SelfAttentionLN, TextEncoder, build_inputs


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))


def tiny_config():
    from transformers import BertConfig
    return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128)


def test_template_and_alignment(tok):
    words = ["RT", "@StephCurry", "\u00a0", "scores", "in", "Oakland"]
    b = build_inputs(tok, [words, ["NBA"]], [[("Steph Curry", "a basketball player"), ("Oakland", "")], []], 64)
    ids = b["input_ids"][0].tolist()
    toks = tok.convert_ids_to_tokens(ids)
    assert toks[0] == tok.cls_token
    n_tweet = b["word_index"][0, -1].item() + 1            # "Oakland" is one piece
    assert toks[n_tweet] == tok.sep_token
    rest = tok.decode(ids[n_tweet + 1:])
    assert rest == "steph curry : a basketball player [SEP] oakland [SEP]"
    for w, pos in zip(words, b["word_index"][0].tolist()):   # first sub-token of every word
        pieces = tok.tokenize(w) or [tok.unk_token]
        assert toks[pos] == pieces[0]
    assert toks[b["word_index"][0, 2]] == tok.unk_token       # U+00A0 → [UNK]
    assert b["word_mask"].tolist() == [[True] * 6, [True] + [False] * 5]
    assert b["word_index"][1, 1:].tolist() == [0] * 5
    assert b["attention_mask"][1].sum().item() == 3            # [CLS] nba [SEP]: no augmentation


def test_truncation_cuts_knowledge_only(tok):
    words = "Steph Curry and LeBron James meet at the NBA finals tonight".split()
    long_k = "word " * 200
    augs = [[("Steph Curry", long_k), ("LeBron James", "short fact"), ("NBA", long_k)]]
    full = build_inputs(tok, [words], [[]], 512)["input_ids"][0].tolist()
    for L in (40, 25, 16):
        b = build_inputs(tok, [words], augs, L)
        ids = b["input_ids"][0].tolist()
        assert len(ids) <= L
        assert ids[:len(full)] == full                           # the tweet is whole
    b = build_inputs(tok, [words], augs, 40)
    text = tok.decode(b["input_ids"][0, len(full):].tolist())
    assert "short fact" in text and text.count("[SEP]") == 3     # water-filling spares the short one
    # budget too small for every name: trailing candidates are dropped, never the tweet
    b = build_inputs(tok, [words], augs, len(full) + 4)
    assert b["input_ids"][0, :len(full)].tolist() == full


def test_long_tweet(tok):
    words = ["word"] * 60
    with pytest.warns(UserWarning, match="kept whole"):
        b = build_inputs(tok, [words], [[("x", "y")]], 16)
    assert b["input_ids"].shape[1] == 62 and b["word_mask"].sum() == 60
    with pytest.raises(ValueError, match="limit"):
        build_inputs(tok, [["word"] * 600], [[]], 16)


def test_self_attention_ln_masks_padding():
    torch.manual_seed(0)
    m = SelfAttentionLN(16, 4, dropout=0.0).eval()
    x = torch.randn(1, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    y1 = m(x, mask)
    x2 = x.clone(); x2[0, 3:] = 100.0                        # change only the padding
    y2 = m(x2, mask)
    assert torch.allclose(y1[0, :3], y2[0, :3], atol=1e-5)
    assert y1.shape == x.shape
    assert torch.allclose(y1.mean(-1), torch.zeros(1, 5), atol=1e-5)   # LN output
    with pytest.raises(ValueError):
        SelfAttentionLN(10, 3)


def test_text_encoder_shapes_and_grad(tok):
    torch.manual_seed(0)
    enc = TextEncoder.from_config(tiny_config(), num_heads=8, dropout=0.0)
    assert enc.hidden_size == 32
    b = build_inputs(tok, [["Steph", "Curry", "wins"], ["Hi"]], [[("Steph Curry", "a player")], []], 32)
    T, cls = enc(**b)
    assert T.shape == (2, 3, 32) and cls.shape == (2, 32)
    assert torch.all(T[1, 1:] == 0) and torch.all(T[0].abs().sum(-1) > 0)
    (T.sum() + cls.sum()).backward()
    assert enc.backbone.embeddings.word_embeddings.weight.grad is not None
    assert enc.attn.qkv.weight.grad is not None


def test_byte_level_bpe_tokenizer():
    """RoBERTa-style tokenizers (prefix space, <s>/</s>) align words the same way."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast
    bt = ByteLevelBPETokenizer(add_prefix_space=True)
    bt.train_from_iterator(["Steph Curry scores in Oakland tonight", "the NBA is a league"] * 5, vocab_size=320,
                           special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bt._tokenizer, cls_token="<s>", sep_token="</s>",
                                  pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    words = ["Steph", "Curry", "scores"]
    b = build_inputs(tok, [words], [[("NBA", "a league")]], 64)
    ids = b["input_ids"][0].tolist()
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    bounds = b["word_index"][0].tolist() + [ids.index(tok.sep_token_id)]
    assert [tok.decode(ids[s:e]).strip() for s, e in zip(bounds, bounds[1:])] == words
