"""``python -m tvolib.runs --params FILE --preflight``: every resource the runs of a parameters file
need, listed before hours of compute, each present, missing (with the fix) or not checked.

The checks follow what the file's datasets x settings x model read: each dataset's data files, image
folder (how many IMGIDs have an image) and captions; the text encoder (also the candidate tagger's
backbone), the image and sentence encoders; the knowledge each setting reads (local base, per-tweet
files, live Wikipedia); the LLM endpoint and GroundingDINO where the phrases and boxes come from them;
the GPU (bf16 units for bf16 on a CPU); free disk for the caches and run folders. Resolution is the
runs' own (``tvolib.resources``, ``tvolib.weights``). Nothing slow happens: weights are found, not loaded,
an endpoint gets one request with a 3 s timeout. Exit status 0 only when every required one is present.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

import requests
import torch

from ..config import DEFAULT_SENTENCE_ENCODER, DataConfig, ModelConfig, TrainConfig
from ..data import IMAGE_EXTENSIONS, SPLITS, read_conll
from ..device import cpu_has_bf16
from ..io import load_captions
from ..llm_client import LLMConfig
from ..resources import resolve
from ..settings import data_config, model_config, split_recipe
from ..tfo.knowledge import WikipediaConfig
from ..tfo.relevance import RelevanceConfig
from ..vfo.caption_phrases import SPACY_MODEL
from ..vfo.encoders import resolve_image_encoder
from ..vfo.grounding import GroundingConfig
from ..vfo.pipeline import CAPTION_PHRASES
from ..weights import ResourceMissing, image_weights_source, local_model_folder, resolve_text_encoder
from .plan import plan

PRESENT, MISSING, NOT_CHECKED = "present", "missing", "not checked"
TIMEOUT = 3.0                    # seconds for each endpoint's one request
MIN_IMAGE_SHARE = 0.9            # the benchmarks come with an image per tweet: fewer means a wrong folder
# GPU memory of the paper's recipe (RoBERTa-large, fp32, micro-batches of 16 x 256 sub-tokens), an
# estimate: 5.7 GB of weights, gradients and AdamW moments, about 11 GB of activations; the paper
# trained on a 24 GB RTX 4090
MIN_GPU_GB = 20
# disk, an estimate: per tweet, fp32 features (global and object image features up to 1024-d, caption
# and phrase embeddings 384-d) and JSONL records (candidates, knowledge, phrases, boxes: a few KB);
# per dataset one candidate tagger (a copy of the text encoder); per run best/ and last/ (the model
# and the tagger each, and AdamW's two moments in last/)
TWEET_BYTES = 4 * (2 * 1024 + 2 * 384) + 10_000
ENCODER_BYTES_GUESS = 1.42e9     # RoBERTa-large in fp32, when the encoder is not here to measure
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")


@dataclass
class Check:
    name: str                 # the resource: "twitter2017 images", "text encoder roberta-large", "GPU"
    need: str                 # what the runs need
    status: str               # present | missing | not checked
    detail: str = ""          # what was found
    fix: str = ""             # how to provide it, when it is not present
    required: bool = True     # an optional resource does not change the exit status

    @property
    def ok(self) -> bool:
        return self.status == PRESENT or not self.required


def attempt(name: str, need: str, find) -> Check:
    """``find()`` returns what was found; a ``ResourceMissing`` says what is missing and the fix."""
    try:
        return Check(name, need, PRESENT, find())
    except ResourceMissing as e:
        return Check(name, need, MISSING, fix=str(e))


def public_url(url: str) -> str:
    """A URL without any user or password it may carry."""
    u = urlparse(url)
    return u._replace(netloc=u.netloc.rpartition("@")[2]).geturl()


# ---------------------------------------------------------------- files and weights
def weights_size(folder: Path) -> int:
    """Bytes of the largest weights file in a model folder (0: none)."""
    return max((p.stat().st_size for pat in WEIGHT_FILES for p in folder.glob(pat)), default=0)


def model_folder(path: str | Path, what: str) -> str:
    """A model folder that holds a config and weights (a single file, such as a zip part, as it is)."""
    path = Path(path)
    if path.is_dir() and not ((path / "config.json").exists() and weights_size(path)):
        raise ResourceMissing(f"{what} at {path} is incomplete (no config.json or no weights file): download it again")
    return str(path)


def data_check(data_cfg: DataConfig) -> tuple[Check, list[str]]:
    """The three splits (and their IMGIDs)."""
    d = Path(data_cfg.data_dir)
    need = f"{d}/{{{','.join(SPLITS)}}}.txt"
    ids, counts = [], []
    try:
        for s in SPLITS:
            tweets = read_conll(d / f"{s}.txt", split=s)
            ids += [t.id for t in tweets]
            counts.append(str(len(tweets)))
    except FileNotFoundError as e:
        return Check(f"{data_cfg.dataset} data", need, MISSING, fix=f"{e}: link the data root (`make data "
                     f"DATA=/path/to/data`, docs/data.md) or set data_dir"), []
    except ValueError as e:         # a malformed file names its line
        return Check(f"{data_cfg.dataset} data", need, MISSING, fix=str(e)), []
    return Check(f"{data_cfg.dataset} data", need, PRESENT, f"{len(ids)} tweets ({' / '.join(counts)})"), ids


def image_check(data_cfg: DataConfig, ids: list[str]) -> Check:
    d = Path(data_cfg.image_dir)
    name, need = f"{data_cfg.dataset} images", f"<IMGID>.jpg|png in {d} for every tweet"
    fix = (f"put the dataset's images in {d} as <IMGID>.jpg (the UMT release's {data_cfg.dataset}_images/), "
           f"or point image_dir at them")
    if not d.is_dir():
        return Check(name, need, MISSING, f"no folder {d}", fix)
    if not ids:
        return Check(name, need, NOT_CHECKED, "no tweets to look up (data missing)")
    stems = {p.stem for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    n = sum(i in stems for i in ids)
    detail = f"{n} of {len(ids)} tweets have an image"
    if n < MIN_IMAGE_SHARE * len(ids):
        return Check(name, need, MISSING, detail, f"{fix} (at least {MIN_IMAGE_SHARE:.0%} of the tweets)")
    return Check(name, need, PRESENT, detail + (f"; {len(ids) - n} without: caption or masked" if n < len(ids) else ""))


def captions_check(data_cfg: DataConfig, ids: list[str]) -> Check:
    p = Path(data_cfg.captions)
    name, need = f"{data_cfg.dataset} captions", f"{{IMGID: caption}} JSON {p}"
    if not p.is_file():
        return Check(name, need, MISSING, fix=f"{p} not found: set captions to the dataset's caption file, or null "
                     f"(the LLM endpoint's vision model writes them then)")
    caps = load_captions(p)
    return Check(name, need, PRESENT, f"captions for {sum(i in caps for i in ids)} of {len(ids)} tweets")


def text_encoder_check(name: str, role: str = "text encoder") -> Check:
    return attempt(f"{role} {name}", f"{role} weights, found offline",
                   lambda: model_folder(resolve_text_encoder(name, unpack=False), f"{role} {name}"))


def image_encoder_check(model_cfg: ModelConfig) -> Check:
    name = resolve_image_encoder(model_cfg.image_encoder, model_cfg.image_weights)
    return attempt(f"image encoder {name}", "image encoder weights (timm), found offline",
                   lambda: image_weights_source(name, model_cfg.image_weights))


def tagger_check(data_cfg: DataConfig, encoder: Check, text_encoder: str) -> Check:
    cached = sorted(p.name for p in data_cfg.dataset_cache.glob("tagger-*") if p.is_dir())
    need = f"a B/I/O tagger on {text_encoder}, trained on the train split on first use"
    if cached:
        return Check(f"{data_cfg.dataset} candidate tagger", need, PRESENT, f"trained before: {', '.join(cached)}")
    return Check(f"{data_cfg.dataset} candidate tagger", need, encoder.status,
                 "trained on first use" if encoder.ok else "", "" if encoder.ok else f"its backbone, {encoder.name} (above)")


def grounding_check(g: GroundingConfig) -> Check:
    need = "GroundingDINO weights (TVOMNER_GROUNDING_MODEL) for the boxes of the LLM phrases"
    if not g.model:
        return Check("GroundingDINO", need, MISSING, "TVOMNER_GROUNDING_MODEL is not set",
                     "where you have network: `huggingface-cli download IDEA-Research/grounding-dino-tiny`, then "
                     "export TVOMNER_GROUNDING_MODEL=IDEA-Research/grounding-dino-tiny (or the folder); or set boxes "
                     "to a file of boxes")

    def find():
        folder = Path(model_folder(local_model_folder(g.model, "GroundingDINO model"), "GroundingDINO model"))
        kind = json.loads((folder / "config.json").read_text()).get("model_type")
        if kind != "grounding-dino":
            raise ResourceMissing(f"{folder} holds a {kind!r} model, not grounding-dino: set TVOMNER_GROUNDING_MODEL")
        return f"{folder} (box threshold {g.box_threshold}, text threshold {g.text_threshold})"
    return attempt("GroundingDINO", need, find)


# ---------------------------------------------------------------- endpoints
def wikipedia_check(wiki: WikipediaConfig, offline: bool, cache: Path) -> Check:
    url = public_url(wiki.api_url)
    need = f"live Wikipedia: the MediaWiki API at {url}, answers cached in {cache}"
    if offline:
        n = len(cache.read_bytes().splitlines()) if cache.is_file() else 0
        return Check("Wikipedia API", need, PRESENT if n else MISSING,
                     f"TVOMNER_WIKI_OFFLINE=1: only the cache answers ({n} queries cached)",
                     "" if n else "unset TVOMNER_WIKI_OFFLINE (the cache is empty)")
    fix = (f"give this machine access to {url}, or set TVOMNER_WIKI_API_URL to a reachable MediaWiki API "
           f"(a mirror), or TVOMNER_WIKI_OFFLINE=1 with a filled cache")
    try:
        r = requests.get(wiki.api_url, params={"action": "query", "list": "search", "srsearch": "Wikipedia",
                                               "srlimit": 1, "format": "json"},
                         headers={"User-Agent": wiki.user_agent}, timeout=TIMEOUT)
        ok = r.ok and "query" in r.json()
    except (requests.RequestException, ValueError) as e:
        return Check("Wikipedia API", need, MISSING, f"not reachable ({type(e).__name__})", fix)
    if not ok:
        return Check("Wikipedia API", need, MISSING, f"HTTP {r.status_code}, not a MediaWiki search answer", fix)
    return Check("Wikipedia API", need, PRESENT, f"answers ({r.elapsed.total_seconds() * 1000:.0f} ms)")


def llm_check(llm: LLMConfig, captions: bool) -> Check:
    """The endpoint of the Appendix A phrases: configured, reachable, serving the model. The key is
    sent to the endpoint only, and never shown."""
    need = "an OpenAI-compatible endpoint for the Appendix A phrases" + ("" if captions else " and captions")
    if not llm.configured:
        return Check("LLM endpoint", need, MISSING, "TVOMNER_LLM_BASE_URL / TVOMNER_LLM_MODEL not set",
                     "export TVOMNER_LLM_BASE_URL=https://api.openai.com/v1 TVOMNER_LLM_MODEL=gpt-4o-2024-11-20 and "
                     "OPENAI_API_KEY (or any OpenAI-compatible server: vLLM, Ollama, llama.cpp); or set phrases "
                     "to a JSONL file of phrases")
    url = public_url(llm.base_url)
    key = "key: OPENAI_API_KEY set (not shown)" if llm.api_key else "no OPENAI_API_KEY (a local server needs none)"
    headers = {"Authorization": f"Bearer {llm.api_key}"} if llm.api_key else {}
    try:
        r = requests.get(llm.base_url.rstrip("/") + "/models", headers=headers, timeout=TIMEOUT)
    except requests.RequestException as e:
        return Check("LLM endpoint", need, MISSING, f"{url} not reachable ({type(e).__name__}); {key}",
                     "start the server or correct TVOMNER_LLM_BASE_URL")
    if r.status_code in (401, 403):
        return Check("LLM endpoint", need, MISSING, f"{url}: HTTP {r.status_code}; {key}",
                     "the endpoint refused the request: export a valid OPENAI_API_KEY")
    try:
        served = [m["id"] for m in r.json()["data"]] if r.ok else []
    except (ValueError, KeyError, TypeError):
        served = []
    if served and llm.model not in served:
        return Check("LLM endpoint", need, MISSING, f"{url} does not serve {llm.model!r}; {key}",
                     f"set TVOMNER_LLM_MODEL to one it lists: {', '.join(served[:5])}")
    listed = f"serves {llm.model}" if served else f"answers (HTTP {r.status_code} on /models; model {llm.model})"
    return Check("LLM endpoint", need, PRESENT, f"{url} {listed}; {key}")


# ---------------------------------------------------------------- GPU and disk
def gpu_check(train_cfg: TrainConfig, executor_kind: str) -> Check | None:
    if train_cfg.device == "cpu":
        return None
    required = train_cfg.device == "cuda"
    need = f"a CUDA GPU with about {MIN_GPU_GB} GB (device: cuda)" if required else "a CUDA GPU if any (device: auto)"
    if executor_kind != "local":
        return Check("GPU", need, NOT_CHECKED, f"runs go to {executor_kind} jobs: their nodes' GPUs", required=False)
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        return Check("GPU", need, MISSING, f"no CUDA device (torch {torch.__version__}, {build})",
                     "run on a machine with an NVIDIA GPU and a CUDA build of torch"
                     + ("" if required else " (device: auto: the runs go on the CPU)"), required)
    gb = torch.cuda.get_device_properties(0).total_memory / 1e9
    detail = f"{torch.cuda.get_device_name(0)}, {gb:.0f} GB"
    if required and gb < MIN_GPU_GB:
        return Check("GPU", need, MISSING, detail, "a larger GPU, or a smaller recipe.micro_batch_size", required)
    return Check("GPU", need, PRESENT, detail, required=required)


def bf16_check(train_cfg: TrainConfig, executor_kind: str, cpuinfo: str | None = None) -> Check | None:
    """A local CPU run in bf16: whether the CPU has bf16 units (optional: the runs work without)."""
    on_cpu = train_cfg.device == "cpu" or (train_cfg.device == "auto" and not torch.cuda.is_available())
    if train_cfg.precision != "bf16" or executor_kind != "local" or not on_cpu:
        return None
    need, flags = "bf16 matrix units on the CPU (precision: bf16)", "amx_bf16 or avx512_bf16"
    if cpu_has_bf16(cpuinfo):
        return Check("bf16", need, PRESENT, flags, required=False)
    return Check("bf16", need, MISSING, f"no {flags}: bf16 products are emulated, about 10x slower than fp32 "
                 "(docs/speed.md)", "recipe.precision: fp32 (or auto: fp32 here), or a CPU with them", required=False)


def existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def disk_checks(needs: dict[Path, float], basis: str) -> list[Check]:
    """Free space against the estimate, once per filesystem (``needs``: folder -> bytes)."""
    by_dev: dict[int, list] = {}                          # device -> [folders, bytes]
    for folder, n in needs.items():
        entry = by_dev.setdefault(existing(folder).stat().st_dev, [[], 0.0])
        entry[0].append(folder)
        entry[1] += n
    out = []
    for folders, total in by_dev.values():
        free = shutil.disk_usage(existing(folders[0])).free
        c = Check(f"disk for {', '.join(str(f) for f in folders)}", f"about {total / 1e9:.1f} GB needed ({basis})",
                  PRESENT if free >= total else MISSING, f"{free / 1e9:.1f} GB free")
        if c.status == MISSING:
            c.fix = f"free {(total - free) / 1e9:.1f} GB there, or set cache_dir / runs_dir to a larger disk"
        out.append(c)
    return out


# ---------------------------------------------------------------- knowledge, phrases, boxes
def knowledge_check(data_cfg: DataConfig, model_cfg: ModelConfig, env: Mapping[str, str]) -> Check:
    """The knowledge a setting reads, as ``tvolib.resources.resolve`` finds it for the run."""
    source = model_cfg.reads_knowledge
    name, need = f"{data_cfg.dataset} knowledge ({source})", f"knowledge_source={source!r}"
    try:
        res = resolve(data_cfg, model_cfg, env)
    except ResourceMissing as e:
        return Check(name, need, MISSING, fix=str(e))
    if source == "wikipedia":
        return wikipedia_check(res.wikipedia, res.wiki_offline, res.wiki_cache)
    if source == "local":
        return Check(name, need, PRESENT, f"{res.kb}" + (f", built from {len(res.kb_inputs)} file(s) on first use"
                                                         if res.kb_inputs and not res.kb.exists() else ""))
    return Check(name, need, PRESENT, str(res.knowledge_file))


def object_checks(data_cfg: DataConfig, env: Mapping[str, str]) -> list[Check]:
    """Where the phrases and the boxes of the object feature v_obj come from (``tvolib.vfo.pipeline``)."""
    out = []
    if data_cfg.phrases == CAPTION_PHRASES:
        found = any(importlib.util.find_spec(n) for n in (SPACY_MODEL, "en_core_web_sm"))
        out.append(Check("spaCy parser", "spaCy's English model for the captions' noun chunks (phrases: "
                         f"{CAPTION_PHRASES})", PRESENT if found else MISSING,
                         fix="" if found else 'pip install -e ".[parser]"'))
    elif data_cfg.phrases:
        ph = Path(data_cfg.phrases)
        out.append(Check(f"{data_cfg.dataset} phrases", f"LLM phrases JSONL {ph}", PRESENT if ph.is_file() else MISSING,
                         fix="" if ph.is_file() else f"{ph} not found: set phrases, or null to ask the LLM"))
    else:
        out.append(llm_check(LLMConfig.from_env(env), captions=bool(data_cfg.captions)))
    grounding = GroundingConfig.from_env(env)
    if not grounding.model and data_cfg.boxes:
        b = Path(data_cfg.boxes)
        out.append(Check(f"{data_cfg.dataset} boxes", f"grounded boxes JSONL {b}", PRESENT if b.is_file() else MISSING,
                         fix="" if b.is_file() else f"{b} not found: set boxes, or TVOMNER_GROUNDING_MODEL"))
    else:
        out.append(grounding_check(grounding))
    return out


# ---------------------------------------------------------------- the whole file
def preflight(params: str | Path, env: Mapping[str, str] | None = None) -> list[Check]:
    """One ``Check`` per resource the runs of the parameters file ``params`` need (a bad file is a
    ``SystemExit`` naming it, as for the batch)."""
    env = os.environ if env is None else env
    p = plan(params)
    settings = list(dict.fromkeys((r.dataset, r.setting) for r in p.runs))     # identical settings are not run
    recipe, model, cache_dir = (p.runs[0].params[k] for k in ("recipe", "model", "cache_dir"))
    data_kw, train_kw = split_recipe(recipe)
    checks: dict[str, Check] = {}
    encoders: list[Check] = []
    tweets = 0

    def add(c: Check | None) -> None:
        if c is not None:
            checks.setdefault(c.name, c)

    for ds, man in p.manifests.items():
        data_cfg = data_config(ds, man["data"], cache_dir=cache_dir, **data_kw)
        c, ids = data_check(data_cfg)
        add(c)
        tweets += len(ids)
        for m in [model_config(s, model) for d, s in settings if d == ds]:
            enc = text_encoder_check(m.text_encoder)
            add(enc)
            encoders.append(enc)
            if m.arch == "tvomner" and m.use_candidates:
                add(tagger_check(data_cfg, enc, m.text_encoder))
            if m.reads_knowledge:
                add(knowledge_check(data_cfg, m, env))
                add(text_encoder_check(RelevanceConfig().encoder, "sentence encoder"))
            if m.arch == "tvomner" and m.visual != "none":
                add(image_check(data_cfg, ids) if data_cfg.image_dir else None)
                add(captions_check(data_cfg, ids) if data_cfg.captions else None)
                add(image_encoder_check(m))
                add(text_encoder_check(DEFAULT_SENTENCE_ENCODER, "sentence encoder"))
                if m.visual == "optimized" and m.object_source == "llm" and data_cfg.image_dir:
                    for c in object_checks(data_cfg, env):
                        add(c)
    add(gpu_check(TrainConfig(**train_kw), p.executor.kind))
    add(bf16_check(TrainConfig(**train_kw), p.executor.kind))

    size = max((weights_size(Path(c.detail)) for c in encoders if c.status == PRESENT and Path(c.detail).is_dir()),
               default=0)
    guess = "" if size else " (assumed: not here to measure)"
    size = size or ENCODER_BYTES_GUESS
    # a run keeps best/ and last/: the model and the tagger each, and AdamW's two moments in last/
    copies = sum(6 if model_config(r.setting, model).use_candidates else 4 for r in p.runs)
    basis = (f"caches: {tweets} tweets x {TWEET_BYTES / 1e3:.0f} KB and {len(p.manifests)} tagger(s); runs: "
             f"{len(p.runs)} runs, {copies} copies of a {size / 1e9:.2f} GB encoder{guess}")
    for c in disk_checks({Path(cache_dir): tweets * TWEET_BYTES + len(p.manifests) * size,
                          p.root: copies * size}, basis):
        add(c)
    return list(checks.values())


def report(checks: list[Check]) -> str:
    """The checks as a readable table: status, resource, what is needed; what was found or the fix below."""
    w = max(len(c.name) for c in checks)
    statuses = [c.status.upper() if not c.ok else c.status + ("" if c.required else " (optional)") for c in checks]
    sw = max([12] + [len(s) for s in statuses])
    lines = []
    for c, status in zip(checks, statuses):
        lines.append(f"{status:<{sw}} {c.name:<{w}}  {c.need}")
        for text, tag in ((c.detail, ""), (c.fix if c.status != PRESENT else "", "fix: ")):
            if text:
                lines.append(f"{'':<{sw}} {'':<{w}}  {tag}{text}")
    bad = [c for c in checks if not c.ok]
    lines.append("")
    lines.append(f"{len(bad)} of {sum(c.required for c in checks)} required resources are not present: "
                 f"{', '.join(c.name for c in bad)}" if bad else "every required resource is present")
    return "\n".join(lines)


def main(params: str | Path) -> int:
    """Print the report; 0 when everything required is present, 1 otherwise, 2 for a bad file."""
    try:
        checks = preflight(params)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        raise
    print(f"preflight of {params}\n")
    print(report(checks))
    return 0 if all(c.ok for c in checks) else 1
