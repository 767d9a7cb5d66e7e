"""Anatomical structure names for naming objects, and a stable colour for each name.

The vocabulary is the union of the class names of TotalSegmentator (CT ``total`` and MR
``total_mr`` tasks) and of the AMOS22 abdominal organs, in their snake_case spelling, so
that names typed by annotators match the names public label sets use. Free text stays
allowed: :func:`suggest` only completes.
"""

from __future__ import annotations

import hashlib

#: Known structure names (sorted, snake_case).
NAMES: tuple[str, ...] = (
    "adrenal_gland_left",
    "adrenal_gland_right",
    "aorta",
    "atrial_appendage_left",
    "autochthon_left",
    "autochthon_right",
    "bladder",
    "brachiocephalic_trunk",
    "brachiocephalic_vein_left",
    "brachiocephalic_vein_right",
    "brain",
    "clavicula_left",
    "clavicula_right",
    "colon",
    "common_carotid_artery_left",
    "common_carotid_artery_right",
    "costal_cartilages",
    "duodenum",
    "esophagus",
    "femur_left",
    "femur_right",
    "gallbladder",
    "gluteus_maximus_left",
    "gluteus_maximus_right",
    "gluteus_medius_left",
    "gluteus_medius_right",
    "gluteus_minimus_left",
    "gluteus_minimus_right",
    "heart",
    "hip_left",
    "hip_right",
    "humerus_left",
    "humerus_right",
    "iliac_artery_left",
    "iliac_artery_right",
    "iliac_vena_left",
    "iliac_vena_right",
    "iliopsoas_left",
    "iliopsoas_right",
    "inferior_vena_cava",
    "intervertebral_discs",
    "kidney_cyst_left",
    "kidney_cyst_right",
    "kidney_left",
    "kidney_right",
    "liver",
    "lung_left",
    "lung_lower_lobe_left",
    "lung_lower_lobe_right",
    "lung_middle_lobe_right",
    "lung_right",
    "lung_upper_lobe_left",
    "lung_upper_lobe_right",
    "pancreas",
    "portal_vein_and_splenic_vein",
    "prostate",
    "prostate_or_uterus",
    "pulmonary_vein",
    "rib_left_1",
    "rib_left_10",
    "rib_left_11",
    "rib_left_12",
    "rib_left_2",
    "rib_left_3",
    "rib_left_4",
    "rib_left_5",
    "rib_left_6",
    "rib_left_7",
    "rib_left_8",
    "rib_left_9",
    "rib_right_1",
    "rib_right_10",
    "rib_right_11",
    "rib_right_12",
    "rib_right_2",
    "rib_right_3",
    "rib_right_4",
    "rib_right_5",
    "rib_right_6",
    "rib_right_7",
    "rib_right_8",
    "rib_right_9",
    "sacrum",
    "scapula_left",
    "scapula_right",
    "skull",
    "small_bowel",
    "spinal_cord",
    "spleen",
    "sternum",
    "stomach",
    "subclavian_artery_left",
    "subclavian_artery_right",
    "superior_vena_cava",
    "thyroid_gland",
    "trachea",
    "urinary_bladder",
    "vertebrae",
    "vertebrae_C1",
    "vertebrae_C2",
    "vertebrae_C3",
    "vertebrae_C4",
    "vertebrae_C5",
    "vertebrae_C6",
    "vertebrae_C7",
    "vertebrae_L1",
    "vertebrae_L2",
    "vertebrae_L3",
    "vertebrae_L4",
    "vertebrae_L5",
    "vertebrae_S1",
    "vertebrae_T1",
    "vertebrae_T10",
    "vertebrae_T11",
    "vertebrae_T12",
    "vertebrae_T2",
    "vertebrae_T3",
    "vertebrae_T4",
    "vertebrae_T5",
    "vertebrae_T6",
    "vertebrae_T7",
    "vertebrae_T8",
    "vertebrae_T9",
)


def suggest(prefix: str, limit: int = 10) -> list[str]:
    """Up to ``limit`` known names that start with ``prefix`` (case and spaces/underscores
    ignored), then names that contain it.
    """
    key = prefix.strip().lower().replace(" ", "_")
    if not key:
        return list(NAMES[:limit])
    starts = [n for n in NAMES if n.lower().startswith(key)]
    inside = [n for n in NAMES if key in n.lower() and n not in starts]
    return (starts + inside)[:limit]


def color_for(name: str) -> tuple[int, int, int]:
    """A stable, saturated RGB colour (0..255) for ``name``: the same name gets the same
    colour in every session and export.
    """
    h = (
        int.from_bytes(hashlib.sha1(name.strip().lower().encode("utf-8")).digest()[:2], "big")
        / 65535.0
    )
    i, f = int(h * 6) % 6, (h * 6) % 1.0
    v, s = 230, 0.75
    p, q, t = int(v * (1 - s)), int(v * (1 - s * f)), int(v * (1 - s * (1 - f)))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


__all__ = ["NAMES", "suggest", "color_for"]
