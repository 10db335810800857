"""The LLM stage's prompts (Appendix A, verbatim) and the reading of its answers: pure functions,
no client (the requests: ``tvolib.vfo.llm``).

``caption_messages`` / ``phrase_messages`` build the chat messages; ``parse_caption`` /
``parse_phrases`` turn an answer into a caption or a list of phrases, raising ``ParseError`` (shared
with the other LLM stages: ``tvolib.llm_client``) when an answer says nothing usable (the caller asks
again).
"""
from __future__ import annotations

import ast
import base64
import io
import json
import re

from PIL import Image

from ..cache import stable_hash
from ..llm_client import ParseError

# ---------------------------------------------------------------- Appendix A prompts (verbatim)
# "#I is the visual embeddings of the given image": over the chat API the image is sent as a data
# URL content part placed between <Img> and </Img>.
CAPTION_PROMPT = ("You are an AI assistant that excels at image captioning. <Img> #I </Img> "
                  "describe this picture in detail.")

ENTITY_OBJECT_PROMPT = """Given a sentence and the description of its corresponding image. Text content and image content may be relevant or irrelevant. Output the entities along with their attribute on the picture that may be relevant to entities appearing in the text. Do not output entities in the image description that are not relevant to the text.

Note: Output common objects and group them into general categories that are not duplicated, merging essentially similar entities. Avoid extracting abstract or non-specific entities.

Examples:

Text: Some used to say Steph Curry was "too small" and "too frail" to play in the NBA. They were wrong.

Caption: "The image shows a basketball player wearing a white Golden State Warriors jersey with blue and yellow accents. The jersey prominently displays the number 30 and the team logo, a bridge enclosed in a circle. The player is clenching their fists in front of their chest, showcasing muscular arms. The background is a blurred arena filled with fans and ambient lights, hinting at a game or event in progress. The jersey also features an NBA logo near the left shoulder. The player's confident stance suggests they may have just made a significant play".

Outputs: ["basketball player celebrating a basket", "'Golden State Warriors' logo on the jersey", "NBA logo on the jersey"]

Text: #T
Caption: #C
Outputs:"""

CAPTION_PROMPT_HASH = stable_hash(CAPTION_PROMPT)
ENTITY_OBJECT_PROMPT_HASH = stable_hash(ENTITY_OBJECT_PROMPT)


def entity_object_prompt(text: str, caption: str) -> str:
    """Appendix A's entity-object prompt with ``#T`` (tweet) and ``#C`` (caption) filled in."""
    return ENTITY_OBJECT_PROMPT.replace("#T", text).replace("#C", caption)


def image_data_url(image_or_path, fmt: str = "PNG", max_side: int = 1024) -> str:
    """An image (PIL or path) as a ``data:image/...;base64,`` URL (downscaled to ``max_side``)."""
    im = image_or_path if isinstance(image_or_path, Image.Image) else Image.open(image_or_path)
    im = im.convert("RGB")
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


def caption_messages(image_or_path) -> list[dict]:
    before, after = CAPTION_PROMPT.split("#I")
    return [{"role": "user", "content": [
        {"type": "text", "text": before.rstrip()},
        {"type": "image_url", "image_url": {"url": image_data_url(image_or_path)}},
        {"type": "text", "text": after.strip()}]}]


def phrase_messages(text: str, caption: str) -> list[dict]:
    return [{"role": "user", "content": entity_object_prompt(text, caption)}]


# ---------------------------------------------------------------- parsing
_EMPTY_ANSWERS = re.compile(r"^\W*(none|nothing|no (relevant )?(entities|objects)( found)?|n/?a|"
                            r"empty( list)?|\[\s*\])\W*$", re.I)
_BULLET = re.compile(r"^\s*(?:[-*•‣◦]|\d+[.)]|\(\d+\))\s+(.+?)\s*$")


def _clean(item) -> list[str]:
    if isinstance(item, str):
        s = item.strip().strip('"“”').strip().rstrip(".,;").strip()
        return [s] if s else []
    if isinstance(item, dict):   # {"entity": ..., "attribute": ...} and similar
        vals = [v for k, v in item.items() if isinstance(v, str) and v.strip()]
        return [" ".join(v.strip() for v in vals)] if vals else []
    if isinstance(item, (list, tuple)):
        return [s for x in item for s in _clean(x)]
    return []


def _try_list(s: str):
    for loader in (json.loads, ast.literal_eval):
        try:
            v = loader(s)
        except Exception:
            continue
        if isinstance(v, (list, tuple)):
            return list(v)
        if isinstance(v, dict):   # {"outputs": [...]} / {"entities": [...]}
            for val in v.values():
                if isinstance(val, list):
                    return val
    return None


def parse_phrases(answer: str) -> list[str]:
    """The phrases of an LLM answer: a JSON list, a Python list, a fenced code block, a JSON object
    holding a list, bullets or numbered lines, or quoted strings. ``[]`` / "None" is a valid answer
    (the image is unrelated to the text). Raises ``ParseError`` when nothing is recognisable."""
    if answer is None:
        raise ParseError("empty answer")
    s = re.sub(r"<think>.*?</think>", "", str(answer), flags=re.S).strip()
    if "Outputs:" in s:
        s = s.rsplit("Outputs:", 1)[1].strip()
    fence = re.search(r"```(?:json|python)?\s*(.*?)```", s, flags=re.S)
    if fence:
        s = fence.group(1).strip()
    if not s:
        raise ParseError("empty answer")
    if _EMPTY_ANSWERS.match(s):
        return []
    out = None
    v = _try_list(s)
    if v is not None:
        out = v
    else:   # a list somewhere inside prose: from each '[' to each later ']' (longest first)
        starts = [m.start() for m in re.finditer(r"[\[{]", s)]
        ends = [m.end() for m in re.finditer(r"[\]}]", s)][::-1]
        for i in starts:
            for j in ends:
                if j > i and (v := _try_list(s[i:j])) is not None:
                    out = v
                    break
            if out is not None:
                break
    if out is None:
        bullets = [m.group(1) for line in s.splitlines() if (m := _BULLET.match(line))]
        if bullets:
            out = bullets
    if out is None:
        quoted = re.findall(r'"([^"\n]{2,200})"', s)
        if quoted:
            out = quoted
    if out is None:
        raise ParseError(f"no list in answer: {s[:120]!r}")
    seen, phrases = set(), []
    for p in _clean(out):
        p = " ".join(p.split())[:200]
        if p and p.lower() not in seen:
            seen.add(p.lower())
            phrases.append(p)
    return phrases


def parse_caption(answer: str) -> str:
    s = re.sub(r"<think>.*?</think>", "", str(answer or ""), flags=re.S).strip()
    if not s:
        raise ParseError("empty caption")
    return " ".join(s.split())
