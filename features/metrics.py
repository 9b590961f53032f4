"""Official ABAW metrics: CCC / P_VA, macro F1 over the 8 expressions, macro F1 over the 12 action units.

CCC and the multilabel F1 are vectorised over columns (one pass for all outputs); the single-label F1 and
accuracy come from scikit-learn.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray | float:
    """Concordance correlation coefficient per column, with population (ddof=0) statistics.

    1-D inputs give a float; 2-D inputs give one value per column.
    """
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"ccc: shapes differ: {t.shape} vs {p.shape}")
    mt, mp = t.mean(axis=0), p.mean(axis=0)
    vt, vp = t.var(axis=0), p.var(axis=0)
    cov = ((t - mt) * (p - mp)).mean(axis=0)
    denom = vt + vp + (mt - mp) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom > 0, 2 * cov / np.where(denom > 0, denom, 1), 0.0)
    return float(out) if out.ndim == 0 else out


def p_va(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """P_VA = (CCC_valence + CCC_arousal) / 2 for (n, 2) arrays."""
    return float(np.mean(ccc(y_true, y_pred)))


def expr_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 8) -> float:
    """Macro F1 over all classes 0..n_classes-1; absent classes count (as zero F1), as the challenge does."""
    return float(f1_score(y_true, y_pred, labels=np.arange(n_classes), average="macro", zero_division=0))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(accuracy_score(y_true, y_pred))


def f1_per_column(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Binary F1 of each column of 0/1 matrices (n, m); a column with no positives at all scores 0."""
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    if t.shape != p.shape:
        raise ValueError(f"f1: shapes differ: {t.shape} vs {p.shape}")
    tp = np.count_nonzero(t & p, axis=0)
    fp = np.count_nonzero(~t & p, axis=0)
    fn = np.count_nonzero(t & ~p, axis=0)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def au_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """P_AU: mean binary F1 over the AU columns."""
    return float(np.mean(f1_per_column(y_true, y_pred)))
