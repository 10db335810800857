"""Tag anyone's tweets with a trained checkpoint (``tvomner predict``, ``Predictor``).

    from tvolib.predict import Predictor
    p = Predictor.from_checkpoint("runs/t17-full/best")
    res = p.predict(["Steph Curry drops 40 in Oakland", "I like pizza"])     # or Tweets, token lists
    res[0]["entities"]      # [{"start", "end", "type", "text"}], plus "gate" (g of Eq. 4) and
                            # "fusion_weights" ([ω_t, ω_g, ω_o] of Eq. 3) for a multimodal model

Input files (``tvolib.io.read_tweets``): one tweet per line, JSONL, or CoNLL with ``IMGID:`` lines.

The checkpoint folder is all that is needed: the model, its encoder config and tokenizer, every
config, the candidate tagger trained with it (never retrained) and, for a model trained on the local
knowledge base, that base. Inputs are built by the same builder as in training
(``tvolib.inputs.prepare_data``), with the checkpoint's tagger and the side inputs of the new tweets:

* knowledge from the checkpoint's own source (``tvolib.resources.for_checkpoint``): its base, or a
  per-tweet knowledge file (``knowledge_file``); for a checkpoint trained on per-tweet texts, tweets
  that have none are given one by the OpenAI-compatible endpoint of ``TVOMNER_LLM_*`` where one is
  configured (``tvolib.tfo.knowledge.llm_texts``, cached in ``<cache_dir>/predict/llm_knowledge.jsonl``),
  and each result says what it got (``knowledge_note``; ``Predictor.knowledge_summary`` in one line);
  when none is available the tweets go on without knowledge, and ``Predictor.notes`` says so once;
* visual features from ``image_dir`` (any folder, or none), captions ({IMGID: caption}) for tweets
  without a usable image, object features where LLM phrases and boxes can be had (else left out,
  said once). Without any of them the model falls back on the text (gate, null slot).

A tweet longer than the encoder can take is tagged in consecutive windows of whole words and named
in ``notes`` by its input line and id. Caches live in ``<cache_dir>/predict/<dataset>/`` (default
``cache_dir``: the per-user folder ``$TVOMNER_HOME``, never a path of the training machine); every record is
keyed by content (the tweet's tokens, its image, caption, knowledge and phrases, and the settings
that produced it), so the user's ids (``line1``...) are never keys.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import torch

from .cache import stable_hash
from .checkpoint import load_checkpoint, resolve_checkpoint
from .config import DataConfig, ModelConfig, TrainConfig, from_dict
from .data import Dataset, Tweet, entity_spans, find_image
from .device import autocast, resolve_precision, slow_bf16, to_device
from .inputs import LEFT_OUT, prepare_data, withheld
from .io import as_tweets, load_captions, read_jsonl
from .resources import for_checkpoint
from .tfo.encoder import load_tokenizer
from .tfo.knowledge import LLMKnowledgeSource, TweetFileSource, knowledge_client
from .tfo.tagger import load_tagger
from .vfo.pipeline import SideInputs
from .weights import ResourceMissing, user_home

log = logging.getLogger(__name__)


def image_identity(path: Path | None):
    if path is None:
        return None
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def word_windows(pieces: list[int], limit: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, end)`` word ranges whose sub-token counts each sum to at most ``limit``."""
    out, start, n = [], 0, 0
    for i, p in enumerate(pieces):
        if n + p > limit and i > start:
            out.append((start, i))
            start, n = i, 0
        n += p
    out.append((start, len(pieces)))
    return out


def entities(tokens: list[str], labels: list[str]) -> list[dict]:
    return [{"start": s, "end": e, "type": typ, "text": " ".join(tokens[s:e])} for s, e, typ in entity_spans(labels)]


def knowledge_outcomes(got: dict[str, str], most: int = 3) -> str:
    """``"2: per-tweet texts from m at host; 1: no knowledge: ..."``: what the tweets got, counted."""
    kinds: dict[str, int] = {}
    for v in got.values():
        kinds[v] = kinds.get(v, 0) + 1
    more = len(kinds) - most
    return "; ".join(f"{c}: {v}" for v, c in list(kinds.items())[:most]) + (
        f"; and {more} other outcome(s)" if more > 0 else "")


def knowledge_summary(got: dict[str, str]) -> str:
    """One line: how many tweets got per-tweet texts, and from where (or why not)."""
    n = sum(1 for v in got.values() if not v.startswith("no knowledge"))
    return f"knowledge: {n} of {len(got)} tweets got per-tweet texts; {knowledge_outcomes(got)}"


class Predictor:
    """A loaded checkpoint; ``predict(tweets)`` returns one dict per tweet (see the module docstring).
    ``kb``: another local knowledge base than the checkpoint's (an explicit choice, noted)."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu", cache_dir: str | None = None,
                 precision: str | None = None, kb: str | None = None):
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
        self.cache_root = (Path(cache_dir) if cache_dir is not None else user_home()) / "predict"
        self.notes: list[str] = []
        self.knowledge_got: dict[str, str] = {}      # per-tweet texts: what each tweet of the last call got
        self.knowledge_summary: str | None = None    # ... in one line (None: the model reads no such texts)
        self.kb = kb
        self.tagger = None
        if self.model_cfg.arch == "tvomner" and self.model_cfg.use_candidates:
            if self.meta.get("tagger_path"):
                self.tagger = load_tagger(self.meta["tagger_path"])
            else:
                self.note(f"{self.checkpoint}: this checkpoint carries no candidate tagger: tweets are tagged "
                          f"without candidates or knowledge")
        if slow := slow_bf16(self.precision, device):
            self.note(slow)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str = "cpu", cache_dir: str | None = None,
                        precision: str | None = None, kb: str | None = None) -> "Predictor":
        return cls(checkpoint, device, cache_dir, precision, kb)

    def note(self, msg: str) -> None:
        """Say something about the input once per predictor (log and ``self.notes``)."""
        if msg not in self.notes:
            self.notes.append(msg)
            log.warning("note: %s", msg)

    # -- side inputs ---------------------------------------------------------------------------

    def side_inputs(self, tweets: list[Tweet], captions, phrases=None, boxes=None) -> dict:
        """Per-tweet inputs beside the tokens, read from the user's files by IMGID: captions, LLM
        phrases and grounded boxes (``phrases``, ``boxes``: JSONL as in training), and the
        checkpoint's own phrases and boxes for tweets whose image is one of its training images."""
        side = {"caption": {}, "phrases": {}, "boxes": {}}
        if captions:
            caps = load_captions(captions)
            side["caption"] = {t.id: caps[t.id] for t in tweets if t.id in caps}
        if self.model_cfg.visual != "optimized" or self.model_cfg.object_source != "llm":
            return side
        own = Path(self.data_cfg.image_dir) if self.data_cfg.image_dir else None
        mine = {t.id for t in tweets if own is not None and t.image_path is not None and own.is_dir()
                and Path(t.image_path).resolve().parent == own.resolve()}
        for key, f, given in (("phrases", self.data_cfg.phrases, phrases), ("boxes", self.data_cfg.boxes, boxes)):
            if mine and f and Path(f).exists():
                recs = {str(r["imgid"]): r for r in read_jsonl(f)}
                side[key] = {k: recs[k] for k in mine if k in recs}
            if given:
                recs = {str(r["imgid"]): r for r in read_jsonl(given)}
                side[key].update({t.id: recs[t.id] for t in tweets if t.id in recs})
        return side

    def tweet_texts(self, tweets: list[Tweet], res, knowledge_file,
                    captions: dict | None = None) -> dict[str, str] | None:
        """The per-tweet knowledge texts of these tweets by id (None: the model reads no such texts),
        from ``knowledge_file`` or the file the checkpoint was trained with, else asked of the LLM
        endpoint of ``res.llm`` where one is configured (the tweet and its caption). Sets
        ``knowledge_got`` (what each tweet got) and ``knowledge_summary``."""
        self.knowledge_got, self.knowledge_summary = {}, None
        if res.knowledge != "tweet_files":
            return None
        f = Path(knowledge_file) if knowledge_file else res.knowledge_file
        aux = TweetFileSource(f).aux if f is not None else {}
        found = {t.id: aux[t.id] for t in tweets if t.id in aux}
        got = {t.id: f"per-tweet texts from {f.name}" for t in tweets if t.id in found}
        todo = {t.id: (" ".join(t.tokens), (captions or {}).get(t.id)) for t in tweets if t.id not in found}
        if todo and self.tagger is None:
            got.update({tid: "no knowledge: the checkpoint has no candidate tagger" for tid in todo})
        elif todo and res.llm.configured:
            src = LLMKnowledgeSource(knowledge_client(res.llm), res.cache_root / "llm_knowledge.jsonl")
            src.fetch(todo)
            found.update(src.aux)
            got.update({tid: src.origin for tid in src.aux})
            got.update({tid: f"no knowledge: endpoint failed ({why})" for tid, why in src.failed.items()})
        elif todo:
            got.update({tid: "no knowledge: no endpoint configured (set TVOMNER_LLM_BASE_URL and TVOMNER_LLM_MODEL "
                             "to an OpenAI-compatible endpoint, e.g. vLLM or Ollama)" for tid in todo})
        self.knowledge_got = {t.id: got[t.id] for t in tweets}
        self.knowledge_summary = knowledge_summary(self.knowledge_got)
        if todo:
            self.note(f"this checkpoint was trained with per-tweet knowledge texts (knowledge_source="
                      f"'tweet_files'); {len(found)} of {len(tweets)} input tweets have knowledge"
                      + ("" if f is not None else " (no knowledge file: pass knowledge_file)")
                      + f" ({knowledge_outcomes(self.knowledge_got)})")
        return found

    # -- prediction ----------------------------------------------------------------------------

    def split_long(self, tweets: list[Tweet]) -> list[tuple[Tweet, list[Tweet]]]:
        """Each tweet with the windows it is tagged in (itself, unless longer than the encoder takes)."""
        if self.model_cfg.arch != "tvomner":
            return [(t, [t]) for t in tweets]
        tok = load_tokenizer(self.meta["tokenizer_path"])
        limit = min(getattr(tok, "model_max_length", 512) or 512, 512) - 2
        out = []
        for t in tweets:
            pieces = [max(1, len(p)) for p in tok(t.tokens, is_split_into_words=False, add_special_tokens=False)["input_ids"]]
            if sum(pieces) <= limit:
                out.append((t, [t]))
                continue
            wins = word_windows(pieces, limit)
            self.note(f"{t.source or 'tweet'} (id {t.id}): {sum(pieces)} sub-tokens, more than the encoder's "
                      f"{limit}: tagged in {len(wins)} consecutive windows of whole words")
            out.append((t, [dataclasses.replace(t, id=f"{t.id}#w{i}", tokens=t.tokens[s:e], labels=t.labels[s:e])
                            for i, (s, e) in enumerate(wins)]))
        return out

    def predict(self, tweets: Sequence, image_dir: str | Path | None = None, captions: str | Path | None = None,
                knowledge_file: str | Path | None = None, batch_size: int = 64,
                diagnostics: bool = True, without_side_inputs: bool = False,
                left_out: Sequence[str] = (), phrases: str | Path | None = None,
                boxes: str | Path | None = None) -> list[dict]:
        """One dict per tweet: ``id``, ``tokens``, ``labels``, ``entities`` and, for the transformer,
        ``candidates`` ([{"text", "knowledge"}]) and ``side_inputs`` (what the tweet had beside its
        words: ``knowledge`` — candidates with knowledge, of all —, ``image``, ``caption``); with
        ``diagnostics`` a multimodal model adds ``gate`` (g of Eq. 4, the weight of the text features)
        and ``fusion_weights`` ([ω_t, ω_g, ω_o]). ``without_side_inputs``: each result also holds
        ``without_side_inputs`` (``labels``, ``entities``): the same model's tags with the knowledge
        and the visual input left out, as in the missing-inputs evaluation (one more forward pass).
        ``left_out``: names of ``LEFT_OUT`` (``no_knowledge``, ``no_visual``, ``neither``); each result
        holds ``left_out`` {name: labels}, the tags with those side inputs left out of every tweet
        (the cross-dataset evaluation scores them). ``phrases`` / ``boxes``: the tweets' LLM phrases and
        grounded boxes by IMGID (JSONL as in training), for a model whose objects come from them."""
        unknown = sorted(set(left_out) - set(LEFT_OUT))
        if unknown:
            raise ValueError(f"left_out: unknown condition(s) {unknown}; known: {', '.join(LEFT_OUT)}")
        tweets = as_tweets(tweets)
        if not tweets:
            return []
        for t in tweets:
            if t.image_path is None and image_dir is not None:
                t.image_path = find_image(image_dir, t.id)
                t.image_status = "unchecked" if t.image_path else "missing"
        res, notes = for_checkpoint(self.model_cfg, self.info, self.meta, self.cache_root / self.data_cfg.dataset,
                                    kb=self.kb)
        for n in notes:
            self.note(n)
        side = self.side_inputs(tweets, captions, phrases, boxes)
        aux = self.tweet_texts(tweets, res, knowledge_file, side["caption"])
        side["aux"] = aux or {}
        parts = self.split_long(tweets)
        # internal ids: the content of each tweet (window) and of everything read for it by IMGID
        internal: list[list[Tweet]] = []
        for t, wins in parts:
            extra = (image_identity(t.image_path), side["caption"].get(t.id), side["aux"].get(t.id),
                     side["phrases"].get(t.id), side["boxes"].get(t.id))
            internal.append([dataclasses.replace(w, id=f"u{stable_hash(w.tokens, *extra, n=20)}", labels=list(w.labels))
                             for w in wins])
        flat = [(t, u) for (t, _), us in zip(parts, internal) for u in us]
        unique = list({u.id: u for _, u in flat}.values())      # the same tweet twice is computed once
        by_iid = {name: {u.id: side[name][t.id] for t, u in flat if t.id in side[name]}
                  for name in ("caption", "aux", "phrases", "boxes")}
        ds = Dataset(name=self.data_cfg.dataset, data_dir=self.cache_root, image_dir=None, splits={"test": unique})
        model_cfg = self.model_cfg
        source = None
        if model_cfg.arch == "tvomner" and model_cfg.use_candidates and model_cfg.use_knowledge:
            if aux is not None:
                source = TweetFileSource.from_texts(by_iid["aux"], name=f"input-{stable_hash(by_iid['aux'])}") \
                    if by_iid["aux"] else None
                if source is None:
                    model_cfg = dataclasses.replace(model_cfg, use_knowledge=False)
            elif res.knowledge is None:
                model_cfg = dataclasses.replace(model_cfg, use_knowledge=False)
        if model_cfg.arch == "tvomner" and self.tagger is None:
            model_cfg = dataclasses.replace(model_cfg, use_candidates=False)
        vis_side = SideInputs(captions=by_iid["caption"], phrases=by_iid["phrases"] or None,
                              phrases_file="input", boxes=by_iid["boxes"] or None)
        if model_cfg.visual != "none" and not any(u.image_path for u in unique) and not by_iid["caption"]:
            self.note("this checkpoint was trained with images (or captions), and none were given "
                      "(image_dir / captions): the model sees the text only")
        vres = dataclasses.replace(res, dataset_cache=res.dataset_cache / "visual" / stable_hash(
            str(Path(image_dir).resolve()) if image_dir else None))
        try:
            prepared = self.prepare(ds, model_cfg, res, vres, vis_side, source)
        except ResourceMissing as e:
            if model_cfg.visual != "optimized" or model_cfg.object_source == "none":
                raise
            msg = str(e)
            for t, u in flat:                   # the user's ids, not the internal ones
                msg = msg.replace(u.id, t.id)
            self.note(f"object features left out for these tweets (the checkpoint uses object_source="
                      f"{model_cfg.object_source!r}): {msg}")
            prepared = self.prepare(ds, dataclasses.replace(model_cfg, object_source="none"), res, vres, vis_side,
                                    source)
        by_id = dict(zip((u.id for u in unique), prepared.examples["test"]))
        aug = prepared.meta.get("_augmentations", {})
        examples = [by_id[u.id] for _, u in flat]
        pred, diag = self.run(examples, prepared.collate, batch_size, diagnostics)
        # the same examples with side inputs left out; leaving out an input the model does not read
        # changes nothing, so each distinct set of inputs the model loses is tagged once
        others, runs = {}, {(False, False): pred}
        reads = (model_cfg.reads_knowledge is not None, model_cfg.reads_visual)
        for name in sorted(set(left_out) | ({"neither"} if without_side_inputs else set())):
            lost = (LEFT_OUT[name][0] and reads[0], LEFT_OUT[name][1] and reads[1])
            if lost not in runs:
                runs[lost] = self.run(*withheld(prepared, "test", knowledge=lost[0], visual=lost[1],
                                                examples=examples), batch_size, False)[0]
            others[name] = runs[lost]
        out, k = [], 0
        for (t, _), us in zip(parts, internal):
            labels, cands, ds_ = [], [], []
            other_labels: dict[str, list[str]] = {name: [] for name in others}
            for u in us:
                labels += pred[k]
                for name, o in others.items():
                    other_labels[name] += o[k]
                ds_.append(diag[k])
                cands += [{"text": c, "knowledge": kn} for c, kn in aug.get(u.id, [])]
                k += 1
            r = {"id": t.id, "tokens": t.tokens, "labels": labels,
                 "entities": entities(t.tokens, labels)}
            if model_cfg.arch == "tvomner":
                r["candidates"] = cands
                r["side_inputs"] = {
                    "knowledge": ([sum(bool(c["knowledge"]) for c in cands), len(cands)]
                                  if self.model_cfg.reads_knowledge else None),
                    "image": None if model_cfg.visual == "none" else t.image_path is not None,
                    "caption": None if model_cfg.visual == "none" else t.id in side["caption"]}
            if without_side_inputs:
                bare = other_labels["neither"]
                r["without_side_inputs"] = {"labels": bare, "entities": entities(t.tokens, bare)}
            if left_out:
                r["left_out"] = {name: other_labels[name] for name in left_out}
            if t.id in self.knowledge_got:
                r["knowledge_note"] = self.knowledge_got[t.id]
            if diagnostics and ds_ and ds_[0]:
                r.update(ds_[0] if len(ds_) == 1 else {"windows": ds_})
            out.append(r)
        return out

    def prepare(self, ds, model_cfg, res, vres, side, source):
        """The one input builder, with the checkpoint's tagger and meta; visual caches apart."""
        return prepare_data(ds, self.data_cfg, model_cfg, res, side=side, tagger=self.tagger, meta=self.meta,
                            knowledge=source, visual_res=vres)

    def run(self, examples: list[dict], collate, batch_size: int, diagnostics: bool):
        """Viterbi labels and, for a multimodal model, the gate and ω of every example, from one
        forward pass per batch (batches in input order)."""
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
                    if not torch.isfinite(em["emissions"]).all():
                        bad = (~torch.isfinite(em["emissions"])).flatten(1).any(1).nonzero()[0, 0].item()
                        raise ValueError(f"tweet {batch['ids'][bad]}: the model's output is not finite "
                                         f"(damaged weights?)")
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
