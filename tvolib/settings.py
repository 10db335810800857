"""Experiment settings, each named by what the model sees, in one place.

A setting is a set of ``ModelConfig`` overrides (and, for one control, a transform of the knowledge
text). ``configs()`` turns (dataset spec, setting, seed, recipe) into the three configs of
``tvolib.train.train``; ``identical_settings()`` says which settings of a list get the same inputs
and the same model on a dataset, so a table shows them as one instead of running them twice.

Base settings:

=======================  ========================================================================
``text-only``            the tweet alone through the encoder-BiLSTM-CRF: no candidates, no
                         knowledge, no visual part, no CFF (``ModelConfig.ABLATIONS["text-only"]``)
``tvomner-wiki``         the paper's pipeline: candidates + knowledge from the local
                         Wikipedia/WordNet base (``knowledge_source="local"``) + VFO + CFF
``tvomner-live-wiki``    the same with knowledge from live Wikipedia, as in the paper
                         (``knowledge_source="wikipedia"``: the MediaWiki API, cached)
``tvomner+pgim``         the same with knowledge from the per-tweet PGIM auxiliary texts
                         (``knowledge_source="tweet_files"``): ChatGPT-written texts that also
                         type most entities, e.g. "Kawhi Leonard (person/player)"
``tvomner+pgim-untyped`` the same texts with the parenthesised type labels of their entity list
                         removed (:func:`strip_type_labels`): separates the descriptions from the
                         entity typing
=======================  ========================================================================

Ablations (Table 2) are relative to a base and named ``<base>.<ablation>``, e.g.
``tvomner+pgim.wo-VAE``: the base's overrides, then ``ModelConfig.ABLATIONS[label]``.

=============  ===========  ====================================================================
id             label        overrides (``ModelConfig.ABLATIONS``)
=============  ===========  ====================================================================
``wo-OT``      w/o O-T      no candidates, no knowledge (visual side kept)
``wo-Wiki``    w/o Wiki     candidates without their knowledge
``wo-LLMs``    w/o LLMs     ``object_source="random"``: random regions instead of LLM phrases
``wo-VAE``     w/o VAE      ``use_vae=False``
``wo-OV``      w/o O-V      ``visual="global"``
``wo-OTV``     w/o O-T-V    no candidates, no knowledge, ``visual="global"``
``no-visual``  no-visual    ``visual="none"``: the base's text side, no visual part, no CFF
=============  ===========  ====================================================================
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from .cache import atomic_write_json, atomic_write_text
from .config import DataConfig, ModelConfig, TrainConfig
from .io import DataFormatError, iter_jsonl, read_jsonl
from .data import file_sha256
from .resources import knowledge_file
from .vfo.pipeline import CAPTION_PHRASES

# ModelConfig fields that settings decide: a params file may not override them (the run would
# carry a setting's name but not its meaning).
SETTING_FIELDS = ("use_candidates", "use_knowledge", "knowledge_source", "visual", "use_vae", "object_source")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Setting:
    name: str
    summary: str                                    # what the model sees, in words
    model: dict = field(default_factory=dict)       # ModelConfig overrides
    knowledge_transform: str | None = None          # None | "untyped" (strip_type_labels)
    base: str | None = None                         # ablations: the setting they are relative to
    label: str | None = None                        # ablations: Table 2 label ("w/o VAE")


BASES = {
    "text-only": Setting("text-only", "tweet alone: no candidates, no knowledge, no visual part, no CFF",
                         dict(ModelConfig.ABLATIONS["text-only"])),
    "tvomner-wiki": Setting("tvomner-wiki", "paper pipeline: candidates + local Wikipedia/WordNet knowledge "
                            "+ VFO + CFF", {"knowledge_source": "local"}),
    "tvomner-live-wiki": Setting("tvomner-live-wiki", "paper pipeline: candidates + live Wikipedia knowledge "
                                 "+ VFO + CFF", {"knowledge_source": "wikipedia"}),
    "tvomner+pgim": Setting("tvomner+pgim", "candidates + per-tweet PGIM auxiliary texts (ChatGPT, typed "
                            "entity list) + VFO + CFF", {"knowledge_source": "tweet_files"}),
    "tvomner+pgim-untyped": Setting("tvomner+pgim-untyped", "as tvomner+pgim, the texts' parenthesised type "
                                    "labels removed", {"knowledge_source": "tweet_files"}, "untyped"),
}
ABLATION_IDS = {"wo-OT": "w/o O-T", "wo-Wiki": "w/o Wiki", "wo-LLMs": "w/o LLMs", "wo-VAE": "w/o VAE",
                "wo-OV": "w/o O-V", "wo-OTV": "w/o O-T-V", "no-visual": "no-visual"}


def get_setting(name: str) -> Setting:
    """A base setting, or ``<base>.<ablation id>`` (e.g. ``tvomner+pgim.wo-VAE``)."""
    if name in BASES:
        return BASES[name]
    base, _, abl = name.partition(".")
    if base in BASES and abl in ABLATION_IDS and base != "text-only":
        b, label = BASES[base], ABLATION_IDS[abl]
        ov = ModelConfig.ABLATIONS[label]
        return Setting(name, f"{base} {label}: {ov}", {**b.model, **ov}, b.knowledge_transform, base, label)
    raise KeyError(f"unknown setting {name!r}: a base {sorted(BASES)} (not text-only) or "
                   f"'<base>.<ablation>' with an ablation of {sorted(ABLATION_IDS)}")


def all_settings() -> list[str]:
    """Every base and every ablation of the three TVOMNER bases."""
    return list(BASES) + [f"{b}.{a}" for b in BASES if b != "text-only" for a in ABLATION_IDS]


# ----------------------------------------------------------------------------------------------
# the untyped control: a transform of the knowledge text

_REASONING = re.compile(r"reasoning\s*:", re.I)
_PAREN = re.compile(r"[ \t]*\([^()]*\)")


def strip_type_labels(text: str) -> str:
    """The PGIM text without the type labels of its entity list.

    A PGIM text is ``Named entities: 1. Kawhi Leonard (person/player) 2. NBA (league/organization)
    ... Reasoning: <prose>``. Every parenthesised group before the first ``Reasoning:`` (the whole
    text when there is none) is removed with the blanks before it, innermost groups first; a
    removed group followed directly by a letter leaves one space, so words do not merge. The
    reasoning prose is kept as it is: it describes the entities in words, which is the part this
    control keeps. ``"1. Blackburn Festival (event/festival)2. 2017 (year)Reasoning: ..."`` becomes
    ``"1. Blackburn Festival2. 2017 Reasoning: ..."``.
    """
    m = _REASONING.search(text)
    head, tail = (text[:m.start()], text[m.start():]) if m else (text, "")
    while True:
        new = _PAREN.sub(lambda g: "\0", head)
        if new == head:
            break
        head = new
        # a removed group followed by a letter or another group's marker keeps words apart
        head = re.sub(r"\0+(?=[A-Za-z])", " ", head).replace("\0", "")
    if tail and head and not head[-1].isspace():
        head += " "
    return head + tail


def untyped_knowledge_file(src: str | Path, out_dir: str | Path) -> Path:
    """``<out_dir>/<stem>.untyped.jsonl``: ``src`` (PGIM layout, JSONL ``{split, imgid, aux}``) with
    :func:`strip_type_labels` applied to every ``aux``. Written once per content of ``src`` (a
    side file records its sha256); the new name keeps the knowledge cache from mixing the two."""
    src, out_dir = Path(src), Path(out_dir)
    out = out_dir / f"{src.stem}.untyped.jsonl"
    side = out.with_suffix(".source.json")
    sha = file_sha256(src)
    if out.exists() and side.exists() and json.loads(side.read_text()).get("sha256") == sha:
        return out
    lines = []
    for i, rec in iter_jsonl(src):
        if not isinstance(rec.get("aux"), str):
            raise DataFormatError(src, i, "expected a JSON object with a string 'aux'")
        lines.append(json.dumps({**rec, "aux": strip_type_labels(rec["aux"])}, ensure_ascii=False))
    atomic_write_text(out, "\n".join(lines) + "\n")
    atomic_write_json(side, {"source": str(src), "sha256": sha, "transform": "strip_type_labels"})
    return out


def knowledge_has_type_labels(path: str | Path) -> bool:
    """Does :func:`strip_type_labels` change any text of this knowledge file?"""
    for rec in read_jsonl(path):
        aux = rec.get("aux") or ""
        if strip_type_labels(aux) != aux:
            return True
    return False


# ----------------------------------------------------------------------------------------------
# configs of a run


def data_config(dataset: str, spec: dict | None = None, **extra) -> DataConfig:
    """``DataConfig`` of a dataset: its name and the params file's fields for it (``{}``: the
    embedded sample, the defaults)."""
    kw = {**(spec or {}), **extra}
    _check_fields(DataConfig, kw, f"dataset {dataset!r}")
    return DataConfig(dataset=dataset, **kw)


def split_recipe(recipe: dict) -> tuple[dict, dict]:
    """A recipe's keys as (DataConfig overrides, TrainConfig overrides): ``max_length`` and the
    ``max_*_samples`` caps belong to the data, everything else to training."""
    data_names = {f.name for f in fields(DataConfig)}
    train_names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(k for k in recipe if k not in data_names | train_names)
    if unknown:
        raise ValueError(f"recipe: unknown field(s) {unknown}; TrainConfig has {sorted(train_names)}, "
                         f"and max_length / max_train_samples / max_eval_samples go to DataConfig")
    return ({k: v for k, v in recipe.items() if k in data_names},
            {k: v for k, v in recipe.items() if k in train_names and k not in data_names})


def _check_fields(cls, kw: dict, where: str) -> None:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(kw) - names)
    if unknown:
        raise ValueError(f"{where}: unknown {cls.__name__} field(s) {unknown}")


def model_config(setting: str, model: dict | None = None) -> ModelConfig:
    """``ModelConfig`` of a setting: the params file's ``model`` fields (encoder, sizes...), then the
    setting's overrides. A ``model`` field that a setting decides is refused."""
    model = dict(model or {})
    _check_fields(ModelConfig, model, "model")
    taken = sorted(set(model) & set(SETTING_FIELDS))
    if taken:
        raise ValueError(f"model: {taken} are decided by the setting (choose another setting instead)")
    return dataclasses.replace(ModelConfig(**model), **get_setting(setting).model)


def setting_recipe(setting: str, recipe: dict | None, model: dict | None = None) -> dict:
    """``recipe`` without the side-input dropout that ``setting`` has nothing to drop from (no
    knowledge, no visual input): such a setting trains the same either way, so its runs are the
    same runs as without dropout (and a batch reuses them)."""
    recipe, cfg = dict(recipe or {}), model_config(setting, model)
    if cfg.reads_knowledge is None:
        recipe.pop("knowledge_dropout", None)
    if not cfg.reads_visual:
        recipe.pop("visual_dropout", None)
    return recipe


def configs(dataset: str, spec: dict | None, setting: str, seed: int, recipe: dict | None = None,
            model: dict | None = None, output_dir: str = "runs/run", cache_dir: str = "cache",
            num_threads: int | None = 1, materialize: bool = False) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    """The three configs of one run. With ``materialize``, the untyped control's knowledge file is
    written (``<dataset_cache>/knowledge-untyped/``) and ``knowledge_file`` points at it; without,
    only its path is filled in (same configs, nothing written)."""
    data_kw, train_kw = split_recipe(recipe or {})
    data_cfg = data_config(dataset, spec, cache_dir=cache_dir, **data_kw)
    model_cfg = model_config(setting, model)
    if get_setting(setting).knowledge_transform == "untyped":
        src = knowledge_file(data_cfg)
        out_dir = data_cfg.dataset_cache / "knowledge-untyped"
        path = untyped_knowledge_file(src, out_dir) if materialize else out_dir / f"{Path(src).stem}.untyped.jsonl"
        data_cfg = dataclasses.replace(data_cfg, knowledge_file=str(path))
    train_cfg = TrainConfig(**{"output_dir": output_dir, "seed": seed, "num_threads": num_threads,
                               "progress": False, "resume": True, **train_kw})
    return data_cfg, model_cfg, train_cfg


# ----------------------------------------------------------------------------------------------
# settings identical by construction on a dataset


@dataclass
class DatasetFacts:
    has_images: bool            # an image folder with at least one image
    has_phrases: bool           # LLM phrases (file or cache) that stand in for object features
    knowledge_typed: bool | None  # the per-tweet knowledge has labels to strip (None: no such file)
    phrases_from: str = "llm"   # where the phrases come from: "llm" (file or cache) | "caption-noun-chunks"

    def describe(self) -> str:
        phrases = "no" if not self.has_phrases else (
            "the caption's noun chunks (offline stand-in)" if self.phrases_from != "llm" else "yes")
        return (f"images: {'yes' if self.has_images else 'no'}; LLM phrases: {phrases}; "
                f"typed per-tweet knowledge: {'n/a' if self.knowledge_typed is None else 'yes' if self.knowledge_typed else 'no'}")


def dataset_facts(data_cfg: DataConfig) -> DatasetFacts:
    img = Path(data_cfg.image_dir) if data_cfg.image_dir else None
    has_images = bool(img and img.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in img.iterdir()))
    cache = data_cfg.dataset_cache / "phrases.jsonl"
    has_phrases = bool((data_cfg.phrases == CAPTION_PHRASES and data_cfg.captions)
                       or (data_cfg.phrases and Path(data_cfg.phrases).is_file())
                       or (cache.is_file() and cache.stat().st_size > 0))
    typed = None
    try:
        typed = knowledge_has_type_labels(knowledge_file(data_cfg))
    except Exception:       # no per-tweet knowledge for this dataset: settings using it fail on their own
        pass
    return DatasetFacts(has_images, has_phrases, typed,
                        CAPTION_PHRASES if data_cfg.phrases == CAPTION_PHRASES else "llm")


def effective(setting: str, facts: DatasetFacts, model: dict | None = None) -> tuple:
    """What a setting's run gets on a dataset with these facts, with every field that cannot act
    blanked: two settings with the same value train the same model on the same inputs."""
    s = get_setting(setting)
    m = dataclasses.asdict(model_config(setting, model))
    transform = s.knowledge_transform
    if not m["use_candidates"]:
        m["use_knowledge"] = False
    if not m["use_knowledge"]:
        m["knowledge_source"] = None
    if m["knowledge_source"] != "tweet_files" or facts.knowledge_typed is False:
        transform = None                              # nothing to strip
    blank = []
    if m["visual"] == "none":                         # no VFO, no CFF
        blank += ["use_vae", "object_source", "n_random_objects", "image_encoder", "image_weights", "num_heads",
                  "cross_layers", "latent_dim", "vae_weight", "cross_memory", "gate_init"]
    elif m["visual"] == "global":                     # V = v_glob: no VAE, no objects
        blank += ["use_vae", "object_source", "n_random_objects", "latent_dim", "vae_weight"]
    else:
        if not m["use_vae"]:
            blank += ["latent_dim", "vae_weight"]
        # random regions need images; LLM phrases need images or a phrases stand-in
        obj_masked = m["object_source"] == "none" or (
            not facts.has_images and (m["object_source"] == "random" or not facts.has_phrases))
        if obj_masked and m["object_source"] in ("llm", "random"):
            m["object_source"] = "masked"
            blank.append("n_random_objects")
    if m.get("arch", "tvomner") == "tvomner":
        blank += ["word_init", "word_dim", "char_dim", "char_filters"]
    for k in blank:
        m[k] = None
    return tuple(sorted(m.items())) + (("knowledge_transform", transform),)


def identical_settings(settings: list[str], facts: DatasetFacts, model: dict | None = None) -> dict[str, str]:
    """``{setting: the earlier setting of the list it is identical to}`` on a dataset with these
    facts (settings that are their own representative are left out)."""
    first: dict[tuple, str] = {}
    same = {}
    for s in settings:
        key = effective(s, facts, model)
        if key in first:
            same[s] = first[key]
        else:
            first[key] = s
    return same


def why_identical(a: str, b: str, facts: DatasetFacts) -> str:
    """One line on why setting ``a`` equals ``b`` on this dataset."""
    sa, sb = get_setting(a), get_setting(b)
    diff = sorted(k for k in set(sa.model) | set(sb.model) if sa.model.get(k) != sb.model.get(k))
    if sa.knowledge_transform != sb.knowledge_transform:
        diff.append("knowledge_transform")
    reasons = []
    if "object_source" in diff:
        reasons.append("no images and no LLM phrases: object features are masked either way")
    if "knowledge_transform" in diff:
        reasons.append("the knowledge texts carry no parenthesised type labels")
    return f"= {b} ({'; '.join(reasons) or 'same inputs and model: ' + ', '.join(diff)})"
