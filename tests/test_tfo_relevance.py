"""Sentence encoder (tiny random model) and the relevance filter (with a deterministic encoder)."""
import torch
import pytest

from tvolib.tfo.knowledge import Passage
from tvolib.tfo.relevance import RelevanceConfig, RelevanceFilter, SentenceEncoder, split_sentences


def tiny_config():
    from transformers import BertConfig
    return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128)


def test_sentence_encoder_shapes_and_norm():
    torch.manual_seed(0)
    enc = SentenceEncoder.from_config(tiny_config())
    x = enc.encode(["Steph Curry plays basketball", "", "a much longer sentence " * 3], batch_size=2)
    assert x.shape == (3, 32) and enc.dim == 32
    assert torch.allclose(x.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert enc.encode([]).shape == (0, 32)
    # batching does not change the embeddings (padding is masked out of the mean)
    assert torch.allclose(enc.encode(["short one"])[0], enc.encode(["short one", "a far longer sentence here"])[0], atol=1e-5)
    with pytest.raises(TypeError):
        enc.encode("not a list")


class KeywordEncoder:
    """Deterministic stand-in: one dimension per keyword, L2-normalised."""
    KEYS = ["basketball", "player", "city", "food", "music"]

    def __init__(self):
        from transformers import AutoTokenizer
        from tvolib.weights import resolve_text_encoder
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
        self.dim = len(self.KEYS) + 1
        self.calls = 0

    def encode(self, texts, batch_size=64):
        self.calls += 1
        v = torch.tensor([[float(k in t.lower()) for k in self.KEYS] + [0.05] for t in texts])
        return torch.nn.functional.normalize(v, dim=-1)


def test_filter_threshold_order_budget():
    enc = KeywordEncoder()
    f = RelevanceFilter(enc, RelevanceConfig(threshold=0.3, budget=64, max_sentences=3))
    ps = [Passage("Curry", "Curry is a spicy food. Curry is a basketball player. Curry also likes music and city life.", "local", 1.0)]
    kept = f.filter("the basketball player scored", ps)
    assert [k["text"] for k in kept] == ["Curry is a basketball player."]
    assert kept[0]["score"] > 0.9 and kept[0]["title"] == "Curry" and kept[0]["source"] == "local"
    # order: best first; the budget stops the second sentence
    ps2 = [{"title": "A", "text": "A basketball city. A basketball player in a city.", "source": "x"}]
    two = RelevanceFilter(enc, RelevanceConfig(threshold=0.1, budget=64)).filter("basketball player", ps2)
    assert [k["text"] for k in two] == ["A basketball player in a city.", "A basketball city."]
    assert two[0]["score"] >= two[1]["score"]
    one = RelevanceFilter(enc, RelevanceConfig(threshold=0.1, budget=9)).filter("basketball player", ps2)
    assert [k["text"] for k in one] == ["A basketball player in a city."]
    # a best sentence longer than the budget is cut to the budget
    cut = RelevanceFilter(enc, RelevanceConfig(threshold=0.1, budget=3)).filter("basketball player", ps2)
    assert len(cut) == 1 and cut[0]["truncated"] and len(enc.tokenizer.tokenize(cut[0]["text"])) <= 3
    assert f.filter("anything", []) == []


def test_title_matches_have_their_own_threshold():
    enc = KeywordEncoder()
    f = RelevanceFilter(enc, RelevanceConfig(threshold=0.9, title_threshold=0.3))
    same = [Passage("Curry", "Curry is a basketball city.", "s", 3.0, "exact")]
    other = [Passage("Curry", "Curry is a basketball city.", "s", 9.0, "bm25")]
    assert f.filter("basketball player", same) and not f.filter("basketball player", other)


def test_embedding_cache_avoids_recomputation():
    enc = KeywordEncoder()
    f = RelevanceFilter(enc, RelevanceConfig(threshold=0.0))
    ps = [Passage("X", "One basketball sentence. Another city sentence.", "s")]
    f.filter("basketball", ps)
    calls = enc.calls
    f.filter("basketball", ps, tweet_emb=enc.encode(["basketball"])[0])
    assert enc.calls == calls + 1          # only the explicit tweet encoding; sentences came from the cache


def test_split_sentences():
    assert split_sentences("Mr. X went. He saw 3 dogs! Did he? Yes; ok.") == ["Mr. X went.", "He saw 3 dogs!", "Did he?", "Yes; ok."]
    assert split_sentences("   ") == []
