"""Training recipe of section 5.1 for TVOMNER, its ablations and the text-only baselines.

* Inputs are built once per dataset (``prepare_data``): TFO augmentations and tokenisation
  (``tvolib.tfo``), VFO visual features (``tvolib.vfo``) or the word/char vocabularies of the
  baselines; the training loop only pads.
* AdamW with two learning rates: ``TrainConfig.lr`` (paper: 3e-5) for the pretrained text encoder,
  ``TrainConfig.head_lr`` (default 1e-3) for every new layer (Eq. 1 attention, VFO, CFF, BiLSTM,
  CRF) — a randomly initialised CRF/BiLSTM learns far too slowly at 3e-5. Linear warm-up
  (``warmup_ratio``) then linear decay to 0; weight decay 0.01 except biases/LayerNorm.
* Effective batch ``batch_size`` (paper: 64) = micro-batches × accumulation × processes; the loss of
  every micro-batch is weighted by its share of the step, so the gradient is that of the full batch.
* Gradient clipping (``max_grad_norm``); ``precision`` "fp32" (the default) | "bf16" | "auto" (bf16
  autocast where the GPU or the CPU has bf16 units, ``tvolib.device``; BiLSTM, CRF and losses in fp32). The
  resolved precision is recorded in ``config.json``, the checkpoints and ``results.json``.
* Model selection and early stopping on **valid F1 only** (``patience`` epochs without gain); the
  test set is scored once, with the selected checkpoint.
* Checkpoints: ``<output_dir>/last/`` after every epoch (weights, optimizer and RNG state as
  safetensors, the rest as JSON; never pickle) and ``<output_dir>/best/`` (what ``tvolib.predict``
  loads: weights, every config, label set, encoder config/tokenizer or vocabulary, and the candidate
  tagger that made the candidates; ``tvolib.checkpoint``). A killed run started
  again with the same command resumes after its last finished epoch and ends with the same weights
  as an uninterrupted run (CPU); one killed while scoring the selected checkpoint resumes with the
  next scoring pass (``tvolib.scoring``).
* Deterministic on CPU: seeded, the epoch order comes from ``seed + epoch``.
* Logs go to stderr (one line per epoch; a tqdm bar where interactive, per-step lines in plain log
  files, none in notebooks), results to ``results.json``. A valid F1 of 0 after an epoch is warned
  about with its likely cause (too few optimizer steps for the batch size).
* DDP with ``torchrun`` (gloo on CPU, nccl on GPU): each process takes its share of every step;
  rank 0 evaluates and writes checkpoints.

The parts live in their own modules: resources (``tvolib.resources``), inputs (``tvolib.inputs``),
model assembly (``tvolib.assemble``), checkpoints (``tvolib.checkpoint``), evaluation
(``tvolib.evaluate``), the branch probe (``tvolib.probing``), plots (``tvolib.viz``) and the MLflow run
(``tvolib.tracking``); this module is the loop.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from .assemble import build_model
from .cache import atomic_write_json
from .checkpoint import (check_resumable, load_checkpoint, load_training_state, resolve_checkpoint,
                         save_checkpoint, save_training_state)
from .config import DataConfig, ModelConfig, TrainConfig, to_dict
from .data import Dataset
from .device import autocast, resolve_device, resolve_precision, slow_bf16, to_device
from .evaluate import evaluate, score_examples, write_predictions
from .inputs import Prepared, dataset_from_config, prepare_data, with_dropout
from .model import encoder_parameter_names
from .resources import Resources, resolve
from .scoring import ScoringPasses, score_checkpoint
from .tfo.pipeline import ensure_kb
from .tracking import ARTIFACTS, Tracker, data_checksums
from .viz import plot_history

log = logging.getLogger(__name__)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, papermill)."""
    ip = sys.modules.get("IPython")
    try:
        return ip is not None and ip.get_ipython() is not None and "IPKernelApp" in ip.get_ipython().config
    except Exception:
        return False


def zero_f1_warning(epoch: int, n_train: int, batch_size: int, steps_per_epoch: int, steps_done: int,
                    warmup: int) -> str:
    """Why a valid F1 of 0 after ``epoch`` is likely, and what to change."""
    return (f"WARNING: valid F1 is 0.00 after epoch {epoch}: the model tags no entity correctly yet. "
            f"Likely cause: too few optimizer steps ({n_train} tweets / batch_size {batch_size} = "
            f"{steps_per_epoch} step(s) per epoch, {steps_done} so far, {warmup} of them warm-up). "
            + (f"Try a smaller batch_size (e.g. {max(1, batch_size // 4)}) or more epochs"
               if batch_size > 4 else "Try more epochs") + "; check lr/head_lr too.")


def param_groups(model: nn.Module, train_cfg: TrainConfig) -> list[dict]:
    """Encoder parameters at ``lr``, new layers (and CRF) at ``head_lr``; no decay on biases/LN.

    The gate of Eq. 4 (``cff.gate_ln``, ``cff.w_g1``, ``cff.w_g2``) also trains at ``lr``: it is
    two linear maps into one scalar, so at ``head_lr`` Adam moves its logit by ~``head_lr * d`` per
    step and the sigmoid saturates at 0 or 1 within a few steps (measured on the sample), which
    switches one branch of Eq. 5 off for good."""
    enc = encoder_parameter_names(model)
    groups = {(e, d): [] for e in (True, False) for d in (True, False)}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.dim() < 2 or "norm" in n.lower() or n.endswith(".bias") or n.startswith("crf.")
        slow = n in enc or n.startswith(("cff.gate_ln.", "cff.w_g1.", "cff.w_g2."))
        groups[(slow, not no_decay)].append(p)
    out = []
    for (is_enc, decay), ps in groups.items():
        if ps:
            out.append({"params": ps, "lr": train_cfg.lr if is_enc else train_cfg.head_lr,
                        "weight_decay": train_cfg.weight_decay if decay else 0.0,
                        "name": f"{'encoder+gate' if is_enc else 'new'}{'' if decay else '_no_decay'}"})
    return out


def linear_schedule(opt, warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def epoch_batches(lengths: list[int], batch_size: int, generator: torch.Generator,
                  group_by_length: bool = False, window: int = 50) -> list[list[int]]:
    """One epoch's batches of example indices: a random permutation cut into batches; with
    ``group_by_length``, each window of ``window`` batches of that permutation is sorted by input
    length before it is cut, and the batches are then shuffled, so a batch holds tweets of similar
    length (less padding) and the order stays random."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if group_by_length:
        span = batch_size * window
        order = [i for k in range(0, len(order), span)
                 for i in sorted(order[k:k + span], key=lambda i: -lengths[i])]
    batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    if group_by_length:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed)


def _dist_info() -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def _init_distributed(device_pref: str) -> bool:
    """Join the torchrun group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def train(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, *, res: Resources | None = None,
          ds: Dataset | None = None, prepared: Prepared | None = None, encoder_config=None,
          stop_after: int | None = None, tracking_tags: dict | None = None) -> dict:
    """Train, select on valid F1, score test once; returns the results dict (also written to
    ``<output_dir>/results.json``). ``res``: the run's resources (default: ``resolve(data_cfg,
    model_cfg)``, before any slow work); ``encoder_config`` builds a random-weight encoder (tests);
    ``stop_after`` stops after that many epochs of this call as a kill would (tests). The run is
    logged to MLflow where ``res.tracking`` says (``tvolib.tracking``), with ``tracking_tags``
    (experiment, setting, recipe…) beside the dataset and seed."""
    res = res if res is not None else resolve(data_cfg, model_cfg)
    tracker = Tracker(res.tracking)
    try:
        result = _train(data_cfg, model_cfg, train_cfg, res, ds, prepared, encoder_config, stop_after, tracker,
                        dict(tracking_tags or {}))
    except BaseException as e:
        tracker.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    tracker.end("KILLED" if result.get("interrupted") else "FINISHED")
    return result


def _train(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, res: Resources, ds: Dataset | None,
           prepared: Prepared | None, encoder_config, stop_after: int | None, tracker: Tracker,
           tracking_tags: dict) -> dict:
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    distributed = _init_distributed(train_cfg.device)
    rank, world, local_rank = _dist_info()
    device = resolve_device(train_cfg.device, local_rank)
    precision = resolve_precision(train_cfg.precision, device)
    is_main = rank == 0
    if is_main and (slow := slow_bf16(precision, device)):
        log.warning(slow)
    out_dir = Path(train_cfg.output_dir)
    seed_everything(train_cfg.seed)
    last = out_dir / "last"
    resume_from = None
    if train_cfg.resume and (last.exists() or last.with_name("last.old").exists()):
        resume_from = resolve_checkpoint(last)
        check_resumable(resume_from, data_cfg, model_cfg, train_cfg, precision)   # before any slow preparation

    if prepared is None:
        ds = ds or dataset_from_config(data_cfg)
        prepared = prepare_data(ds, data_cfg, model_cfg, res, progress=train_cfg.progress and is_main)
    meta = prepared.meta
    if res.knowledge == "local":                 # carried in the checkpoint: new tweets get the same base
        meta["kb_path"] = str(ensure_kb(res.kb, list(res.kb_inputs)) if res.kb_inputs else res.kb)
    seed_everything(train_cfg.seed)   # model init does not depend on what preparation consumed
    model = build_model(model_cfg, meta, encoder_config=encoder_config).to(device)
    train_ex = prepared.examples["train"]
    valid_ex = prepared.examples["valid"]

    bs, micro = train_cfg.batch_size, train_cfg.micro_batch_size
    steps_per_epoch = math.ceil(len(train_ex) / bs)
    if train_cfg.max_epoch_steps:
        steps_per_epoch = min(steps_per_epoch, train_cfg.max_epoch_steps)
    total_steps = steps_per_epoch * train_cfg.epochs
    if train_cfg.adamw not in ("fused", "torch-default"):
        raise ValueError(f"TrainConfig.adamw: {train_cfg.adamw!r}; choose 'fused' or 'torch-default'")
    opt = torch.optim.AdamW(param_groups(model, train_cfg), lr=train_cfg.lr,
                            fused=True if train_cfg.adamw == "fused" else None)
    sched = linear_schedule(opt, int(train_cfg.warmup_ratio * total_steps), total_steps)

    state = {"epoch": 0, "step": 0, "best_f1": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}
    if resume_from is not None:
        state = load_training_state(resume_from, model, opt, sched)
        if is_main:
            log.info(f"resuming {out_dir} after epoch {state['epoch']} (best valid F1 "
                f"{state['best_f1']:.2f} at epoch {state['best_epoch']})")
    ddp_model = model
    if distributed:
        ddp_model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None,
                        find_unused_parameters=train_cfg.ddp_find_unused)
    run_info = {"precision": precision, "device": str(device), "resources": res.describe(),
                "side_inputs": prepared.digest}
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        config = {"data": to_dict(data_cfg), "model": to_dict(model_cfg), "train": to_dict(train_cfg),
                  "world_size": world, **run_info}
        atomic_write_json(out_dir / "config.json", config)
        tracker.start(out_dir, config, {"dataset": data_cfg.dataset, "seed": train_cfg.seed, **tracking_tags},
                      resume=resume_from is not None, history=state["history"],
                      files=lambda: data_checksums(data_cfg, ds, run_info["resources"]))
    warmup_steps = int(train_cfg.warmup_ratio * total_steps)
    notebook = in_notebook()
    show_bar = train_cfg.progress and is_main and (notebook or sys.stderr.isatty())
    step_lines = is_main and not show_bar and not notebook     # plain log files: ~10 lines an epoch
    warnings_seen: list[str] = []
    stopped = state.get("stopped", False)
    epochs_this_call = 0
    while state["epoch"] < train_cfg.epochs and not stopped:
        epoch = state["epoch"] + 1
        g = torch.Generator().manual_seed(train_cfg.seed + epoch)
        batches = epoch_batches([len(e["input_ids"]) if "input_ids" in e else len(e["labels"]) for e in train_ex],
                                bs, g, train_cfg.group_by_length)
        model.train()
        t0, seen, step_losses, sums = time.time(), 0, [], {"loss": 0.0, "l_ner": 0.0, "l_vae": 0.0}
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}", disable=not show_bar, leave=False)
        for s in bar:
            idx = batches[s]
            shares = [idx[r::world] for r in range(world)]
            if min(len(x) for x in shares) == 0:
                continue                      # a tail too small to give every process a tweet
            mine = shares[rank]
            chunks = [mine[i:i + micro] for i in range(0, len(mine), micro)]
            step_loss = torch.zeros(3)
            for ci, chunk in enumerate(chunks):
                batch = to_device(with_dropout(prepared, [train_ex[i] for i in chunk], train_cfg.seed, epoch,
                                               train_cfg.knowledge_dropout, train_cfg.visual_dropout), device)
                sync = ci == len(chunks) - 1
                ctx = ddp_model.no_sync() if (distributed and not sync) else contextlib.nullcontext()
                with ctx:
                    with autocast(device, precision):
                        out = ddp_model(batch)
                    weight = len(chunk) * world / len(idx)      # share of the effective batch
                    (out["loss"] * weight).backward()
                step_loss += torch.tensor([out["loss"].item(), out["l_ner"].item(), out["l_vae"].item()]) * len(chunk)
            if distributed:
                dist.all_reduce(step_loss)
            step_loss /= len(idx)
            if train_cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            state["step"] += 1
            seen += len(idx)
            step_losses.append(round(step_loss[0].item(), 5))
            for k, v in zip(sums, step_loss.tolist()):
                sums[k] += v * len(idx)
            bar.set_postfix(loss=f"{step_loss[0].item():.3f}")
            if is_main and (s + 1) % max(1, steps_per_epoch // 10) == 0:     # ~10 times an epoch
                el = time.time() - t0
                atomic_write_json(out_dir / "progress.json", {"epoch": epoch, "step": s + 1, "steps": steps_per_epoch,
                                                               "seconds": round(el, 1)})    # the batch's live line
                if step_lines:
                    log.info(f"  epoch {epoch} step {s + 1}/{steps_per_epoch}: loss {step_loss[0].item():.3f}, "
                             f"{seen / el:.1f} tweets/s, {el:.0f} s")
        bar.close()
        train_time = time.time() - t0
        # ---- evaluation, selection, checkpoint (rank 0)
        stop_flag = [False]
        if is_main:
            vs, _ = evaluate(model, valid_ex, prepared.collate, train_cfg.eval_batch_size, device, precision)
            f1 = 100 * vs.f1
            rec = {"epoch": epoch, "train_loss": sums["loss"] / max(1, seen), "l_ner": sums["l_ner"] / max(1, seen),
                   "l_vae": sums["l_vae"] / max(1, seen), "valid_f1": f1, "valid": vs.row(),
                   "train_seconds": round(train_time, 2), "tweets_per_s": round(seen / max(train_time, 1e-9), 2),
                   "lr": [gr["lr"] for gr in opt.param_groups], "step_losses": step_losses}
            state["history"].append(rec)
            if f1 > state["best_f1"]:
                state.update(best_f1=f1, best_epoch=epoch, bad_epochs=0)
                save_checkpoint(out_dir / "best", model, data_cfg, model_cfg, train_cfg, meta,
                                {"epoch": epoch, "valid": vs.row(), **run_info})
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            stop_flag[0] = state["bad_epochs"] >= train_cfg.patience
            state["stopped"] = stop_flag[0]
            save_training_state(last, model, opt, sched, state, data_cfg, model_cfg, train_cfg, meta, run_info)
            atomic_write_json(out_dir / "history.json", state["history"])
            tracker.log_epoch(rec, last_step=state["step"])
            log.info(f"epoch {epoch}: loss {rec['train_loss']:.4f}  valid F1 {f1:.2f}  "
                f"({rec['tweets_per_s']:.1f} tweets/s, {train_time:.0f} s)"
                + ("  *best*" if state["best_epoch"] == epoch else ""))
            if state["best_f1"] <= 0.0 and not warnings_seen:      # nothing learned yet
                warnings_seen.append(zero_f1_warning(epoch, len(train_ex), bs, steps_per_epoch, state["step"],
                                                     warmup_steps))
                log.warning(warnings_seen[-1])
        else:
            state["epoch"] = epoch
        if distributed:
            dist.broadcast_object_list(stop_flag, src=0)
        stopped = stop_flag[0]
        epochs_this_call += 1
        if stop_after is not None and epochs_this_call >= stop_after and state["epoch"] < train_cfg.epochs:
            if distributed:
                dist.barrier()
            return {"interrupted": True, "epoch": state["epoch"], "history": state.get("history", [])}

    result: dict = {"output_dir": str(out_dir)}
    if is_main:
        best_model, _, _ = load_checkpoint(out_dir / "best", device=str(device))
        scored = score_checkpoint(best_model, prepared, ScoringPasses(out_dir / "scoring", out_dir / "best",
                                                                      state["best_epoch"], state["best_f1"]),
                                  missing_inputs=train_cfg.missing_inputs, reads_knowledge=model_cfg.reads_knowledge,
                                  valid_examples=valid_ex, batch_size=train_cfg.eval_batch_size, device=device,
                                  precision=precision)
        test_ex = prepared.examples["test"]
        pred = scored.test
        test_scores = score_examples(test_ex, pred)
        # the selected epoch's valid scores were computed when it was selected
        valid_row = next((h["valid"] for h in state["history"] if h["epoch"] == state["best_epoch"]), None)
        if valid_row is None:
            valid_row = evaluate(best_model, valid_ex, prepared.collate, train_cfg.eval_batch_size,
                                 device, precision)[0].row()
        result.update({"dataset": data_cfg.dataset, "best_epoch": state["best_epoch"],
                       "best_valid_f1": state["best_f1"], "valid": valid_row,
                       "test": test_scores.row(), "test_scores": test_scores.to_dict(),
                       "epochs_run": state["epoch"], "early_stopped": bool(state.get("stopped")),
                       "history": state["history"], "checkpoint": str(out_dir / "best"),
                       "model": to_dict(model_cfg), "train": to_dict(train_cfg), **run_info})
        if scored.probe is not None:     # does the model use the image? (test)
            result["probe"] = scored.probe.summary()
            atomic_write_json(out_dir / "probe_test.json", scored.probe.to_dict())   # per tweet: g, ω, predictions
        if state["best_f1"] <= 0.0 and warnings_seen:
            result["warnings"] = warnings_seen
        if ds is not None:
            write_predictions(out_dir / "test_predictions.txt", ds.splits["test"], pred)
        if train_cfg.missing_inputs:
            for split, into in (("test", "missing_inputs"), ("valid", "missing_inputs_valid")):
                result[into] = {n: score_examples(ex, pr).row() for n, (ex, pr) in scored.left_out[split].items()}
            if ds is not None:
                for n, (_, pr) in scored.left_out["test"].items():
                    write_predictions(out_dir / f"test_predictions.{n}.txt", ds.splits["test"], pr)
        atomic_write_json(out_dir / "results.json", result)
        try:
            plot_history(state["history"], out_dir / "curves.png")
        except Exception as e:   # a plot never fails a run
            log.warning("no curve plot: %s", e)
        tracker.log_result(result)
        tracker.log_artifacts(out_dir / f for f in ARTIFACTS)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return result
