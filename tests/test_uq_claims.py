"""Tests of xcal_core.uq.claims: each claim of notebook 03 can hold, fail and be inconclusive, on planted tables."""

import pandas as pd
import pytest

from xcal_core.runs import VERDICTS
from xcal_core.uq import (
    CV_SUMMARIES,
    claim_beats_random,
    claim_class_differences,
    claim_lowest_cv,
    claim_order_stability,
    claim_true_logit,
    combine_summaries,
)

UE = ["mc_dropout", "dropconnect", "flipout", "ensemble"]
EX = ["guided_backprop", "integrated_gradients", "lime"]


def table(rows):
    return pd.DataFrame(rows, index=UE[: len(rows)], columns=EX)


GBP_LOW = table([[0.1, 0.3, 0.5], [0.2, 0.4, 0.6], [0.1, 0.2, 0.3], [0.3, 0.5, 0.4]])
GBP_HIGH = table([[0.9, 0.3, 0.5], [0.8, 0.4, 0.6], [0.7, 0.2, 0.3], [0.3, 0.5, 0.4]])


def check_row(c, claim_id, verdict):
    assert c["claim_id"] == claim_id and c["verdict"] == verdict and c["verdict"] in VERDICTS
    assert c["paper"] == "uq" and c["statement"] and c["expected"] and c["observed"]
    assert (c["reason"] is None) == (verdict == "holds")


def test_combine_summaries_agree_or_say_so():
    d = {"cv_mean": "a", "cv_global": "b"}
    assert combine_summaries({"cv_mean": True, "cv_global": True}, d)["verdict"] == "holds"
    f = combine_summaries({"cv_mean": False, "cv_global": False}, d)
    assert f["verdict"] == "fails" and CV_SUMMARIES["cv_mean"] in f["reason"]
    i = combine_summaries({"cv_mean": True, "cv_global": False}, d)
    assert i["verdict"] == "inconclusive" and "disagree" in i["reason"]
    assert combine_summaries({"cv_mean": True}, {"cv_mean": "x"}, inconclusive="no power")["reason"] == "no power"
    with pytest.raises(ValueError, match="`details` lacks"):
        combine_summaries({"cv_mean": True}, {})


def test_u1_lowest_cv_holds_fails_and_disagrees():
    check_row(claim_lowest_cv({"cv_mean": GBP_LOW, "cv_global": GBP_LOW}, dataset="fm"), "U1_fm", "holds")
    fails = claim_lowest_cv({"cv_mean": GBP_HIGH, "cv_global": GBP_HIGH}, dataset="fm")
    check_row(fails, "U1_fm", "fails")
    assert "lowest for 1/4" in fails["reason"] and "need 3" in fails["reason"]
    mixed = claim_lowest_cv({"cv_mean": GBP_HIGH, "cv_global": GBP_LOW}, dataset="fm")
    check_row(mixed, "U1_fm", "inconclusive")
    assert "disagree" in mixed["reason"]
    # undefined cells: no verdict on them
    nan = GBP_LOW.copy()
    nan.iloc[0, 1] = float("nan")
    check_row(claim_lowest_cv({"cv_mean": nan, "cv_global": GBP_LOW}, dataset="fm"), "U1_fm", "inconclusive")
    # the regression form: GBP against IG only, LIME ignored
    only_ig = table([[0.1, 0.3, 0.01]] * 4)
    check_row(claim_lowest_cv({"cv_mean": only_ig}, dataset="reg", compare=["guided_backprop", "integrated_gradients"]),
              "U1_reg", "holds")
    assert claim_lowest_cv({"cv_mean": GBP_LOW}, dataset="fm", tag=" [X]")["statement"].endswith(" [X]")
    with pytest.raises(ValueError, match="lacks the explainer columns"):
        claim_lowest_cv({"cv_mean": GBP_LOW}, dataset="fm", compare=["saliency"])
    with pytest.raises(ValueError, match="non-empty mapping"):
        claim_lowest_cv({}, dataset="fm")


def kruskal_table(ps):
    return pd.DataFrame({"ue": UE[: len(ps)], "explainer": "guided_backprop", "H": 1.0, "p_value": ps, "n": 80})


def test_u2_class_differences():
    sig, weak = kruskal_table([0.001, 0.002, 0.5, 0.003]), kruskal_table([0.2, 0.3, 0.5, 0.003])
    check_row(claim_class_differences({"cv_mean": sig, "cv_global": sig}, dataset="fm"), "U2_fm", "holds")
    check_row(claim_class_differences({"cv_mean": weak, "cv_global": weak}, dataset="fm"), "U2_fm", "fails")
    check_row(claim_class_differences({"cv_mean": sig, "cv_global": weak}, dataset="fm"), "U2_fm", "inconclusive")
    # a class with 3 images: too little power to call a non-significant test a failure ...
    small = claim_class_differences({"cv_mean": weak}, dataset="fm", class_counts={0: 20, 1: 3})
    check_row(small, "U2_fm", "inconclusive")
    assert "{1: 3}" in small["reason"]
    # ... but a significant one stands
    check_row(claim_class_differences({"cv_mean": sig}, dataset="fm", class_counts={0: 20, 1: 3}), "U2_fm", "holds")


def ranking_rows(better, too_few=None):
    n = len(better)
    return pd.DataFrame({"ue": UE[:1] * n, "explainer": ["guided_backprop", "integrated_gradients"] * (n // 2),
                         "mode": ["deletion"] * n, "better": better, "p_value": [0.01 if b else 0.4 for b in better],
                         "too_few": too_few or [False] * n})


def test_u3_beats_random():
    check_row(claim_beats_random(ranking_rows([True, True]), dataset="fm"), "U3_fm", "holds")
    f = claim_beats_random(ranking_rows([True, False]), dataset="fm")
    check_row(f, "U3_fm", "fails")
    assert "integrated_gradients deletion p = 0.4" in f["reason"]
    check_row(claim_beats_random(ranking_rows([True, False], [False, True]), dataset="fm"), "U3_fm", "inconclusive")
    with pytest.raises(ValueError, match="holds none of the explainers"):
        claim_beats_random(ranking_rows([True, True]), dataset="fm", explainers=["lime"])


def agreement(n, rho):
    return pd.DataFrame({"ue": "mc_dropout", "explainer": "guided_backprop", "index": range(n), "rho": rho,
                         "wrong_share": 0.2, "misclassified": False, "n_available": n})


def test_u4_true_logit_needs_30_images_and_can_fail():
    kw = dict(dataset="fm", ue_methods=["mc_dropout"], explainers=["guided_backprop"])
    check_row(claim_true_logit(agreement(30, 0.95), **kw), "U4_fm", "holds")
    f = claim_true_logit(agreement(30, 0.5), **kw)
    check_row(f, "U4_fm", "fails")
    assert "0.500 on 30 images" in f["reason"]
    few = claim_true_logit(agreement(29, 0.95), **kw)
    check_row(few, "U4_fm", "inconclusive")
    assert "fewer than 30 images" in few["reason"]
    # a UE method without a single qualifying image counts as 0 images
    missing = claim_true_logit(agreement(40, 0.95), dataset="fm", ue_methods=["mc_dropout", "ensemble"],
                               explainers=["guided_backprop"])
    check_row(missing, "U4_fm", "inconclusive")
    assert "ensemble/guided_backprop (0 images)" in missing["reason"]
    # a failing combination with enough images decides even when another has too few
    check_row(claim_true_logit(pd.concat([agreement(30, 0.5), agreement(3, 0.9).assign(ue="ensemble")]), dataset="fm",
                               ue_methods=["mc_dropout", "ensemble"], explainers=["guided_backprop"]), "U4_fm", "fails")


def test_u5_order_stability():
    same = table([[0.1, 0.2, 0.3], [0.2, 0.3, 0.4], [0.1, 0.5, 0.9], [0.0, 0.1, 0.2]])
    flipped = table([[0.1, 0.2, 0.3], [0.4, 0.3, 0.2], [0.1, 0.5, 0.9], [0.0, 0.1, 0.2]])
    check_row(claim_order_stability({"cv_mean": same, "cv_global": same}, dataset="fm"), "U5_fm", "holds")
    f = claim_order_stability({"cv_mean": flipped, "cv_global": flipped}, dataset="fm")
    check_row(f, "U5_fm", "fails")
    assert "min tau = -1.00" in f["reason"]
    check_row(claim_order_stability({"cv_mean": same, "cv_global": flipped}, dataset="fm"), "U5_fm", "inconclusive")
