"""Tag anyone's tweets with a trained checkpoint (``tvomner predict``, ``Predictor``).

    from tvolib.predict import Predictor
    p = Predictor.from_checkpoint("runs/t17-full/best")
    res = p.predict(["Steph Curry drops 40 in Oakland", "I like pizza"])     # or Tweets, token lists
    res[0]["entities"]      # [{"start", "end", "type", "text"}], plus "gate" (g of Eq. 4) and
                            # "fusion_weights" ([ω_t, ω_g, ω_o] of Eq. 3) for a multimodal model
    format_output(res, "conll")                                              # or "json"

Input files: one tweet per line (tokens split on whitespace; an optional ``IMGID<TAB>`` prefix names
the tweet and its image ``<image_dir>/<IMGID>.jpg|png``), or CoNLL with ``IMGID:`` lines (labels, if
any, are ignored). A token<TAB>label file without ``IMGID:`` lines, an IMGID that is not a plain file
name and a file that is not UTF-8 are errors naming the file and line.

The checkpoint folder is all that is needed (``tvolib.checkpoint``): the model, its encoder config and
tokenizer, the label set, every config and the candidate tagger trained with it, which tags the new
tweets (it is never retrained; the training data need not be there). What the full model adds:

* candidates (the checkpoint's tagger) and their knowledge (the checkpoint's knowledge source; a
  per-tweet knowledge file with ``knowledge_file``; when the source is not available here the
  tweets go on without knowledge, and ``Predictor.notes`` says so once, with the coverage);
* visual features from ``image_dir`` (any folder, or none), captions ({IMGID: caption}) for tweets
  without a usable image, object features where LLM phrases and boxes can be had (else left out,
  said once). Without any of them the model falls back on the text (gate, null slot).

Prediction caches live in ``<cache_dir>/predict/``, apart from the training caches. Every record is
keyed by its content: the tweet's tokens, its image (resolved path, size and mtime), its caption,
per-tweet knowledge and phrases, and the settings that produced it (the tagger's weights hash, the
knowledge source and filter settings, the image encoder), so two inputs can never share a record
unless they are the same tweet with the same image; the user's ids (``line1``...) are never keys.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Sequence

from .cache import JsonlCache, stable_hash
from .config import DataConfig, ModelConfig, TrainConfig, from_dict
from .data import DataFormatError, Dataset, Tweet, entity_spans, find_image, imgid_problem, read_conll, read_utf8
from .weights import ResourceMissing

CONLL_LINE = re.compile(r"^\S+\t(O|[BI]-[A-Za-z]+)\s*$")


# ---------------------------------------------------------------------------------------------- input


def read_tweets(path: str | Path, fmt: str = "auto") -> list[Tweet]:
    """Tweets from a text file (one per line) or a CoNLL file (``fmt`` "auto" | "text" | "conll")."""
    path = Path(path)
    if fmt not in ("auto", "text", "conll"):
        raise ValueError(f"unknown input format {fmt!r}: 'auto', 'text' or 'conll'")
    lines = read_utf8(path).splitlines()
    first = next(((i, l) for i, l in enumerate(lines, 1) if l.strip()), (0, ""))
    if fmt == "auto":
        fmt = "conll" if first[1].startswith("IMGID:") else "text"
    if fmt == "conll":
        return read_conll(path, split="test")
    if CONLL_LINE.match(first[1]):
        raise DataFormatError(path, first[0], "looks like CoNLL ('token<TAB>label') without 'IMGID:' lines; "
                                              "put 'IMGID:<id>' before each tweet, or give one tweet per line")
    tweets = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        tid, body = (line.split("\t", 1) if "\t" in line else (f"line{lineno}", line))
        tid = tid.strip().removeprefix("IMGID:")
        if not tid or imgid_problem(tid):
            raise DataFormatError(path, lineno, imgid_problem(tid) or "empty IMGID before the tab")
        tokens = body.split()
        if not tokens:
            raise DataFormatError(path, lineno, "no tokens after the IMGID")
        tweets.append(Tweet(id=tid, tokens=tokens, labels=["O"] * len(tokens), split="test",
                            source=f"{path}:{lineno}"))
    if not tweets:
        raise DataFormatError(path, None, "no tweets found")
    return tweets


def as_tweets(tweets: Sequence) -> list[Tweet]:
    """Strings (split on whitespace), token lists or ``Tweet``s as unlabelled test tweets."""
    out = []
    for i, t in enumerate(tweets):
        if isinstance(t, Tweet):
            out.append(dataclasses.replace(t, split="test", labels=["O"] * len(t.tokens)))
        else:
            tokens = t.split() if isinstance(t, str) else list(t)
            if not tokens:
                raise ValueError(f"tweet {i + 1} has no tokens")
            out.append(Tweet(id=f"t{i + 1}", tokens=tokens, labels=["O"] * len(tokens), split="test"))
    return out


def _image_identity(path: Path | None):
    if path is None:
        return None
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def _read_jsonl_by_imgid(path: Path) -> dict[str, dict]:
    out = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                r = json.loads(line)
                out[str(r["imgid"])] = r
            except (ValueError, KeyError, TypeError) as e:
                raise DataFormatError(path, i, f"bad record ({e})") from None
    return out


# ---------------------------------------------------------------------------------------------- predictor


class Predictor:
    """A loaded checkpoint; ``predict(tweets)`` returns one dict per tweet (see the module docstring)."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu", cache_dir: str | None = None,
                 precision: str | None = None):
        from .checkpoint import load_checkpoint, resolve_checkpoint
        from .device import resolve_precision
        self.checkpoint = resolve_checkpoint(checkpoint)
        self.model, self.info, self.meta = load_checkpoint(self.checkpoint, device)
        self.device = device
        self.labels = list(self.info["labels"])
        self.model_cfg = from_dict(ModelConfig, self.info["model"])
        self.data_cfg = from_dict(DataConfig, self.info["data"])
        trained = self.info.get("precision") or (from_dict(TrainConfig, self.info["train"]).precision
                                                 if self.info.get("train") else "fp32")
        # the precision the run was evaluated in, where this machine supports it
        self.precision = resolve_precision(precision or ("auto" if trained == "bf16" else "fp32"), device)
        root = Path(cache_dir if cache_dir is not None else self.data_cfg.cache_dir)
        self.cache_root = root / "predict" / self.data_cfg.dataset
        self.notes: list[str] = []
        self._names: dict[str, str] = {}
        self.tagger = self.tagger_info = None
        if self.model_cfg.arch == "tvomner" and self.model_cfg.use_candidates:
            if self.meta.get("tagger_path"):
                from .tfo.candidates import load_tagger
                self.tagger, self.tagger_info = load_tagger(self.meta["tagger_path"])
            else:
                self.note(f"{self.checkpoint}: this checkpoint carries no candidate tagger (saved before taggers "
                          f"were kept in checkpoints): tweets are tagged without candidates or knowledge")

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str = "cpu", cache_dir: str | None = None,
                        precision: str | None = None) -> "Predictor":
        return cls(checkpoint, device, cache_dir, precision)

    def note(self, msg: str) -> None:
        """Say something about the input once per predictor (stderr and ``self.notes``)."""
        if msg not in self.notes:
            self.notes.append(msg)
            print(f"note: {msg}", file=sys.stderr, flush=True)

    # -- side inputs ---------------------------------------------------------------------------

    def _side_inputs(self, tweets: list[Tweet], image_dir, captions, knowledge_file) -> dict:
        """Per-tweet inputs beside the tokens, read from the user's files by IMGID."""
        from .data import load_captions
        side = {"caption": {}, "aux": {}, "phrases": {}, "boxes": {}}
        if captions:
            caps = load_captions(captions)
            side["caption"] = {t.id: caps[t.id] for t in tweets if t.id in caps}
        if self.model_cfg.knowledge_source == "tweet_files" and self.model_cfg.use_knowledge:
            f = Path(knowledge_file) if knowledge_file else (Path(self.data_cfg.knowledge_file)
                                                              if self.data_cfg.knowledge_file else None)
            if f is not None and f.exists():
                from .tfo.knowledge import TweetFileSource
                aux = TweetFileSource(f).aux
                side["aux"] = {t.id: aux[t.id] for t in tweets if t.id in aux}
                side["aux_file"] = f.name
            n = len(side["aux"])
            if n < len(tweets):
                self.note(f"this checkpoint was trained with per-tweet knowledge files (knowledge_source="
                          f"'tweet_files'); {n} of {len(tweets)} input tweets have knowledge"
                          + ("" if f is not None and f.exists() else " (no knowledge file: pass knowledge_file)"))
        # LLM phrases and boxes of the checkpoint's own images, for tweets whose image is that same file
        own = Path(self.data_cfg.image_dir) if self.data_cfg.image_dir else None
        if self.model_cfg.visual == "optimized" and self.model_cfg.object_source == "llm" and own is not None:
            mine = {t.id for t in tweets if t.image_path is not None and own.is_dir()
                    and Path(t.image_path).resolve().parent == own.resolve()}
            for key, f in (("phrases", self.data_cfg.phrases), ("boxes", self.data_cfg.boxes)):
                if mine and f and Path(f).exists():
                    recs = _read_jsonl_by_imgid(Path(f))
                    side[key] = {k: recs[k] for k in mine if k in recs}
        return side

    # -- the stages ----------------------------------------------------------------------------

    def _augmentations(self, tweets: list[Tweet], side: dict) -> dict[str, list[tuple[str, str]]]:
        """``{internal id: [(candidate, knowledge), ...]}`` from the checkpoint's tagger and knowledge
        source, through the content-keyed prediction caches."""
        if not self.model_cfg.use_candidates or self.tagger is None:
            return {t.id: [] for t in tweets}
        tag_id = self.tagger_info.get("weights_hash") or stable_hash(self.tagger_info)
        cache = JsonlCache(self.cache_root / "candidates.jsonl", key="key")
        todo = [t for t in tweets if f"{tag_id}|{t.id}" not in cache]
        if todo:
            tcfg = self.tagger_info.get("config", {})
            spans = self.tagger.predict([t.tokens for t in todo], tcfg.get("eval_batch_size", 64),
                                        tcfg.get("max_length", 128))
            for t, sp in zip(todo, spans):
                cache.append({"key": f"{tag_id}|{t.id}", "tagger": tag_id, "spans": [list(x) for x in sp],
                              "candidates": [" ".join(t.tokens[s:e]) for s, e in sp]})
        cands = {t.id: cache[f"{tag_id}|{t.id}"] for t in tweets}
        if not self.model_cfg.use_knowledge:
            return {t.id: [(c, "") for c in cands[t.id]["candidates"]] for t in tweets}
        source = self._knowledge_source(tweets, side)
        if source is None:
            return {t.id: [(c, "") for c in cands[t.id]["candidates"]] for t in tweets}
        from .tfo.pipeline import retrieve
        ds = Dataset(name=self.data_cfg.dataset, data_dir=self.cache_root, image_dir=None,
                     splits={"test": tweets})
        try:
            kc = retrieve(ds, self.cache_root / "knowledge.jsonl", cands, source)
        finally:
            source.close()
        return {t.id: [(it["candidate"], it["knowledge"]) for it in kc[t.id]["items"]]
                for t in tweets}

    def _knowledge_source(self, tweets: list[Tweet], side: dict):
        name = self.model_cfg.knowledge_source
        if name == "tweet_files":
            from .tfo.knowledge import TweetFileSource
            if not side["aux_by_iid"]:
                return None
            f = self.cache_root / f"tweet-knowledge-{stable_hash(sorted(side['aux_by_iid'].items()))}.jsonl"
            if not f.exists():
                from .cache import atomic_write_text
                atomic_write_text(f, "".join(json.dumps({"split": "test", "imgid": t.id, "aux": side["aux_by_iid"][t.id]},
                                                        ensure_ascii=False) + "\n"
                                             for t in tweets if t.id in side["aux_by_iid"]))
            return TweetFileSource(f)
        from .tfo.pipeline import knowledge_source
        data_cfg = dataclasses.replace(self.data_cfg, cache_dir=str(self.cache_root.parent))
        try:
            return knowledge_source(name, data_cfg)
        except (ResourceMissing, OSError) as e:
            self.note(f"the checkpoint's knowledge source ({name!r}) is not available here, so the tweets "
                      f"go on without knowledge: {e}")
            return None

    def _visual(self, tweets: list[Tweet], image_dir, side: dict):
        """The visual feature table of the input tweets (internal ids), in the checkpoint's widths."""
        import torch
        from .vfo.pipeline import visual_features
        n_img = sum(t.image_path is not None for t in tweets)
        n_cap = sum(t.id in side["caption_by_iid"] for t in tweets)
        if n_img == 0 and n_cap == 0:
            self.note("this checkpoint was trained with images (or captions), and none were given "
                      "(image_dir / captions): the model sees the text only")
        tag = stable_hash(str(Path(image_dir).resolve()) if image_dir else None)
        vis_root = self.cache_root / "visual"

        def write(name: str, recs: dict, line) -> str | None:
            if not recs:
                return None
            f = vis_root / f"{name}-{stable_hash(sorted(recs.items(), key=lambda kv: kv[0]))}.json{'l' if line else ''}"
            if not f.exists():
                from .cache import atomic_write_text
                atomic_write_text(f, "".join(json.dumps(line(k, r), ensure_ascii=False) + "\n" for k, r in recs.items())
                                  if line else json.dumps(recs, ensure_ascii=False))
            return str(f)
        data_cfg = dataclasses.replace(
            self.data_cfg, cache_dir=str(vis_root), dataset=f"images-{tag}",
            image_dir=str(image_dir) if image_dir else None,
            captions=write("captions", side["caption_by_iid"], None),
            phrases=write("phrases", side["phrases_by_iid"], lambda k, r: {**r, "imgid": k}),
            boxes=write("boxes", side["boxes_by_iid"], lambda k, r: {**r, "imgid": k}))
        ds = Dataset(name=data_cfg.dataset, data_dir=self.cache_root, image_dir=Path(image_dir) if image_dir else None,
                     splits={"test": tweets})
        model_cfg = self.model_cfg
        try:
            vf = visual_features(ds, data_cfg, model_cfg)
        except ResourceMissing as e:
            if model_cfg.object_source == "none":
                raise
            msg = str(e)
            for iid, user_id in self._names.items():      # the user's ids, not the internal ones
                msg = msg.replace(iid, user_id)
            self.note(f"object features left out for these tweets (the checkpoint uses "
                      f"object_source={model_cfg.object_source!r}): {msg}")
            vf = visual_features(ds, data_cfg, dataclasses.replace(model_cfg, object_source="none"))
        want = self.meta.get("feats_dims", {})
        d_cap = int(want.get("caption", vf.d_caption))
        if vf.d_caption != d_cap:          # no caption or phrase here: the (unused) columns at the trained width
            if vf.d_caption and vf.glob_caption.abs().sum() > 0:
                raise ValueError(f"caption features of width {vf.d_caption}, the checkpoint was trained with {d_cap}")
            N = len(vf.ids)
            vf = dataclasses.replace(vf, glob_caption=torch.zeros(N, d_cap), obj_text=torch.zeros(N, d_cap),
                                     d_caption=d_cap)
        return vf

    # -- prediction ----------------------------------------------------------------------------

    def predict(self, tweets: Sequence, image_dir: str | Path | None = None, captions: str | Path | None = None,
                knowledge_file: str | Path | None = None, batch_size: int = 64,
                diagnostics: bool = True) -> list[dict]:
        """One dict per tweet: ``id``, ``tokens``, ``labels``, ``entities`` and, for the transformer,
        ``candidates`` ([{"text", "knowledge"}]); with ``diagnostics`` a multimodal model adds
        ``gate`` (g of Eq. 4, the weight of the text features) and ``fusion_weights`` ([ω_t, ω_g, ω_o])."""
        from .inputs import prepare_data
        tweets = as_tweets(tweets)
        if not tweets:
            return []
        for t in tweets:
            if t.image_path is None and image_dir is not None:
                t.image_path = find_image(image_dir, t.id)
                t.image_status = "unchecked" if t.image_path else "missing"
        side = self._side_inputs(tweets, image_dir, captions, knowledge_file)
        # internal ids: the content of each tweet and of everything read for it by IMGID
        internal = []
        for t in tweets:
            key = stable_hash(t.tokens, _image_identity(t.image_path), side["caption"].get(t.id),
                              side["aux"].get(t.id), side["phrases"].get(t.id), side["boxes"].get(t.id), n=20)
            internal.append(dataclasses.replace(t, id=f"u{key}", labels=list(t.labels)))
        for name in ("caption", "aux", "phrases", "boxes"):
            side[f"{name}_by_iid"] = {u.id: side[name][t.id] for t, u in zip(tweets, internal) if t.id in side[name]}
        unique = list({u.id: u for u in internal}.values())      # the same tweet twice is computed once
        self._names = {u.id: t.id for t, u in zip(tweets, internal)}
        ds = Dataset(name=self.data_cfg.dataset, data_dir=self.cache_root, image_dir=None, splits={"test": unique})
        augs = visual = None
        if self.model_cfg.arch == "tvomner":
            augs = self._augmentations(unique, side)
            if self.model_cfg.visual != "none":
                visual = self._visual(unique, image_dir, side)
        prepared = prepare_data(ds, self.data_cfg, self.model_cfg, meta=self.meta, augs=augs, visual=visual)
        by_id = dict(zip((u.id for u in unique), prepared.examples["test"]))
        examples = [by_id[u.id] for u in internal]
        pred, diag = self._run(examples, prepared.collate, batch_size, diagnostics)
        out = []
        for t, u, p, d in zip(tweets, internal, pred, diag):
            r = {"id": t.id, "tokens": t.tokens, "labels": p,
                 "entities": [{"start": s, "end": e, "type": typ, "text": " ".join(t.tokens[s:e])}
                              for s, e, typ in entity_spans(p)]}
            if augs is not None:
                r["candidates"] = [{"text": c, "knowledge": k} for c, k in augs.get(u.id, [])]
            out.append({**r, **d})
        return out

    def _run(self, examples: list[dict], collate, batch_size: int, diagnostics: bool):
        """Viterbi labels and, for a multimodal model, the gate and ω of every example, from one
        forward pass per batch (batches in input order, as in evaluation)."""
        import torch
        from .device import autocast, to_device
        labels: list[list[str]] = []
        diag: list[dict] = []
        self.model.eval()
        device = torch.device(self.device)
        with torch.no_grad():
            for i in range(0, len(examples), batch_size):
                batch = to_device(collate(examples[i:i + batch_size]), device)
                batch.pop("labels", None)
                with autocast(device, self.precision):
                    em = self.model.emissions(batch)
                    ids = self.model.crf.decode(em["emissions"], mask=em["word_mask"])   # = TVOMNER.decode
                labels += [[self.labels[j] for j in seq] for seq in ids]
                n = len(ids)
                if diagnostics and "gate" in em:
                    gate = em["gate"].float().reshape(n).tolist()
                    fw = em["fusion_weights"].float().tolist() if "fusion_weights" in em else [None] * n
                    diag += [{"gate": g, "fusion_weights": w} for g, w in zip(gate, fw)]
                else:
                    diag += [{} for _ in range(n)]
        return labels, diag


def predict(checkpoint: str | Path, tweets: Sequence, image_dir=None, captions=None, device: str = "cpu",
            cache_dir: str | None = None, knowledge_file=None) -> list[dict]:
    """One call: load ``checkpoint`` and tag ``tweets`` (strings, token lists or ``Tweet``s)."""
    return Predictor(checkpoint, device, cache_dir).predict(tweets, image_dir, captions, knowledge_file)


def format_output(results: list[dict], fmt: str = "json") -> str:
    """JSON (a list of the result dicts) or CoNLL (``IMGID:<id>`` then ``token<TAB>label``)."""
    if fmt == "json":
        return json.dumps(results, ensure_ascii=False, indent=1) + "\n"
    if fmt == "conll":
        blocks = ["\n".join([f"IMGID:{r['id']}"] + [f"{w}\t{l}" for w, l in zip(r["tokens"], r["labels"])])
                  for r in results]
        return "\n\n".join(blocks) + "\n"
    raise ValueError(f"unknown output format {fmt!r}: 'json' or 'conll'")


def write_output(results: list[dict], path: str | Path, fmt: str | None = None) -> Path:
    """Write ``format_output`` atomically; ``fmt`` defaults from the suffix (.conll/.txt → CoNLL)."""
    from .cache import atomic_write_text
    path = Path(path)
    fmt = fmt or ("conll" if path.suffix in (".conll", ".txt") else "json")
    atomic_write_text(path, format_output(results, fmt))
    return path
