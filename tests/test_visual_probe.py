"""The visual-probe benchmark (tvolib.sample.probe) and the property it exists for: a trained full model
reads the image when only the image tells an entity's type (tvolib.probing)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tvolib.sample.probe import AMBIGUOUS_NAMES, generate, load_subsets, probe_paths

FILES = ("data/train.txt", "data/valid.txt", "data/test.txt", "captions.json", "objects.jsonl",
         "phrases.jsonl", "subsets.json")


def _tweets(folder: Path) -> dict:
    from tvolib.data import read_conll
    return {t.id: t for s in ("train", "valid", "test") for t in read_conll(folder / "data" / f"{s}.txt", split=s)}


def test_probe_is_deterministic_and_only_the_image_types_ambiguous_names(tmp_path):
    a = generate(tmp_path / "a", 60, 12, 28, seed=5)
    b = generate(tmp_path / "b", 60, 12, 28, seed=5)
    assert a == b and sum(a["subsets"].values()) == 100
    for f in FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    pngs = sorted(p.name for p in (tmp_path / "a" / "images").glob("*.png"))
    assert pngs == sorted(p.name for p in (tmp_path / "b" / "images").glob("*.png"))
    assert all((tmp_path / "a" / "images" / n).read_bytes() == (tmp_path / "b" / "images" / n).read_bytes()
               for n in pngs)

    subsets = load_subsets(tmp_path / "a")
    tweets = _tweets(tmp_path / "a")
    objects = {json.loads(l)["imgid"]: json.loads(l) for l in
               (tmp_path / "a" / "objects.jsonl").read_text().splitlines()}
    phrases = {json.loads(l)["imgid"]: json.loads(l)["phrases"] for l in
               (tmp_path / "a" / "phrases.jsonl").read_text().splitlines()}
    types_of_name: dict[str, set] = {}
    for k, sub in subsets.items():
        t = tweets[k]
        has_png = (tmp_path / "a" / "images" / f"{k}.png").exists()
        assert has_png == (sub != "noimage"), k
        marks = [o["type"] for o in objects.get(k, {}).get("objects", []) if o["type"]]
        gold = [l[2:] for l in t.labels if l.startswith("B-")]
        if sub == "ambiguous":
            name = " ".join(w for w, l in zip(t.tokens, t.labels) if l != "O")
            assert name in AMBIGUOUS_NAMES and len(gold) == 1
            assert marks == gold                           # one mark, of the entity's type
            types_of_name.setdefault(name, set()).add(gold[0])
        elif sub == "unrelated":
            assert marks == [] and phrases[k] == []       # grey distractors only, no phrase
        elif sub == "text":
            assert sorted(marks) == sorted(set(gold))
    # the same name is used with more than one type, so the text cannot tell
    assert any(len(v) > 1 for v in types_of_name.values())


@pytest.mark.slow
def test_trained_full_model_reads_the_image(tmp_path):
    """Trains the full model (tweet-only text side, MiniLM, EfficientNet-Lite0 features) on a small
    probe and checks that the image decides the ambiguous types: giving each tweet another tweet's
    image, or keeping T alone in Eq. 5, must cost F1 on the ambiguous tweets. With the post-norm
    cross-attention and the gate starting at 0.95 (``cross_norm="post"``, ``gate_init=0.95``) the gate
    stayed shut and neither probe changed anything."""
    import torch
    from tvolib.probing import subset_groups
    from tvolib.visual_probe import train_on_probe

    before = torch.get_num_threads()
    torch.set_num_threads(1)                # `make test` runs two workers, a core each
    try:
        folder = tmp_path / "probe"
        generate(folder, 300, 60, 160, seed=1)
        run = train_on_probe(str(folder), str(tmp_path / "run"), "full", seed=1, max_train_samples=None, epochs=3,
                             batch_size=8, max_length=32, num_threads=1, cache_dir=str(tmp_path / "cache"),
                             precision="fp32")
    finally:
        torch.set_num_threads(before)
    res, amb = run["probe"], subset_groups(run["subsets"])["ambiguous"]
    s = res.summary(amb)
    assert s["f1"]["learned"] >= 60, s
    assert s["f1"]["learned"] - s["f1"]["shuffled"] >= 20, s       # another tweet's image: wrong types
    assert s["f1"]["learned"] - s["f1"]["gate=1"] >= 20, s         # T alone: the types are lost


def test_branch_probe_shuffles_within_the_split_and_plots():
    """branch_probe on a tiny random model: a derangement pairs every tweet with another; the shuffled
    probe feeds those tweets' visual inputs; gate=1 gives the text branch alone; plot_probe draws it."""
    import matplotlib
    import torch
    from tvolib.data import LABELS
    from tvolib.probing import branch_probe, derangement, plot_probe
    from test_model import build, fake_visual, make_batch, tiny_cfg

    perm = derangement(7, seed=3)
    assert sorted(perm) == list(range(7)) and all(p != i for i, p in enumerate(perm))
    model = build(tiny_cfg())
    B = 4
    batch = make_batch(B=B, W=5)
    examples = [{"id": f"t{i}", "labels": batch["labels"][i][batch["word_mask"][i]].tolist()} for i in range(B)]
    with torch.no_grad():          # the cross-modal output starts at zero: make the visual input count
        for prm in model.cff.parameters():
            prm.add_(0.5 * torch.randn_like(prm, generator=torch.Generator().manual_seed(prm.numel())))
    table = fake_visual(B, seed=1)       # one visual input per tweet
    rows_of = lambda ids: {k: v[[int(i[1:]) for i in ids]] for k, v in table.items()}
    seen, collated = [], []

    class Visual:
        def batch(self, ids):
            seen.append(list(ids))
            return rows_of(ids)

    def collate(exs):
        rows = [int(e["id"][1:]) for e in exs]
        collated.append([e["id"] for e in exs])
        out = {k: (v[rows] if torch.is_tensor(v) else v) for k, v in batch.items() if k != "visual"}
        out["visual"] = rows_of([e["id"] for e in exs])
        return out

    text_calls = []
    model.text.register_forward_hook(lambda *a: text_calls.append(1))
    res = branch_probe(model, examples, collate, Visual(), batch_size=B, seed=3)
    assert len(text_calls) == 1                     # T is computed once a batch and shared by the probes
    perm = derangement(B, seed=3)
    assert len(seen) == 1 and dict(zip(collated[-1], seen[0])) == {f"t{i}": f"t{perm[i]}" for i in range(B)}
    # the same predictions as a whole forward pass per probe
    model.eval()
    emissions = {}
    for p, override in (("learned", None), ("gate=1", 1.0), ("gate=0", 0.0), ("shuffled", None)):
        b = collate(examples)
        if p == "shuffled":
            b["visual"] = rows_of([f"t{perm[i]}" for i in range(B)])
        model.cff.gate_override = override
        with torch.no_grad():
            out = model.emissions(b)
        model.cff.gate_override = None
        emissions[p] = out["emissions"]
        assert model.crf.decode(out["emissions"], mask=out["word_mask"]) == [
            [LABELS.index(t) for t in tags] for tags in res.pred[p]], p
    # another tweet's visual input is another input here, so the check above can tell them apart
    assert not torch.allclose(emissions["shuffled"], emissions["learned"])
    assert set(res.pred) == {"learned", "gate=1", "gate=0", "shuffled"}
    assert len(res.gate) == len(res.omega) == len(res.visual_attn) == B
    s = res.summary({"t0", "t1"})
    assert s["tweets"] == 2 and "shuffle_delta_f1" in s and len(s["omega_mean"]) == 3
    assert res.other == [f"t{perm[i]}" for i in range(B)]
    from tvolib.probing import image_changes, probe_table
    changed = image_changes(res, max_cases=10)
    assert all(res.pred["learned"][res.ids.index(c["id"])] != c["with_other"] for c in changed)
    assert probe_table(res, {"first": ["t0", "t1"]}).count("\n") == 3
    matplotlib.use("Agg")
    fig = plot_probe(res, {"first": ["t0", "t1"], "rest": ["t2", "t3"]})
    assert len(fig.axes) == 4
