"""load_model: bundled/explicit weights, strict key checks, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hrmedsegsam.errors import WeightsError
from hrmedsegsam.model.build import build_model, load_model, read_weights, save_weights


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model()
    path = save_weights(model, tmp_path / "w.pt", meta={"note": "test"})
    assert path.stat().st_size < 20 * 2**20
    loaded = load_model(path, device="cpu")
    a = model.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.allclose(v.float(), a[k].float().half().float(), atol=1e-3), k
    assert read_weights(path)["meta"]["note"] == "test"


def test_missing_weights_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found.*missing.pt"):
        load_model(tmp_path / "missing.pt", device="cpu")


def test_corrupt_weights_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(WeightsError, match="corrupt.pt.*corrupt"):
        load_model(bad, device="cpu")


def test_wrong_keys_are_rejected(tmp_path: Path) -> None:
    model = build_model()
    path = save_weights(model, tmp_path / "w.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    payload["state_dict"]["extra.weight"] = torch.zeros(1)
    del payload["sha256"]  # edited by hand: its checksum would no longer match
    torch.save(payload, path)
    with pytest.raises(WeightsError, match="1 missing keys.*1 unexpected"):
        load_model(path, device="cpu")


def test_env_variable_selects_default_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HRMEDSEGSAM_WEIGHTS", str(tmp_path / "nowhere.pt"))
    with pytest.raises(WeightsError, match="nowhere.pt"):
        load_model(device="cpu")
