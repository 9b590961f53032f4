"""Each loss by name against a hand computation on a few rows; unknown or misplaced names refused."""
import math

import numpy as np
import pytest

import classify  # noqa: E402,F401  (sets the OpenMP wait policy before torch loads)
torch = pytest.importorskip("torch")

from classify.losses import LOSSES, check_loss, make_loss  # noqa: E402
from features.errors import InputError  # noqa: E402
from features.tasks import AU, EXPR, VA  # noqa: E402

sig = lambda x: 1 / (1 + math.exp(-x))


def t(a, dtype=torch.float32):
    return torch.tensor(a, dtype=dtype)


def test_weighted_ce_and_dice_by_hand():
    # 3 classes of 8 present in training: counts 2, 1, 1 -> weights 0.5, 1, 1 scaled to min 1 -> 1, 2, 2
    y_train = np.array([0, 0, 1, 2])
    z = [[2.0, 0, 0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0, 0, 0]]
    y = [0, 1]
    lse0 = math.log(math.exp(2) + 7)
    lse1 = math.log(math.exp(1) + 7)
    ce0, ce1 = lse0 - 2, lse1 - 1
    want_ce = (1 * ce0 + 2 * ce1) / (1 + 2)
    got = make_loss("ce", EXPR, y_train)(t(z), t(y, torch.long)).item()
    assert got == pytest.approx(want_ce, rel=1e-5)
    # Dice: per class 2 Σ p y / (Σ p + Σ y), mean over the 8 classes
    p = np.exp(np.array(z)) / np.exp(np.array(z)).sum(1, keepdims=True)
    oh = np.eye(8)[y]
    dice = (2 * (p * oh).sum(0) + 1e-6) / (p.sum(0) + oh.sum(0) + 1e-6)
    got = make_loss("ce_dice", EXPR, y_train, lam=0.5)(t(z), t(y, torch.long)).item()
    assert got == pytest.approx(want_ce + 0.5 * (1 - dice.mean()), rel=1e-5)


def _au_case():
    y_train = np.zeros((4, 12))
    y_train[:1, 0] = 1                      # AU1: pos 1/4 -> w1 = 2, w0 = 2/3; other AUs: pos clipped to 1e-6
    z = np.zeros((2, 12))
    z[0, 0], z[1, 0] = 1.5, -0.5
    y = np.zeros((2, 12))
    y[0, 0] = 1
    return y_train, z, y


def test_weighted_bce_focal_and_asl_by_hand():
    y_train, z, y = _au_case()
    pos = np.clip(y_train.mean(0), 1e-6, 1 - 1e-6)
    w1, w0 = 0.5 / pos, 0.5 / (1 - pos)
    p = 1 / (1 + np.exp(-z))
    bce = -(w1 * y * np.log(p) + w0 * (1 - y) * np.log(1 - p)).mean()
    assert make_loss("bce", AU, y_train)(t(z), t(y)).item() == pytest.approx(bce, rel=1e-5)
    # focal, γ = 2, no α: (1 - p_t)² · (-log p_t)
    pt = np.where(y == 1, p, 1 - p)
    focal = ((1 - pt) ** 2 * -np.log(pt)).mean()
    assert make_loss("focal", AU, y_train)(t(z), t(y)).item() == pytest.approx(focal, rel=1e-5)
    # one element checked fully by hand: AU1 of row 0 (positive, z = 1.5)
    e = (1 - sig(1.5)) ** 2 * -math.log(sig(1.5))
    assert focal * 24 == pytest.approx(e + sum((1 - pt.flat[i]) ** 2 * -math.log(pt.flat[i])
                                                for i in range(1, 24)), rel=1e-9)
    # weighted asymmetric: positives (1-p)^0 log p, negatives p_m^4 log(1 - p_m), p_m = max(p - 0.05, 0)
    pm = np.clip(p - 0.05, 0, None)
    asl = -(w1 * y * np.log(p) + w0 * (1 - y) * pm ** 4 * np.log(1 - pm)).mean()
    assert make_loss("asl", AU, y_train)(t(z), t(y)).item() == pytest.approx(asl, rel=1e-5)
    # a hard negative costs ASL less than BCE; an easy one (p < m) costs nothing
    assert make_loss("asl", AU, y_train)(t(z[1:]), t(y[1:])).item() < \
        make_loss("bce", AU, y_train)(t(z[1:]), t(y[1:])).item()


def test_ccc_and_mse_ccc_by_hand():
    yt = np.array([[0.1, 0.5], [0.4, -0.2], [-0.3, 0.0]])
    yp = np.array([[0.2, 0.3], [0.1, -0.1], [-0.2, 0.2]])
    c = []
    for j in range(2):
        a, b = yt[:, j], yp[:, j]
        c.append(2 * np.mean((a - a.mean()) * (b - b.mean())) / (a.var() + b.var() + (a.mean() - b.mean()) ** 2))
    assert make_loss("ccc", VA, yt)(t(yp), t(yt)).item() == pytest.approx(1 - np.mean(c), rel=1e-5)
    assert make_loss("mse_ccc", VA, yt)(t(yp), t(yt)).item() == pytest.approx(
        np.mean((yt - yp) ** 2) + 1 - np.mean(c), rel=1e-5)
    assert make_loss(None, VA, yt)(t(yt), t(yt)).item() == pytest.approx(0, abs=1e-6)   # default: ccc


def test_loss_names_refused_with_one_line():
    with pytest.raises(InputError, match=r"unknown loss 'dice'; for expr choose from ce, ce_dice"):
        check_loss("dice", EXPR)
    with pytest.raises(InputError, match="loss 'focal' is for multilabel tasks, not va"):
        check_loss("focal", VA)
    assert {check_loss(None, k) for k in (EXPR, AU, VA)} == {"ce", "bce", "ccc"}
    assert set(LOSSES) == {"ce", "ce_dice", "bce", "focal", "asl", "ccc", "mse_ccc"}
