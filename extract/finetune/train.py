"""The fine-tuning loop: epochs of sampled, augmented training frames, a validation pass after each, the best
epoch by the task's official metric, a resumable state after every epoch, the checkpoint and report at the end.

One process drives the device. Decode workers (a torch DataLoader) read, decode, resize and augment the frames
into pinned memory; the main process copies uint8 batches to the device, normalises them there and runs the
step under autocast (bf16 or fp16) in channels_last on CUDA. Before the first epoch the same network's
forward+backward on random tensors of the same batch is timed (the ceiling any input pipeline could reach), and
each epoch's training frames/s is printed beside it.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from features.cachelock import CacheLock
from features.errors import InputError
from features.losses import make_loss
from features.outputs import check_output
from features.tasks import Task, get_task

from ..models.finetuned import FORMAT, output_layout, output_name
from .augment import AUGMENTATION, colour_jitter, seed_of
from .frames import EpochOrder, Frames, FrameSet, crop_videos, epoch_size, even_sample, labelled_frames
from .network import Start, freeze, param_groups, start_network, train_mode
from .settings import WEIGHT_DECAY, Settings
from .state import Progress, load_state, save_state, write_checkpoint

log = logging.getLogger(__name__)
WARMUP = 0.05          # share of the steps over which the learning rates rise linearly, then a cosine decay to 0


@dataclass
class Result:
    out: Path
    report: Path
    metric: str
    best_epoch: int
    best_metric: float
    history: list[dict]
    ceiling: float | None           # forward+backward frames/s on random tensors (None: not measured)
    resumed_after: int              # epochs a previous run had finished (0: a fresh run)

    def line(self) -> str:
        last = self.history[-1] if self.history else {}
        speed = f"{last.get('frames_per_s', 0):.1f} frames/s" + (
            f" (ceiling {self.ceiling:.1f}: {last.get('frames_per_s', 0) / self.ceiling:.2f}x)" if self.ceiling else "")
        return (f"best epoch {self.best_epoch} of {len(self.history)}, val {self.metric} {self.best_metric:.4f}; "
                f"last epoch {speed} -> {self.out} (report {self.report})")


def lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first WARMUP of the steps, then a cosine decay to 0."""
    warm = max(1, int(total * WARMUP))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


_BATCH_KEY = 1 << 40          # seed keys above any frame position: batches (colour jitter), then the epoch


def epoch_seed(seed: int, epoch: int) -> int:
    """The torch seed of an epoch (dropout and the like): resumed runs reseed the same way."""
    return seed_of(seed, epoch, 2 * _BATCH_KEY)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def _lock(s: Settings) -> CacheLock:
    lock = CacheLock(s.out)
    try:
        return lock.acquire()
    except InputError:
        raise InputError(f"another fine-tuning writes this checkpoint (its lock file {lock.path} is held); wait "
                         f"for it to finish, or choose another --out", s.out) from None


class _Batches:
    """Moves uint8 batches to the device, jitters their colour (training) and normalises them there (4x fewer
    bytes to copy than floats)."""

    def __init__(self, start: Start, device, channels_last: bool):
        import torch
        self.device, self.channels_last = device, channels_last
        self.mean = torch.tensor(start.mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(start.std, device=device).view(1, -1, 1, 1) * 255

    def __call__(self, xb, jitter_seed: int | None = None):
        import torch
        x = xb.to(self.device, non_blocking=True).float()
        if jitter_seed is not None:
            x = colour_jitter(x, jitter_seed)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _loader(ds, s: Settings, sampler, drop_last: bool):
    """Batches of `ds` in `sampler`'s order; decode workers persist from epoch to epoch (their start-up, a batch
    of decodes per worker, would otherwise recur every epoch)."""
    import torch

    from ..datasets import _worker_init
    return torch.utils.data.DataLoader(
        ds, batch_size=s.batch, sampler=sampler, drop_last=drop_last, num_workers=s.workers, pin_memory=s.cuda,
        worker_init_fn=_worker_init, prefetch_factor=4 if s.workers else None, persistent_workers=s.workers > 0,
        generator=torch.Generator().manual_seed(0))       # the global generator is not drawn from here


def _autocast(device, amp: str | None):
    import torch
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def scores_of(task: Task, z):
    """The task's scores from the network's task output: EXPR softmax, AU sigmoid, VA the values as they are."""
    import torch
    if task.kind == "multiclass":
        return torch.softmax(z, 1)
    if task.kind == "multilabel":
        return torch.sigmoid(z)
    return z


def random_targets(task: Task, n: int, device):
    import torch
    if task.kind == "multiclass":
        return torch.randint(0, task.n_outputs, (n,), device=device)
    if task.kind == "multilabel":
        return torch.randint(0, 2, (n, task.n_outputs), device=device).float()
    return torch.rand(n, task.n_outputs, device=device) * 2 - 1


def ceiling(net, task: Task, loss_fn, batch: int, size: int, device, amp: str | None, channels_last: bool,
            steps: int) -> float | None:
    """Frames/s of the same network's forward+backward on random tensors already on the device (on a copy, so
    the BatchNorm statistics of the network being trained do not move): what training could reach if frames
    cost nothing to read."""
    import torch
    if steps == 0:
        return None
    twin = copy.deepcopy(net).train()
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = random_targets(task, batch, device)
    head = output_name(task)

    def step():
        with _autocast(device, amp):
            out = twin(x)
        loss_fn(out[head].float(), y).backward()
        twin.zero_grad(set_to_none=True)

    for _ in range(2 if device.type == "cuda" else 1):     # warm-up: cudnn autotuning, allocator
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch / (time.perf_counter() - t)


def predict(net, task: Task, loader, s: Settings, prep: _Batches):
    """Scores of the loader's frames (eval mode, no augmentation) and which of them decoded."""
    import torch
    net.eval()
    out, oks = [], []
    head = output_name(task)
    with torch.inference_mode():
        for xb, _, ok in loader:
            with _autocast(prep.device, s.amp):
                z = net(prep(xb))[head].float()
            out.append(scores_of(task, z).cpu().numpy())
            oks.append(ok.numpy())
    return np.concatenate(out), np.concatenate(oks)


@dataclass
class _Step:
    """What one training step needs, made once per run."""
    s: Settings
    task: Task
    net: object
    opt: object
    loss_fn: Callable
    prep: _Batches
    scaler: object
    total_steps: int

    def epoch(self, epoch: int, loader, p: Progress) -> tuple[float, int, int]:
        """One pass over the epoch's frames: (mean training loss, frames trained on, frames not decoded)."""
        import torch
        from tqdm.auto import tqdm
        s, opt, device = self.s, self.opt, self.prep.device
        head = output_name(self.task)
        base_lrs = [g["initial_lr"] for g in opt.param_groups]
        loss_sum = torch.zeros((), device=device)      # summed on the device: no sync per step
        seen = bad = 0
        for b, (xb, yb, ok) in enumerate(tqdm(loader, desc=f"epoch {epoch}/{s.epochs}", unit="batch", leave=False,
                                              disable=not s.progress)):
            if not bool(ok.all()):
                bad += int((~ok).sum())
                xb, yb = xb[ok], yb[ok]
                if len(xb) == 0:
                    continue
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * lr_factor(p.step, self.total_steps)
            with _autocast(device, s.amp):
                out = self.net(self.prep(xb, seed_of(s.seed, epoch, _BATCH_KEY + b)))
            loss = self.loss_fn(out[head].float(), yb.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(opt)
                self.scaler.update()
            else:
                loss.backward()
                opt.step()
            loss_sum += loss.detach() * len(xb)
            seen += len(xb)
            p.step += 1
        _sync(device)
        if seen == 0:
            raise InputError(f"{self.task.name}: no training crop of epoch {epoch} could be decoded", s.data)
        loss = float(loss_sum) / seen
        if not math.isfinite(loss):
            raise InputError(f"training diverged at epoch {epoch} (the loss is {loss}); start afresh with a lower "
                             f"--lr or --backbone-lr (remove {s.state})")
        return loss, seen, bad


@dataclass
class _Plan:
    """What the checks and the data settle before the device is touched, shared by the steps of `finetune`."""
    task: Task
    start: Start
    frozen_bn: list[str]
    train: Frames
    val: Frames
    val_rows: np.ndarray
    per_epoch: int
    drop_last: bool
    fingerprint: str


@dataclass
class _Loop:
    """The network on its device and what trains and validates it, built once and used by every epoch."""
    net: object
    opt: object
    loss_fn: object
    prep: _Batches
    step: _Step
    order: EpochOrder
    train_loader: object
    val_loader: object


def _check_device(s: Settings) -> None:
    """Refuse a CUDA device number this machine lacks before any data is read."""
    import torch
    if s.cuda:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (torch.device(s.device).index or 0) >= n:
            raise InputError(f"--device {s.device}: no CUDA device of that number here ({n} available)")


def _plan(s: Settings) -> _Plan:
    """Check the outputs, device, data, labels, start network and --freeze-until, all before anything is written."""
    task = get_task(s.task)
    for p in (s.out, s.report):
        check_output(p, s.force)
    check_output(s.state, force=True)        # a link or folder at the state's name is refused
    _check_device(s)
    videos = crop_videos(s.data, s.crops)
    train = labelled_frames(s.data, task, "train", videos)
    val = labelled_frames(s.data, task, "val", videos)
    start = start_network(s.source, task, s.seed, s.allow_pickle)
    frozen_bn = freeze(start.net, start.groups, s.freeze_until)
    val_rows = even_sample(val, s.val_frames_per_video)
    per_epoch = epoch_size(train, s.frames_per_video)
    drop_last = per_epoch >= s.batch          # a last short batch would weigh its few frames as much as a full one
    fingerprint = s.fingerprint(
        architecture=start.architecture, source_sha256=start.sha256, input_size=start.input_size,
        train_data=_digest("\n".join(train.paths), train.y.tobytes()),
        val_data=_digest("\n".join(val.paths[i] for i in val_rows), val.y[val_rows].tobytes()))
    return _Plan(task, start, frozen_bn, train, val, val_rows, per_epoch, drop_last, fingerprint)


def _build(s: Settings, p: _Plan) -> _Loop:
    """Put the network on its device and build the optimiser, loss, step and the two loaders."""
    import torch
    device = torch.device(s.device)
    net = p.start.net.to(device)
    if s.cuda:                                # channels_last and cudnn's autotuner: the GPU's fast paths
        net = net.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.AdamW(param_groups(net, s.lr, s.backbone_lr), weight_decay=WEIGHT_DECAY)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]             # the schedule scales these
    loss_fn = make_loss(s.loss, p.task, p.train.y, device=device)
    prep = _Batches(p.start, device, channels_last=s.cuda)
    size = p.start.input_size
    step = _Step(s, p.task, net, opt, loss_fn, prep, torch.amp.GradScaler("cuda") if s.amp == "fp16" else None,
                 (p.per_epoch // s.batch if p.drop_last else 1) * s.epochs)
    order = EpochOrder(p.train, s.frames_per_video, s.seed)
    train_loader = _loader(FrameSet(p.train, size, p.task, True, s.seed), s, order, p.drop_last)
    val_loader = _loader(FrameSet(p.val, size, p.task, False), s, [int(r) for r in p.val_rows], False)
    return _Loop(net, opt, loss_fn, prep, step, order, train_loader, val_loader)


def _resume(s: Settings, p: _Plan, lp: _Loop) -> Progress:
    """Load a matching saved state (or start fresh) so an interrupted run goes on after its last whole epoch."""
    progress = load_state(s.state, p.fingerprint, lp.net, lp.opt, s.epochs) if s.state.exists() else Progress()
    if progress.epoch:
        log.info("resuming after epoch %d of %d (state %s)", progress.epoch, s.epochs, s.state)
    if lp.step.scaler is not None and progress.scaler:
        lp.step.scaler.load_state_dict(progress.scaler)
    return progress


def _ceiling(s: Settings, p: _Plan, lp: _Loop, progress: Progress) -> float | None:
    """Time the network alone on random tensors (only when epochs remain): the bound for each epoch's speed."""
    import torch
    size = p.start.input_size
    top = ceiling(lp.net, p.task, lp.loss_fn, s.batch, size, torch.device(s.device), s.amp, s.cuda,
                  s.steps_for_ceiling) if progress.epoch < s.epochs else None
    if top:
        log.info("ceiling: %.1f frames/s (forward+backward of this network on random tensors, batch %d, %d px%s)",
                 top, s.batch, size, f", {s.amp}" if s.amp else "")
    return top


def _train_and_validate(s: Settings, p: _Plan, lp: _Loop, progress: Progress,
                        epoch: int) -> tuple[dict, float, float]:
    """One epoch of training then the validation pass: the epoch's record, its train loss and metric unrounded."""
    import torch
    t0 = time.perf_counter()
    torch.manual_seed(epoch_seed(s.seed, epoch))
    lp.order.epoch = epoch
    train_mode(lp.net, p.frozen_bn)
    train_loss, seen, bad = lp.step.epoch(epoch, lp.train_loader, progress)
    t_train = time.perf_counter() - t0
    scores, decoded = predict(lp.net, p.task, lp.val_loader, s, lp.prep)
    if not decoded.any():
        raise InputError(f"{p.task.name}: no validation crop could be decoded", s.data)
    details = p.task.evaluate(p.val.y[p.val_rows][decoded], scores[decoded])
    metric = float(details[p.task.metric_name])
    rec = {"epoch": epoch, "train_loss": round(train_loss, 6), "val_metric": round(metric, 6),
           "val": {k: round(float(v), 6) for k, v in details.items()},
           "frames": seen, "unreadable": bad + int((~decoded).sum()), "steps": progress.step,
           "seconds": round(time.perf_counter() - t0, 3), "train_seconds": round(t_train, 3),
           "val_seconds": round(time.perf_counter() - t0 - t_train, 3),
           "frames_per_s": round(seen / max(t_train, 1e-9), 2), "val_frames": int(decoded.sum())}
    return rec, train_loss, metric


def _keep(s: Settings, p: _Plan, lp: _Loop, progress: Progress, rec: dict, metric: float) -> bool:
    """Record the epoch, keep its weights if best so far, and save the state so a rerun resumes after it."""
    epoch = rec["epoch"]
    progress.history.append(rec)
    better = progress.best_metric is None or metric > progress.best_metric
    if better:
        progress.best_epoch, progress.best_metric = epoch, metric
        progress.best = {k: v.detach().to("cpu").contiguous().clone() for k, v in lp.net.state_dict().items()}
    progress.epoch = epoch
    progress.scaler = lp.step.scaler.state_dict() if lp.step.scaler is not None else None
    save_state(s.state, p.fingerprint, lp.net, lp.opt, progress)
    return better


def _log_epoch(s: Settings, task: Task, rec: dict, train_loss: float, metric: float, better: bool,
               top: float | None) -> None:
    """One line per epoch: loss, speed against the ceiling, and the validation metric."""
    speed = f"{rec['frames_per_s']:.1f} frames/s" + (f" (ceiling {top:.1f}: {rec['frames_per_s'] / top:.2f}x)"
                                                      if top else "")
    log.info("epoch %d/%d: train loss %.4f on %d frames, %s; val %s %.4f%s; %.1f s", rec["epoch"], s.epochs,
             train_loss, rec["frames"], speed, task.metric_name, metric, " (best so far)" if better else "",
             rec["seconds"])


def finetune(s: Settings, on_epoch: Callable[[int], None] | None = None) -> Result:
    """Fine-tune `s.source` on `s.task`'s labelled crops under `s.data` into `s.out` (see extract.finetune).

    Everything is checked before anything is written: the outputs, the data and its labels, the start network
    and --freeze-until. `on_epoch(epoch)` is called after each epoch's state is saved (tests interrupt there)."""
    p = _plan(s)
    lp = _build(s, p)
    lock = _lock(s)
    try:
        progress = _resume(s, p, lp)
        resumed = progress.epoch
        top = _ceiling(s, p, lp, progress)
        for epoch in range(progress.epoch + 1, s.epochs + 1):
            rec, train_loss, metric = _train_and_validate(s, p, lp, progress, epoch)
            better = _keep(s, p, lp, progress, rec, metric)
            _log_epoch(s, p.task, rec, train_loss, metric, better, top)
            if on_epoch is not None:
                on_epoch(epoch)
        result = _finish(s, p.task, p.start, p.train, p.val, p.val_rows, progress, top, resumed, p.per_epoch)
        s.state.unlink(missing_ok=True)
        return result
    finally:
        lock.release()


def _finish(s: Settings, task: Task, start: Start, train, val, val_rows, p: Progress, top: float | None,
            resumed: int, per_epoch: int) -> Result:
    """Write the best epoch's network with its metadata, and the report beside it."""
    weights = {k[len("model."):]: v for k, v in p.best.items()}
    frames_seen = sum(int(h["frames"]) for h in p.history)
    data = {"root": str(s.data), "labels": train.labels_source, "train_videos": len(train.videos),
            "train_frames": len(train), "train_labelled_without_crop": train.n_without_crop,
            "val_videos": len(val.videos), "val_frames": int(len(val_rows)),
            "val_labelled_without_crop": val.n_without_crop, "frames_per_epoch": per_epoch,
            "frames_seen": frames_seen, "unreadable_frames": sum(int(h["unreadable"]) for h in p.history)}
    training = {**s.training(), "metric": task.metric_name, "best_epoch": p.best_epoch,
                "best_metric": p.best_metric, "optimizer": f"AdamW (weight decay {WEIGHT_DECAY:g})",
                "schedule": f"linear warm-up over {WARMUP:.0%} of the steps, then cosine to 0, per step",
                "steps": p.step, "augmentation": AUGMENTATION, "device": s.device}
    dims = {"embedding": int(start.net.model.num_features), output_name(task): task.n_outputs}
    meta = {"format": FORMAT, "architecture": start.architecture, "input_size": start.input_size,
            "normalization": {"mean": list(start.mean), "std": list(start.std), "scale": "x/255", "color": "rgb"},
            "task": task.name, "class_names": list(task.labels), "outputs": dims, "output_layout": output_layout(task),
            "source": start.record(s.source), "data": data, "training": training,
            "created_by": "affect-features python -m extract finetune"}
    report = {"checkpoint": str(s.out), "task": task.name, "metric": task.metric_name, "best_epoch": p.best_epoch,
              "best_metric": p.best_metric, "epochs": p.history,
              "ceiling_frames_per_s": None if top is None else round(top, 2),
              "ceiling": "forward+backward of the same network on random tensors on the device (same batch, input "
                         "size, amp, memory format; no input pipeline, no optimizer step)",
              "resumed_after_epoch": resumed, "source": start.record(s.source), "data": data, "training": training}
    write_checkpoint(s.out, s.report, weights, meta, report, s.force)
    return Result(s.out, s.report, task.metric_name, int(p.best_epoch), float(p.best_metric), p.history, top, resumed)
