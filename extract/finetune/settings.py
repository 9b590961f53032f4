"""The settings of one fine-tuning, every number bounded before anything is read, built or written."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from features.cliargs import INT32_MAX, SEED_MAX, check_int, cpu_count
from features.errors import InputError
from features.losses import check_loss
from features.tasks import get_task

MAX_EPOCHS = 1000
MAX_BATCH = 4096            # a batch of 224 px float crops with its activations: beyond this only memory runs out
MAX_CEILING_STEPS = 1000
MAX_LR = 1
AMPS = (None, "bf16", "fp16")
CROPS = ("auto", "cropped", "cropped_aligned")
WEIGHT_DECAY = 1e-4         # AdamW's decoupled weight decay (recorded in the checkpoint)


def _rate(v, flag: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= MAX_LR:
        raise InputError(f"{flag} must be a learning rate > 0 and <= {MAX_LR:g}, got {v!r}")
    return float(v)


@dataclass
class Settings:
    """What `python -m extract finetune` was asked (see extract.cli for each option's meaning)."""
    task: str
    data: Path
    source: str                       # extractor spec of the starting network (--from)
    out: Path                         # the checkpoint (.safetensors); the report is out.with_suffix(".json")
    epochs: int = 5
    batch: int = 32
    lr: float = 1e-3                  # the new classifier's learning rate
    backbone_lr: float | None = None  # the rest of the network (default lr / 10)
    freeze_until: int = 0             # leading layer groups kept frozen (0: train everything)
    frames_per_video: int = 256       # training frames drawn per video and epoch
    val_frames_per_video: int | None = None   # validation frames per video, evenly spaced (None: all)
    loss: str | None = None           # features.losses name (None: the task's reference loss)
    device: str = "cpu"
    amp: str | None = None            # autocast: bf16 | fp16 (CUDA)
    workers: int = 0                  # decode processes (0: decode in this process)
    seed: int = 0
    crops: str = "auto"
    ceiling_steps: int | None = None  # forward+backward steps timed on random tensors (None: 10 on CUDA, 2 on CPU)
    allow_pickle: bool = False
    force: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)   # not part of the settings proper (kept out of the fingerprint)

    def __post_init__(self) -> None:
        self.task = get_task(self.task).name
        self.data, self.out = Path(self.data), Path(self.out)
        self.epochs = check_int(self.epochs, "--epochs", 1, MAX_EPOCHS)
        self.batch = check_int(self.batch, "--batch", 1, MAX_BATCH)
        self.lr = _rate(self.lr, "--lr")
        self.backbone_lr = self.lr / 10 if self.backbone_lr is None else _rate(self.backbone_lr, "--backbone-lr")
        self.freeze_until = check_int(self.freeze_until, "--freeze-until", 0, 10_000, "leading layer groups")
        self.frames_per_video = check_int(self.frames_per_video, "--frames-per-video", 1, INT32_MAX)
        if self.val_frames_per_video is not None:
            self.val_frames_per_video = check_int(self.val_frames_per_video, "--val-frames-per-video", 1, INT32_MAX)
        self.loss = check_loss(self.loss, get_task(self.task))
        if self.amp not in AMPS:
            raise InputError(f"--amp must be bf16 or fp16, got {self.amp!r}")
        self.workers = check_int(self.workers, "--workers", 0, 2 * cpu_count(), "decode processes")
        self.seed = check_int(self.seed, "--seed", 0, SEED_MAX)
        if self.crops not in CROPS:
            raise InputError(f"--crops must be one of {', '.join(CROPS)}, got {self.crops!r}")
        if self.ceiling_steps is not None:
            self.ceiling_steps = check_int(self.ceiling_steps, "--ceiling-steps", 0, MAX_CEILING_STEPS)
        if not str(self.source).strip():
            raise InputError("--from is empty: give the extractor spec to start from (e.g. enet_b0_8_va_mtl:ckpt)")
        if self.out.suffix != ".safetensors":
            raise InputError("--out must end in .safetensors (the checkpoint is a safetensors file)", self.out)
        self.device = str(self.device)
        if not (self.device == "cpu" or self.device == "cuda" or
                (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise InputError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.amp == "fp16" and not self.cuda:
            raise InputError("--amp fp16 needs a CUDA device (use bf16 on a CPU)")

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def report(self) -> Path:
        return self.out.with_suffix(".json")

    @property
    def state(self) -> Path:
        """The sidecar state of an unfinished run (deleted when the checkpoint is written)."""
        return self.out.with_suffix(".state.safetensors")

    @property
    def steps_for_ceiling(self) -> int:
        return self.ceiling_steps if self.ceiling_steps is not None else (10 if self.cuda else 2)

    def training(self) -> dict:
        """The settings that decide the result (recorded in the checkpoint; a resumed run must match them)."""
        d = asdict(self)
        for k in ("data", "out", "device", "workers", "allow_pickle", "force", "progress", "extra",
                  "ceiling_steps", "source"):
            d.pop(k)
        return d

    def fingerprint(self, **facts) -> str:
        """The training settings and facts of the data and start network, as one canonical JSON text."""
        return json.dumps({**self.training(), **facts}, sort_keys=True)
