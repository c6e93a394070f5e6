"""Results files from elsewhere, for the leaderboard: refused with one located line each when they
cannot be trusted (wrong types, absurd numbers, a kind that is a list or a string, NaN literals)."""

from __future__ import annotations

import json

import pytest

from evaluation.leaderboard import build_leaderboard
from evaluation.schema import check_results
from fmuia.cli import main
from fmuia.errors import FmuiaError

GOOD = {"segmentation": {"cervix": {"DSC": 0.7, "HD": 10.0, "num_samples": 2}}}

BAD = {
    "kind_is_a_list": ({"segmentation": [1, 2]}, "segmentation: expected an object of task blocks, got list"),
    "kind_is_a_string": ({"classification": "abc"}, "classification: expected an object of task blocks, got str"),
    "block_is_a_number": ({"detection": {"thyroid_nodule_det": 3}}, "detection.thyroid_nodule_det: expected an object"),
    "metric_is_a_string": ({"segmentation": {"cervix": {"DSC": "high"}}}, "DSC must be a number or null, got str"),
    "metric_is_a_bool": ({"segmentation": {"cervix": {"DSC": True}}}, "DSC must be a number or null, got bool"),
    "dice_above_one": ({"segmentation": {"cervix": {"DSC": 1e308}}}, "DSC = 1e+308 is outside 0..1"),
    "negative_distance": ({"regression": {"FUGC": {"MRE": -5.0}}}, "MRE = -5.0 is outside 0..1e+07"),
    "mcc_below_minus_one": ({"classification": {"organ_cls": {"MCC": -2}}}, "MCC = -2.0 is outside -1..1"),
    "huge_integer": ({"segmentation": {"cervix": {"HD": 10**400}}}, "HD is beyond the float range"),
    "count_not_an_int": ({"segmentation": {"cervix": {"num_samples": "x"}}}, "num_samples must be a non-negative integer"),
    "per_case_not_a_list": ({**GOOD, "per_case": {"a": 1}}, "per_case: expected a list, got dict"),
    "aggregates_a_list": ({**GOOD, "aggregates": [1]}, "aggregates: expected an object, got list"),
    "aggregate_out_of_range": ({**GOOD, "aggregates": {"seg_DSC": 7.0}}, "seg_DSC = 7.0 is outside 0..1"),
    "no_kind": ({"mode": "strict"}, "not a results.json"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_check_results_names_the_problem(name):
    obj, expected = BAD[name]
    problems = check_results(obj)
    assert any(expected in p for p in problems), problems


def test_good_and_real_results_pass(synth_root, perfect):
    from evaluation.scoring import evaluate

    assert check_results(GOOD) == []
    for mode in ("strict", "official"):
        assert check_results(json.loads(json.dumps(evaluate(perfect, synth_root, mode=mode, n_bootstrap=20)))) == []


@pytest.mark.parametrize("name", ["kind_is_a_list", "dice_above_one", "metric_is_a_bool"])
def test_leaderboard_refuses_in_memory_and_on_disk(name, tmp_path, capsys):
    obj, expected = BAD[name]
    with pytest.raises(FmuiaError) as info:
        build_leaderboard({"good": GOOD, "bad": obj}, n_bootstrap=0)
    assert any(expected in line for line in info.value.lines())
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "results.json").write_text(json.dumps(GOOD))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps(obj))
    with pytest.raises(SystemExit) as code:
        main(["leaderboard", str(tmp_path / "good"), str(tmp_path / "bad"), "--out", str(tmp_path / "o"), "--bootstrap", "0"])
    err = capsys.readouterr().err
    assert code.value.code == 2 and "Traceback" not in err and expected in err and "bad/results.json" in err
    assert not (tmp_path / "o" / "leaderboard.csv").exists()


@pytest.mark.parametrize("text, expected", [
    ('{"segmentation": {"cervix": {"DSC": NaN}}}', "NaN is not a JSON number"),
    ('{"segmentation": {"cervix": {"DSC": Infinity}}}', "Infinity is not a JSON number"),
    ("[" * 100_000 + "]" * 100_000, "not valid UTF-8 JSON"),
    ('{"segmentation": {}}'.encode("utf-16").decode("latin-1"), "not valid UTF-8 JSON"),
])
def test_unreadable_results_files(text, expected, tmp_path, capsys):
    f = tmp_path / "r" / "results.json"
    f.parent.mkdir()
    f.write_text(text, encoding="latin-1")
    with pytest.raises(SystemExit) as code:
        main(["leaderboard", str(f), "--out", str(tmp_path / "o"), "--bootstrap", "0"])
    err = capsys.readouterr().err
    assert code.value.code == 2 and expected in err and "Traceback" not in err
