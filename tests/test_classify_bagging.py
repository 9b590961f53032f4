"""Bagging + meta-vote (EXPR): the vote rules by hand, the head's decisions follow its rule, bad rules refused."""
import numpy as np
import pytest

import classify  # noqa: E402,F401  (sets the OpenMP wait policy before torch loads)
pytest.importorskip("torch")

from classify.bagging import BaggingHead, meta_vote, parse_priority  # noqa: E402
from classify.fusion import FusionMLPHead  # noqa: E402
from features.errors import InputError  # noqa: E402
from features.synthetic import make_feature_data  # noqa: E402
from features.tasks import EXPR  # noqa: E402


def test_meta_vote_by_hand():
    # 3 sub-classifiers, 4 rows
    pred = np.array([[1, 2, 7, 0],
                     [1, 3, 0, 0],
                     [4, 3, 0, 5]])
    d, v = meta_vote(pred, 8)
    assert d.tolist() == [1, 3, 0, 0]
    assert v[0, 1] == pytest.approx(2 / 3) and v[2, 7] == pytest.approx(1 / 3)
    # priority Other (7) then Fear (3): row 2 has one vote of 3 for Other (>= 1/3) -> Other; row 1 -> Fear
    d, _ = meta_vote(pred, 8, "priority", [7, 3], quorum=1 / 3)
    assert d.tolist() == [1, 3, 7, 0]
    d, _ = meta_vote(pred, 8, "priority", [7, 3], quorum=0.5)          # Other needs 2 of 3 votes now
    assert d.tolist() == [1, 3, 0, 0]
    # a tie (three different classes) goes to the higher mean probability
    mp = np.zeros((4, 8))
    mp[:, 5] = 1
    assert meta_vote(pred, 8, mean_proba=mp)[0][3] == 0                 # not a tie: 0 has 2 votes
    assert parse_priority(["other", "Fear", 0], EXPR.labels) == [7, 3, 0]
    with pytest.raises(InputError, match="priority class 'joy' is not one of Neutral"):
        parse_priority(["joy"], EXPR.labels)


def test_bagging_head_follows_its_rule():
    d = make_feature_data(4000, 16, 12, seed=4, noise=0.5)
    tr = d.video < 8
    X, y = np.asarray(d.X, np.float32), d.y_expr
    h = BaggingHead("expr", estimator=FusionMLPHead("expr", epochs=6), n_estimators=3, max_samples=0.7)
    p = h.fit(X[tr], y[tr]).predict_proba(X[~tr])
    assert len(h.estimators_) == 3 and np.allclose(p.sum(1), 1, atol=1e-5)
    subs = np.stack([e.predict_proba(X[~tr]).argmax(1) for e in h.estimators_])
    dec, _ = meta_vote(subs, 8, mean_proba=np.mean([e.predict_proba(X[~tr]) for e in h.estimators_], 0))
    assert (p.argmax(1) == dec).all()
    single = np.mean([EXPR.score(y[~tr], e.predict_proba(X[~tr])) for e in h.estimators_])
    assert EXPR.score(y[~tr], p) > max(0.2, single - 0.03), (EXPR.score(y[~tr], p), single)   # chance ~0.12
    pr = BaggingHead("expr", estimator=FusionMLPHead("expr", epochs=2), n_estimators=3, max_samples=0.7,
                     rule="priority", priority=["Other"]).fit(X[tr], y[tr]).predict_proba(X[~tr])
    assert (pr.argmax(1) == 7).sum() >= (p.argmax(1) == 7).sum()       # Other favoured
    with pytest.raises(InputError, match="unknown meta-rule 'vote'"):
        BaggingHead("expr", rule="vote").fit(X[:50], y[:50])
    with pytest.raises(InputError, match="needs a class order"):
        BaggingHead("expr", rule="priority").fit(X[:50], y[:50])
    with pytest.raises(InputError, match="for the EXPR task, not va"):
        BaggingHead("va").fit(X[:50], d.y_va[:50])
