"""Everything a run reads beside its configs, resolved once at the edge.

The CLI, a notebook, the batch runner and ``Predictor`` call ``resolve(data_cfg, model_cfg)``; the
stages below receive the resulting ``Resources`` and never read the environment or the working
directory themselves (``tvolib.weights``, where weights are found, reads ``TVOMNER_HOME``). Only the resources the model actually reads are resolved, and a missing one
is a ``ResourceMissing`` that says how to provide it, before any slow work starts.

=============================  ========================================================================
``TVOMNER_DATA``               the data root (default: ``data/`` in the repository, git-ignored; ``make
                               data`` links it to a folder of the benchmark files where one exists)
``TVOMNER_KB_DIR``             files of the local knowledge base (default ``<data root>/kb``)
``TVOMNER_LLM_KNOWLEDGE_DIR``  per-tweet knowledge files ``pgim_<dataset>.jsonl`` (default
                               ``<data root>/llm_knowledge``)
``TVOMNER_WIKI_API_URL``,      live Wikipedia (another MediaWiki), or its cache only
``TVOMNER_WIKI_OFFLINE=1``
``TVOMNER_LLM_*``,             the OpenAI-compatible endpoint of the Appendix A phrases (the key is read
``OPENAI_API_KEY``             here and never recorded)
``TVOMNER_GROUNDING_*``        a local GroundingDINO folder and its thresholds
``TVOMNER_HOME``               per-user folder: unpacked weights, prediction caches (``~/.cache/tvomner``)
``MLFLOW_TRACKING_URI``,       where training runs are tracked (``tvolib.tracking``: default
``MLFLOW_EXPERIMENT_NAME``,    ``sqlite:///<repository>/mlflow.db``); ``TVOMNER_TRACKING=0``: not at all
``TVOMNER_TRACKING``
=============================  ========================================================================

``Resources.describe()`` is what ``config.json`` and every checkpoint record under ``"resources"``:
the stage settings, each file by path and sha256, endpoints without keys.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from .config import DataConfig, ModelConfig
from .data import file_sha256
from .sample import SAMPLE_DIR
from .tfo.knowledge import WikipediaConfig
from .tfo.relevance import RelevanceConfig
from .tfo.tagger import TaggerConfig
from .tracking import TrackingConfig, tracking_config
from .vfo.grounding import GroundingConfig
from .vfo.llm import LLMConfig
from .weights import ResourceMissing

REPO = Path(__file__).resolve().parent.parent
KB_EXTENSIONS = (".json", ".jsonl", ".tsv", ".xml", ".xml.gz", ".xml.bz2")
KNOWLEDGE_SOURCES = ("local", "wikipedia", "tweet_files")


def data_root(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("TVOMNER_DATA") or REPO / "data")


def is_sample(data_cfg: DataConfig) -> bool:
    try:
        return Path(data_cfg.data_dir).resolve().is_relative_to(SAMPLE_DIR.resolve())
    except OSError:
        return False


@dataclass(frozen=True)
class Resources:
    """What a run reads, as absolute paths and small configs (see the module docstring)."""

    dataset_cache: Path                           # <cache_dir>/<dataset>: the stage caches
    cache_root: Path                              # <cache_dir>: caches shared by datasets (KB, Wikipedia)
    tagger: TaggerConfig
    relevance: RelevanceConfig
    knowledge: str | None = None                  # the source the model reads (None: no knowledge)
    kb_inputs: tuple[Path, ...] = ()              # files the local base is built from
    kb: Path | None = None                        # the local base (.sqlite), built from kb_inputs if given
    knowledge_file: Path | None = None            # per-tweet knowledge (PGIM layout)
    wikipedia: WikipediaConfig | None = None
    wiki_offline: bool = False
    wiki_cache: Path | None = None
    llm: LLMConfig = field(default_factory=LLMConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)   # where the run is logged (not recorded)

    def describe(self) -> dict:
        """The ``"resources"`` record of ``config.json`` and checkpoints (no keys)."""
        llm = asdict(self.llm)
        llm["api_key_set"] = bool(llm.pop("api_key", None))
        knowledge = {"source": self.knowledge}
        if self.knowledge == "local":
            knowledge["kb"] = str(self.kb)
            knowledge["kb_inputs"] = {str(p): file_sha256(p) for p in self.kb_inputs}
        elif self.knowledge == "tweet_files":
            knowledge["knowledge_file"] = {str(self.knowledge_file): file_sha256(self.knowledge_file)}
        elif self.knowledge == "wikipedia":
            knowledge["wikipedia"] = {**asdict(self.wikipedia), "offline": self.wiki_offline}
        return {"tagger": asdict(self.tagger), "relevance": asdict(self.relevance), "knowledge": knowledge,
                "llm": llm, "grounding": asdict(self.grounding)}


def local_kb(data_cfg: DataConfig, env: Mapping[str, str]) -> tuple[tuple[Path, ...], Path]:
    """(input files, the .sqlite base) of the local knowledge base."""
    cache = Path(data_cfg.cache_dir).resolve()
    if data_cfg.kb:
        if str(data_cfg.kb).endswith((".sqlite", ".db")):
            kb = Path(data_cfg.kb).resolve()
            if not kb.exists():
                raise ResourceMissing(f"knowledge base {kb} not found (DataConfig.kb)")
            return (), kb
        files = tuple(Path(p).resolve() for p in str(data_cfg.kb).split(os.pathsep) if p)
        missing = [str(p) for p in files if not p.exists()]
        if missing:
            raise ResourceMissing(f"knowledge base input(s) not found: {missing} (DataConfig.kb)")
        return files, cache / data_cfg.dataset / "kb.sqlite"
    if is_sample(data_cfg):
        return (SAMPLE_DIR / "kb.jsonl",), cache / data_cfg.dataset / "kb.sqlite"
    kb_dir = Path(env.get("TVOMNER_KB_DIR") or data_root(env) / "kb")
    files = tuple(sorted(p.resolve() for p in kb_dir.glob("*") if p.name.lower().endswith(KB_EXTENSIONS))) \
        if kb_dir.is_dir() else ()
    if not files:
        raise ResourceMissing(f"no local knowledge base: set DataConfig.kb (a .sqlite file or JSON/JSONL/TSV/"
                              f"abstract-dump inputs), TVOMNER_KB_DIR, or TVOMNER_DATA (a data root with kb/; "
                              f"{kb_dir} has no such files)")
    return files, cache / "kb" / "default.sqlite"


def knowledge_file(data_cfg: DataConfig, env: Mapping[str, str] | None = None) -> Path:
    """The per-tweet knowledge file of a dataset: ``DataConfig.knowledge_file``, the sample's, or
    ``pgim_<dataset>.jsonl`` in the knowledge folder."""
    env = os.environ if env is None else env
    if data_cfg.knowledge_file:
        p = Path(data_cfg.knowledge_file)
    elif is_sample(data_cfg):
        p = SAMPLE_DIR / "llm_knowledge.jsonl"
    else:
        d = Path(env.get("TVOMNER_LLM_KNOWLEDGE_DIR") or data_root(env) / "llm_knowledge")
        p = d / f"pgim_{data_cfg.dataset}.jsonl"
    if not p.exists():
        raise ResourceMissing(f"no per-tweet knowledge file for dataset {data_cfg.dataset!r} ({p}): set "
                              f"DataConfig.knowledge_file (JSONL with split, imgid, aux), TVOMNER_LLM_KNOWLEDGE_DIR "
                              f"or TVOMNER_DATA")
    return p.resolve()


def resolve(data_cfg: DataConfig, model_cfg: ModelConfig, env: Mapping[str, str] | None = None) -> Resources:
    """The resources of a run with these configs (only those the model reads)."""
    env = os.environ if env is None else env
    source = model_cfg.reads_knowledge
    if source is not None and source not in KNOWLEDGE_SOURCES:
        raise ValueError(f"unknown knowledge_source {source!r}; choose from {KNOWLEDGE_SOURCES}")
    cache = Path(data_cfg.cache_dir).resolve()
    kw: dict = {}
    if source == "local":
        kw["kb_inputs"], kw["kb"] = local_kb(data_cfg, env)
    elif source == "tweet_files":
        kw["knowledge_file"] = knowledge_file(data_cfg, env)
    elif source == "wikipedia":
        kw["wikipedia"] = WikipediaConfig(api_url=env.get("TVOMNER_WIKI_API_URL") or WikipediaConfig.api_url)
        kw["wiki_offline"] = env.get("TVOMNER_WIKI_OFFLINE", "") == "1"
        kw["wiki_cache"] = cache / "wikipedia.jsonl"
    return Resources(dataset_cache=cache / data_cfg.dataset, cache_root=cache,
                     tagger=TaggerConfig(encoder=model_cfg.text_encoder), relevance=RelevanceConfig(),
                     knowledge=source, llm=LLMConfig.from_env(env), grounding=GroundingConfig.from_env(env),
                     tracking=tracking_config(env), **kw)


def with_cache(res: Resources, cache_root: Path, dataset: str) -> Resources:
    """The same resources with the stage caches in another folder (prediction)."""
    return dataclasses.replace(res, cache_root=cache_root, dataset_cache=cache_root / dataset,
                               wiki_cache=cache_root / "wikipedia.jsonl" if res.wiki_cache else None)


def for_checkpoint(model_cfg: ModelConfig, info: dict, meta: dict, cache: Path, kb: str | None = None,
                   env: Mapping[str, str] | None = None) -> tuple[Resources, list[str]]:
    """The resources of a checkpoint's model (``model_cfg``) for new tweets, with the caches in ``cache``: its own
    local base (or ``kb``, an explicit choice that is noted), the knowledge file it was trained with
    when that file is still where it was with the same content (any other is an error naming it),
    live Wikipedia as configured here. Returns (resources, notes for the user)."""
    env = os.environ if env is None else env
    recorded = ((info.get("resources") or {}).get("knowledge") or {})
    source, notes, kw = model_cfg.reads_knowledge, [], {}
    if source == "local":
        own = Path(meta["kb_path"]) if meta.get("kb_path") else None
        if kb:
            kw["kb"] = Path(kb).resolve()
            notes.append(f"knowledge from {kw['kb']}, not the base this checkpoint was trained with")
        elif own is not None:
            kw["kb"] = own
        else:
            source = None
            notes.append("this checkpoint carries no knowledge base (kb.sqlite): the tweets go on without knowledge; "
                         "pass kb=<a .sqlite base> to give them one")
        if kw.get("kb") is not None and not kw["kb"].exists():
            raise ResourceMissing(f"knowledge base {kw['kb']} not found")
    elif source == "tweet_files":
        files = recorded.get("knowledge_file") or {}
        for path, sha in files.items():
            p = Path(path)
            if p.exists():
                if file_sha256(p) != sha:
                    raise ResourceMissing(f"{p}: the per-tweet knowledge file this checkpoint was trained with has "
                                          f"changed (sha256 differs); pass knowledge_file explicitly to use it")
                kw["knowledge_file"] = p
    elif source == "wikipedia":
        kw["wikipedia"] = WikipediaConfig(api_url=env.get("TVOMNER_WIKI_API_URL") or WikipediaConfig.api_url)
        kw["wiki_offline"] = env.get("TVOMNER_WIKI_OFFLINE", "") == "1"
        kw["wiki_cache"] = cache.parent / "wikipedia.jsonl"
    res = Resources(dataset_cache=cache, cache_root=cache.parent, tagger=TaggerConfig(encoder=model_cfg.text_encoder),
                    relevance=RelevanceConfig(), knowledge=source, llm=LLMConfig.from_env(env),
                    grounding=GroundingConfig.from_env(env), **kw)
    return res, notes
