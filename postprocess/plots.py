"""PNG figures (matplotlib, Agg backend): metric against k with the chosen k marked, and per-video timelines of
predictions before and after smoothing against the labels.

`path` is a file name (written through features.outputs: never over an existing file without force, never
through a link) or a binary file object, as `features.outputs.Outputs.write` hands one to a command that plans
all its outputs first."""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

from features.outputs import Outputs, data_names, write_output  # noqa: E402
from features.tasks import Task, get_task  # noqa: E402

from .segments import Segments  # noqa: E402


def _save(fig, path: str | os.PathLike | IO[bytes], force: bool) -> str:
    """The figure to a file name through the one writer (format from its extension, PNG by default), or as PNG
    to a file object; the figure is closed."""
    try:
        if isinstance(path, (str, os.PathLike)):
            fmt = os.path.splitext(os.fspath(path))[1][1:].lower() or "png"
            write_output(path, lambda f: fig.savefig(f, format=fmt), force=force)
            return os.fspath(path)
        fig.savefig(path, format="png")
        return getattr(path, "name", "")
    finally:
        plt.close(fig)


def plot_sweep(table: pd.DataFrame, task: Task | str, path: str | os.PathLike | IO[bytes],
               chosen_k: int | None = None, title: str | None = None, force: bool = False) -> str:
    """Metric by k (thick) and per-output details (thin), the chosen k marked."""
    task = get_task(task)
    m = task.metric_name
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    detail = [c for c in table.columns if c.startswith(("ccc_", "f1_"))]
    for c in detail:
        ax.plot(table["k"], table[c], lw=0.8, alpha=0.35)
    ax.plot(table["k"], table[m], color="black", lw=2, label=m)
    if chosen_k is not None and (table["k"] == chosen_k).any():
        v = float(table.loc[table["k"] == chosen_k, m].iloc[0])
        ax.axvline(chosen_k, color="tab:red", ls="--", lw=1)
        ax.plot([chosen_k], [v], "o", color="tab:red", label=f"k = {chosen_k}: {v:.4f}")
    ax.set_xlabel("k (window = 2k + 1 frames)")
    ax.set_ylabel(m)
    ax.set_title(title or f"{task.name.upper()}: {m} by smoothing half-width k")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path, force)


def plot_timeline(task: Task | str, frame: np.ndarray, raw: np.ndarray, smoothed: np.ndarray,
                  path: str | os.PathLike | IO[bytes], y: np.ndarray | None = None, title: str = "",
                  columns: Sequence[int] = (0, 1, 2), force: bool = False) -> str:
    """One video: VA two panels (lines), EXPR class-probability heat strips before/after plus the label,
    AU a few units (probabilities and 0/1 labels)."""
    task = get_task(task)
    frame = np.asarray(frame)
    if task.kind == "multiclass":
        labelled = y is not None                 # without labels (a prediction) no empty label strip
        fig, axes = plt.subplots(3 if labelled else 2, 1, figsize=(10, 5 if labelled else 4.3), dpi=100,
                                 sharex=True, gridspec_kw={"height_ratios": [3, 3, 1] if labelled else [3, 3]})
        ext = [frame[0], frame[-1], -0.5, task.n_outputs - 0.5]
        for ax, s, name in zip(axes[:2], (raw, smoothed), ("raw", "smoothed")):
            ax.imshow(np.asarray(s).T, aspect="auto", origin="lower", extent=ext, cmap="viridis",
                      interpolation="nearest", vmin=0, vmax=1)
            s = np.asarray(s)
            top = np.where(np.isfinite(s).all(axis=1), np.argmax(np.nan_to_num(s, nan=-1.0), axis=1), np.nan)
            ax.plot(frame, top, ".", ms=1, color="white")        # no dot for a frame left empty
            ax.set_yticks(range(task.n_outputs), task.labels, fontsize=6)
            ax.set_ylabel(name)
        if y is not None:
            yy = np.where(np.asarray(y) == task.invalid, np.nan, y)
            axes[2].plot(frame, yy, color="black", lw=1, drawstyle="steps-mid")
            axes[2].set_ylim(-0.5, task.n_outputs - 0.5)
            axes[2].set_yticks(range(task.n_outputs), task.labels, fontsize=5)
            axes[2].set_ylabel("label")
    else:
        cols = list(range(task.n_outputs)) if task.kind == "regression" else list(columns)
        fig, axes = plt.subplots(len(cols), 1, figsize=(10, 1.8 * len(cols) + 0.6), dpi=100, sharex=True,
                                 squeeze=False)
        for ax, j in zip(axes[:, 0], cols):
            ax.plot(frame, np.asarray(raw)[:, j], lw=0.6, alpha=0.5, label="raw")
            ax.plot(frame, np.asarray(smoothed)[:, j], lw=1.5, label="smoothed")
            if y is not None:
                yy = np.asarray(y, np.float64)[:, j]
                ax.plot(frame, np.where(yy == task.invalid, np.nan, yy), color="black", lw=1, label="label")
            ax.set_ylabel(task.labels[j])
            ax.grid(alpha=0.3)
        axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
        axes = axes[:, 0]
    axes[-1].set_xlabel("frame")
    fig.suptitle(title or f"{task.name.upper()} timeline")
    fig.tight_layout()
    return _save(fig, path, force)


def timeline_files(folder: Path, videos: Sequence[object], prefix: str = "") -> list[Path]:
    """One PNG name per video in `folder`, `<prefix><video>.png` (a name that is not a safe file name, or too
    long, is made one: features.outputs.data_names)."""
    return [folder / n for n in data_names(videos, ".png", prefix=prefix)]


def write_timelines(outs: Outputs, files: Sequence[Path], videos: Sequence[int], seg: Segments, task: Task | str,
                    frame: np.ndarray, raw: np.ndarray, smoothed: np.ndarray, y: np.ndarray | None = None,
                    title: Callable[[str], str] = "{}: raw vs smoothed".format, progress: bool = False
                    ) -> list[Path]:
    """`files[i]`: the timeline of video `videos[i]` (its index in `seg`), raw vs smoothed (vs labels `y`),
    written through `outs` (the command's other outputs are renamed with them)."""
    for p, i in tqdm(list(zip(files, videos)), desc="timelines", leave=False, disable=not progress):
        a, b = seg.starts[i], seg.ends[i]
        outs.write(p, lambda f: plot_timeline(task, frame[a:b], raw[a:b], smoothed[a:b], f,
                                              None if y is None else y[a:b], title=title(str(seg.names[i]))))
    return list(files)
