"""Section arithmetic against hand-computed cases."""

from __future__ import annotations

import pytest

from prefsmith.evaluation.sections import SECTIONS, section_scores, subset_results


def test_ties_count_as_wrong():
    r = subset_results([("hep-go", 0.0), ("hep-go", 1e-9), ("hep-go", -1.0)])
    assert (r["hep-go"].correct, r["hep-go"].total) == (1, 3)


def test_sections_are_count_weighted_and_overall_is_their_mean():
    pairs = (
        [("alpacaeval-easy", 1.0)] * 3  # 3/3
        + [("alpacaeval-hard", -1.0)]  # 0/1 -> Chat = 3/4
        + [("xstest-should-refuse", 1.0), ("xstest-should-refuse", 0.0)]  # Safety = 1/2
    )
    scores = section_scores(subset_results(pairs))
    assert scores["Chat"] == pytest.approx(0.75)
    assert scores["Safety"] == pytest.approx(0.5)
    assert "Chat Hard" not in scores and "Reasoning" not in scores  # missing sections
    assert scores["Overall"] == pytest.approx((0.75 + 0.5) / 2)


def test_reasoning_weights_math_and_code_half_and_half():
    pairs = [("math-prm", 1.0)] * 1 + [("math-prm", -1.0)] * 3  # math 1/4
    pairs += [("hep-python", 1.0)] * 9 + [("hep-rust", -1.0)]  # code 9/10
    scores = section_scores(subset_results(pairs))
    assert scores["Reasoning"] == pytest.approx((0.25 + 0.9) / 2)


def test_unknown_subsets_stay_out_of_sections():
    results = subset_results([("my-subset", 1.0), ("llmbar-natural", -1.0)])
    assert results["my-subset"].accuracy == 1.0
    scores = section_scores(results)
    assert scores == {"Chat Hard": 0.0, "Overall": 0.0}


def test_mapping_has_the_official_rewardbench_counts():
    assert sum(SECTIONS["Chat"].values()) == 358
    assert sum(SECTIONS["Chat Hard"].values()) == 456
    assert SECTIONS["Reasoning"]["math-prm"] == 447
