"""What makes two runs the same run, and what the batch does with a run it finds already there.

A run's *identity* is (dataset, data fields, setting, seed, recipe, model) of its parameters file;
the experiment's name is not part of it, so two parameters files that share a row share its runs.
Because a recipe leaves most fields to the code's defaults, a finished run is only reused when its
saved configs also equal the ones it would train with now (:func:`config_differences`): a default
changed since is another run.

Per run (:func:`classify`): finished with the same parameters → skipped; finished in its folder
with its artifacts missing → artifacts copied; finished for another experiment → copied from that
experiment's artifacts (``reused_from``); a folder holding other parameters → refused; anything
else → to run (an interrupted run resumes after its last finished epoch).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import DataConfig, ModelConfig, TrainConfig, config_diff, from_dict, to_dict, upgrade_train_dict
from ..resources import resolve
from ..settings import configs
from .artifacts import collect, reuse
from .plan import ARTIFACTS, Run

# what may differ between two runs that are the same run: where and how verbosely they ran, and the
# extra scoring after training (the missing-inputs figures)
REUSE_FREE = {"data": {"cache_dir"}, "train": {"output_dir", "resume", "progress", "num_threads", "eval_batch_size",
                                              "missing_inputs"}}


# the settings of the stages that make the side inputs (None: every setting of the stage); where they
# run (threads, device, timeouts, retries, endpoints) does not change what they make
SIDE_INPUT_SETTINGS = {"tagger": None, "relevance": None,
                       "grounding": {"model", "box_threshold", "text_threshold", "max_boxes_per_phrase"},
                       "llm": {"model", "caption_model", "temperature", "max_tokens"}}
_NOT_WHAT = {"threads", "eval_batch_size"}


def same_identity(a: dict, b: dict) -> bool:
    """Two identities (JSON-like dicts) are equal once both are read back from JSON."""
    return json.loads(json.dumps(a, sort_keys=True)) == json.loads(json.dumps(b, sort_keys=True))


def config_differences(run: Run, saved: dict | None) -> list[str]:
    """The fields (``part.field``) in which a finished run's saved configs (``config.json``, read as
    today's: an older run gets the defaults of its time, e.g. torch's AdamW) differ from the configs
    ``run`` would train with now (``tvolib.config.config_diff``, as checkpoint resumption uses)."""
    if not saved or not all(k in saved for k in ("data", "model", "train")):
        return ["configs: not recorded"]
    pr = run.params
    data, model, train = configs(pr["dataset"], pr["data"], pr["setting"], pr["seed"], pr["recipe"], pr["model"],
                                 output_dir=pr["output_dir"], cache_dir=pr["cache_dir"], num_threads=pr["num_threads"])
    old = {}
    for part, cls, d in (("data", DataConfig, saved["data"]), ("model", ModelConfig, saved["model"]),
                         ("train", TrainConfig, upgrade_train_dict(saved["train"]))):
        try:
            old[part] = to_dict(from_dict(cls, d))
        except (TypeError, ValueError) as e:
            return [f"{part}: {e}"]
    now = {"data": to_dict(data), "model": to_dict(model), "train": to_dict(train)}
    diffs = [d.split(":", 1)[0] for d in config_diff(old, now, REUSE_FREE)]
    if not diffs and saved.get("resources"):
        diffs += side_input_differences(saved["resources"], resolve(data, model).describe())
    return diffs


def side_input_differences(recorded: dict, current: dict) -> list[str]:
    """Where the side inputs a finished run read (its ``resources`` record) would be made otherwise
    now: the knowledge files by content (another base or file is another run), and the settings of
    the stages that make them — the candidate tagger, the relevance filter, the grounding thresholds
    and the LLM's model and sampling. A setting that an older record lacks is not compared."""
    diffs = []
    rk, ck = recorded.get("knowledge") or {}, current.get("knowledge") or {}
    for key in ("kb_inputs", "knowledge_file"):
        if isinstance(rk.get(key), dict) and sorted(rk[key].values()) != sorted((ck.get(key) or {}).values()):
            diffs.append(f"resources.knowledge.{key}")
    for stage, keys in SIDE_INPUT_SETTINGS.items():
        r, c = recorded.get(stage) or {}, current.get(stage) or {}
        diffs += [f"resources.{stage}.{k}" for k in sorted(set(r) & set(c) - _NOT_WHAT)
                  if (keys is None or k in keys) and json.dumps(r[k], sort_keys=True) != json.dumps(c[k], sort_keys=True)]
    return diffs


def _refuse_other(run: Run, folder: Path, old: dict) -> bool:
    """Mark ``run`` failed when ``folder`` holds a run with another identity ``old``."""
    if same_identity(old, run.identity):
        return False
    diff = sorted(k for k in set(old) | set(run.identity) if json.dumps(old.get(k), sort_keys=True)
                  != json.dumps(run.identity.get(k), sort_keys=True))
    run.state, run.error = "failed", (f"{folder} holds a run with other parameters ({', '.join(diff)}); "
                                      f"give the experiment another name, or delete that folder")
    return True


def classify(run: Run, copy: bool = True) -> None:
    """Mark ``run`` skip (finished with the same parameters), failed (its folder holds another
    run), or leave it todo (new, or resumable). A run finished in its folder whose artifacts are
    missing gets them copied (``copy``) instead of running again."""
    prov = run.artifacts / "provenance.json"
    if prov.exists():
        if _refuse_other(run, run.artifacts, json.loads(prov.read_text()).get("identity") or {}):
            return
        if all((run.artifacts / a).exists() for a in ARTIFACTS):
            run.state = "skip"
            return
    ident = run.run_dir / "run_identity.json"
    if ident.exists() and _refuse_other(run, run.run_dir, json.loads(ident.read_text())):
        return
    if ident.exists() and (run.run_dir / "results.json").exists() and (run.run_dir / "07_run.json").exists():
        rec = json.loads((run.run_dir / "07_run.json").read_text())
        if rec.get("status") == "ok" and (run.run_dir / "metrics.json").exists():
            if copy:
                collect(run, rec)
            run.state = "skip"
            return
    if not ident.exists():                     # never started here: the same run finished for another experiment?
        source = same_run_elsewhere(run)
        if source is not None:
            if copy:
                reuse(run, source)
            run.state, run.error = "skip", f"reused from {source}"


def same_run_elsewhere(run: Run) -> Path | None:
    """The artifacts folder of a finished run with ``run``'s identity and configs under another
    experiment of the same reports folder, or None."""
    reports_dir, name = run.artifacts.parents[2], run.artifacts.parents[1].name
    for prov in sorted(reports_dir.glob(f"*/{run.artifacts.parent.name}/{run.artifacts.name}/provenance.json")):
        folder = prov.parent
        if folder.parents[1].name == name or not all((folder / a).exists() for a in ARTIFACTS):
            continue
        try:
            old = json.loads(prov.read_text())
        except ValueError:
            continue
        if same_identity(old.get("identity") or {}, run.identity) and not config_differences(run, old.get("configs")):
            return folder
    return None
