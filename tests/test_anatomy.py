"""Structure names for objects: completion and stable colours."""

from __future__ import annotations

from hrmedsegsam.anatomy import NAMES, color_for, suggest


def test_vocabulary_covers_public_label_sets() -> None:
    for name in (
        "liver",
        "spleen",
        "kidney_left",
        "inferior_vena_cava",
        "prostate_or_uterus",
        "vertebrae_L1",
    ):
        assert name in NAMES
    assert list(NAMES) == sorted(set(NAMES))


def test_suggest_completes_prefixes_first() -> None:
    assert all(n.startswith("kidney") for n in suggest("Kidney"))
    assert "vertebrae_L1" in suggest("vertebrae l", limit=50)
    assert "inferior_vena_cava" in suggest("vena")  # contained, not only prefixes
    assert suggest("zzz") == []


def test_colors_are_stable_and_valid() -> None:
    assert color_for("liver") == color_for(" Liver ")
    assert color_for("liver") != color_for("spleen")
    assert all(0 <= c <= 255 for c in color_for("aorta"))
