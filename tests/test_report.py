"""The closing table's caption says what the held-out split is, and a class without held-out
images shows as n/a, never as nan under a caption that calls the split balanced."""

from dcl_cluster.report import _cell, held_out_caption


def test_caption_of_a_balanced_held_out_split():
    assert held_out_caption([30, 30, 30], ["a", "b", "c"]) == "held-out is balanced (30 images per class)."


def test_caption_names_the_classes_missing_from_the_held_out_split():
    caption = held_out_caption([3, 2, 0], ["ant", "bee", "cat"])
    assert "balanced" not in caption and "3..2" in caption and "['cat']" in caption


def test_a_nan_score_is_shown_as_n_a():
    assert _cell(float("nan")) == "n/a" and _cell(0.5) == "0.500" and _cell(None) == "-"
