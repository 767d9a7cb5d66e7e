"""Class 2 of issue 16: a torch file the user names must never run code when loaded."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch


class _RunsCode:
    """Unpickling this calls ``os.system`` (what a crafted checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint-shaped file whose model state runs ``touch MARKER`` when unpickled."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": _RunsCode(marker), "optimizer": {}, "step": 1, "stage": "decoder"}, path)
    return path, marker


def test_export_refuses_a_code_running_checkpoint(cli, crafted, tmp_path: Path) -> None:
    path, marker = crafted
    rc, err = cli("train", "export", "--checkpoint", path, "-o", tmp_path / "out.pt")
    assert rc == 2 and "could run code" in err and "system" in err
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_decoder_init_refuses_a_code_running_checkpoint(cli, crafted, tmp_path: Path) -> None:
    path, marker = crafted
    rc, err = cli(
        "train", "decoder", "--init", path, "--cache", tmp_path / "cache", "--run", tmp_path / "run"
    )
    assert rc == 2 and "could run code" in err
    assert not marker.exists()


def test_resume_refuses_a_code_running_checkpoint(crafted) -> None:
    from hrmedsegsam.errors import WeightsError
    from hrmedsegsam.training.loop import load_checkpoint

    path, marker = crafted
    with pytest.raises(WeightsError, match="could run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_weights_file_refuses_code(crafted, tmp_path: Path) -> None:
    from hrmedsegsam.errors import WeightsError
    from hrmedsegsam.model.build import load_model

    _, marker = crafted
    path = tmp_path / "weights.pt"
    torch.save(
        {"format": "hrmedsegsam", "version": 1, "config": {}, "state_dict": _RunsCode(marker)}, path
    )
    with pytest.raises(WeightsError, match="could run code"):
        load_model(path, "cpu")
    assert not marker.exists()


def test_real_checkpoints_still_load_and_export(cli, tmp_path: Path) -> None:
    """What save_checkpoint writes (model + AdamW state) passes the weights-only loader."""
    from hrmedsegsam.model.build import build_model, read_weights
    from hrmedsegsam.training.loop import load_checkpoint, save_checkpoint

    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in list(model.parameters())[:3]:
        p.grad = torch.ones_like(p)
    opt.step()
    ck_path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(
        ck_path, model=model.state_dict(), optimizer=opt.state_dict(), step=7, stage="decoder"
    )
    ck = load_checkpoint(ck_path)
    assert ck is not None and ck["step"] == 7
    opt.load_state_dict(ck["optimizer"])
    rc, _ = cli("train", "export", "--checkpoint", ck_path, "-o", tmp_path / "w.pt")
    assert rc == 0 and read_weights(tmp_path / "w.pt")["meta"]["step"] == 7


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"PK\x03\x04 truncated zip"])
def test_corrupt_checkpoint_is_one_line(cli, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    rc, err = cli("train", "export", "--checkpoint", path, "-o", tmp_path / "out.pt")
    assert rc == 2 and "corrupt" in err


def test_checkpoint_without_model_state(cli, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save({"step": 3}, path)
    rc, err = cli("train", "export", "--checkpoint", path, "-o", tmp_path / "out.pt")
    assert rc == 2 and "not a training checkpoint" in err
