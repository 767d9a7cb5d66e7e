"""Classes 6 and 7 of issue 16 for model weights and devices: malformed, damaged or NaN
weights are refused in one line before anything large is built; a model that computes
NaN says so instead of returning an empty mask."""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hrmedsegsam.errors import WeightsError
from hrmedsegsam.model.build import (
    build_model,
    default_weights_path,
    load_model,
    read_weights,
    save_weights,
)


def _edited(src: Path, dst: Path, edit: Callable[[dict[str, Any]], object]) -> Path:
    """A copy of the weights file ``src`` with its payload changed by ``edit``."""
    payload = torch.load(src, weights_only=True)
    edit(payload)
    torch.save(payload, dst)
    return dst


def _without_checksum(
    edit: Callable[[dict[str, Any]], object],
) -> Callable[[dict[str, Any]], None]:
    def run(payload: dict[str, Any]) -> None:
        payload.pop("sha256", None)
        edit(payload)

    return run


HOSTILE_PAYLOADS = {
    # name -> (edit of the payload, fragment of the one error line)
    "state_is_list": (
        lambda p: p.update(state_dict=list(p["state_dict"].values())),
        "not a mapping",
    ),
    "state_is_none": (lambda p: p.update(state_dict=None), "not a mapping"),
    "state_is_empty": (lambda p: p.update(state_dict={}), "not a mapping"),
    "state_of_strings": (
        lambda p: p.update(state_dict={k: "x" for k in p["state_dict"]}),
        "not named tensors",
    ),
    "state_int_keys": (
        lambda p: p.update(state_dict=dict(enumerate(p["state_dict"].values()))),
        "not named tensors",
    ),
    "payload_is_list": (
        lambda p: (p.clear(), p.update(format="x")),
        "not an hrmedsegsam weights file",
    ),
    "config_is_list": (lambda p: p.update(config=[1, 2]), "not a mapping"),
    "config_strings": (
        lambda p: p["config"].update(image_size="1024"),
        "image_size must be an integer",
    ),
    "config_bool": (
        lambda p: p["config"].update(encoder_dim=True),
        "encoder_dim must be an integer",
    ),
    "config_float": (
        lambda p: p["config"].update(decoder_mlp_dim=256.0),
        "decoder_mlp_dim must be an integer",
    ),
    "config_negative": (
        lambda p: p["config"].update(encoder_dim=-96),
        "encoder_dim must be an integer",
    ),
    "config_huge_dim": (
        lambda p: p["config"].update(encoder_dim=10**7),
        "encoder_dim must be an integer",
    ),
    "config_huge_image": (
        lambda p: p["config"].update(image_size=2**40),
        "image_size must be an integer",
    ),
    "config_huge_depth": (
        lambda p: p["config"].update(encoder_depths=[10**6, 1, 1]),
        "encoder_depths entry",
    ),
    "config_stem_string": (
        lambda p: p["config"].update(encoder_stem="resnet"),
        "encoder_stem must be",
    ),
    "config_huge_mid_dim": (
        lambda p: p["config"].update(encoder_mid_dim=10**6),
        "encoder_mid_dim must be",
    ),
    "config_mid_dim_split": (lambda p: p["config"].update(encoder_mid_dim=100), "do not split"),
    "config_many_blocks": (lambda p: p["config"].update(encoder_depths=[30, 30, 30]), "at most 32"),
    "config_depths_string": (
        lambda p: p["config"].update(encoder_depths="226"),
        "list of 3 integers",
    ),
    "config_heads_two": (lambda p: p["config"].update(encoder_heads=[6, 12]), "list of 3 integers"),
    "config_heads_zero": (
        lambda p: p["config"].update(encoder_heads=[0, 12, 24]),
        "encoder_heads entry",
    ),
    "config_heads_split": (lambda p: p["config"].update(encoder_heads=[5, 12, 24]), "do not split"),
    "config_image_not_16": (lambda p: p["config"].update(image_size=1000), "multiple of 16"),
    "config_unknown_key": (lambda p: p["config"].update(layers=3), "unknown keys"),
    "nan_weights": (
        lambda p: p["state_dict"]["image_encoder.norm.weight"].fill_(float("nan")),
        "nan or infinite",
    ),
    "inf_weights": (
        lambda p: p["state_dict"]["mask_decoder.coarse.transformer.layers.0.norm1.weight"].fill_(
            float("inf")
        ),
        "nan or infinite",
    ),
    "wrong_shape": (
        lambda p: p["state_dict"].update({"image_encoder.norm.weight": torch.zeros(95)}),
        "wrong shapes",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PAYLOADS))
def test_hostile_weights_are_one_line(
    cli, small_ct: Path, small_weights: Path, tmp_path: Path, name: str
) -> None:
    edit, fragment = HOSTILE_PAYLOADS[name]
    path = _edited(small_weights, tmp_path / "hostile.pt", _without_checksum(edit))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    prompts = tmp_path / "p.json"
    prompts.write_text('[{"label": 1, "slice": 2, "box": [10, 10, 30, 24]}]')
    out = tmp_path / "o.nii.gz"
    rc, err = cli(
        "segment", small_ct, "--prompts", prompts, "-o", out, "--model", path, "--device", "cpu"
    )
    assert rc == 2 and fragment.lower() in err.lower(), err
    assert not out.exists()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 500, f"refusing {name} raised the peak memory by {grown_mb:.0f} MB"


def test_checksum_catches_an_edited_tensor(small_weights: Path, tmp_path: Path) -> None:
    """A changed value under the original checksum (what a flipped bit on disk amounts to)."""
    path = _edited(
        small_weights,
        tmp_path / "edited.pt",
        lambda p: (
            p["state_dict"]["mask_decoder.coarse.transformer.layers.0.norm1.weight"]
            .view(-1)[0]
            .add_(0.5)
        ),
    )
    with pytest.raises(WeightsError, match="damaged"):
        load_model(path, "cpu")


def test_checksum_catches_a_flipped_bit_in_the_file(small_weights: Path, tmp_path: Path) -> None:
    data = bytearray(small_weights.read_bytes())
    tensor = torch.load(small_weights, weights_only=True)["state_dict"][
        "image_encoder.patch_embed.weight"
    ]
    raw = tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    at = data.find(raw[:256])
    assert at > 0, "the tensor's bytes are stored uncompressed in the zip"
    data[at + 100] ^= 0x10
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="damaged"):
        load_model(flipped, "cpu")


def test_shipped_weights_carry_a_matching_checksum() -> None:
    payload = read_weights(default_weights_path(), require_checksum=True)
    assert len(payload["sha256"]) == 64


def test_bundled_weights_without_checksum_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hrmedsegsam.model import build

    copy = _edited(default_weights_path(), tmp_path / "hrmedsegsam.pt", lambda p: p.pop("sha256"))
    monkeypatch.setattr(build, "default_weights_path", lambda: copy)
    with pytest.raises(WeightsError, match="no checksum"):
        load_model(None, "cpu")


@pytest.mark.parametrize(
    "part", ["image_encoder.norm.weight", "mask_decoder.coarse.transformer.layers.0.norm1.weight"]
)
def test_model_computing_nan_is_an_error_not_an_empty_mask(part: str) -> None:
    """Weights changed in memory (no file, so no loader check) still cannot yield silent garbage."""
    from hrmedsegsam.predictor import Predictor

    model = build_model(config={"image_size": 256})
    with torch.no_grad():
        dict(model.named_parameters())[part].fill_(float("nan"))
    pred = Predictor(model, torch.device("cpu"))
    img = np.zeros((48, 48), np.float32)
    img[10:30, 10:30] = 1
    with pytest.raises(WeightsError, match="NaN or infinite"):
        pred.set_image(img, (0.0, 1.0))
        pred.predict(box=[8, 8, 32, 32])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(cli, small_ct: Path, small_weights: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.json"
    prompts.write_text('[{"label": 1, "slice": 2, "box": [10, 10, 30, 24]}]')
    rc, err = cli(
        "segment",
        small_ct,
        "--prompts",
        prompts,
        "-o",
        tmp_path / "o.nii.gz",
        "--model",
        small_weights,
        "--device",
        "cuda",
    )
    assert rc == 2 and "cuda is not available" in err.lower()


@pytest.mark.parametrize(
    "device, fragment",
    [
        ("gpu", "unknown device"),
        ("cuda:99", "cuda"),
        ("meta", "not supported"),
        ("", "unknown device"),
    ],
)
def test_bad_device_names(
    cli, small_ct: Path, small_weights: Path, tmp_path: Path, device: str, fragment: str
) -> None:
    prompts = tmp_path / "p.json"
    prompts.write_text('[{"label": 1, "slice": 2, "box": [10, 10, 30, 24]}]')
    rc, err = cli(
        "segment",
        small_ct,
        "--prompts",
        prompts,
        "-o",
        tmp_path / "o.nii.gz",
        "--model",
        small_weights,
        "--device",
        device,
    )
    assert rc == 2 and fragment in err.lower()


def test_save_weights_round_trip_keeps_the_checksum(tmp_path: Path) -> None:
    path = save_weights(build_model(), tmp_path / "w.pt")
    assert read_weights(path, require_checksum=True)["sha256"]
