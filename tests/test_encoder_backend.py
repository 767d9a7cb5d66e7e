"""The ONNX Runtime encoder: a real export and a real session, against the PyTorch module."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from hrmedsegsam.encoder_backend import (  # noqa: E402
    BACKEND_ENV,
    CACHE_ENV,
    OnnxEncoder,
    OpenVinoEncoder,
    export_path,
    make_encoder,
    resolve_backend,
)
from hrmedsegsam.model.hrmedsegsam import NEW_ENCODER, HRMedSegSAM  # noqa: E402
from hrmedsegsam.predictor import Predictor  # noqa: E402

# Small versions of both encoder layouts (the export and the comparison do not depend on size).
SMALL = {"image_size": 256, "encoder_dim": 32, "encoder_heads": (2, 2, 4), "decoder_mlp_dim": 64}
LAYOUTS = {
    "patch": SMALL,
    "conv": {**SMALL, **NEW_ENCODER, "encoder_mid_dim": 64, "encoder_heads": (2, 4, 4)},
}


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _model(layout: str, seed: int = 0) -> HRMedSegSAM:
    torch.manual_seed(seed)
    model = HRMedSegSAM(LAYOUTS[layout]).eval()
    with torch.no_grad():  # random BatchNorm statistics, so they are not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    """``<cache>/onnx``, the folder the exports go to by default under ``$HRMEDSEGSAM_CACHE_DIR``."""
    return tmp_path_factory.mktemp("cache") / "onnx"


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def exported(request, onnx_dir):
    model = _model(request.param)
    return request.param, model, OnnxEncoder(model, onnx_dir)


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_runtime_encoder_equals_pytorch(exported, onnx_dir, runtime, monkeypatch) -> None:
    _, model, encoder = exported
    if runtime == "openvino":
        pytest.importorskip("openvino")
        import hrmedsegsam.encoder_backend as eb

        monkeypatch.setattr(eb, "export_encoder", _no_export)  # it reads the same export
        encoder = OpenVinoEncoder(model, onnx_dir)
    torch.manual_seed(1)
    frame = torch.rand(1, 3, model.image_size, model.image_size)
    with torch.inference_mode():
        ref = model.encode(frame)
    out = encoder(frame)
    assert out.shape == ref.shape == (1, 256, model.image_size // 16, model.image_size // 16)
    assert float((out - ref).abs().max()) < 1e-3
    assert float(ref.abs().mean()) > 1e-2  # the comparison is not between two near-zero tensors
    assert float((encoder(frame * 0.5) - out).abs().max()) > 1e-3  # no stale output buffer


def _no_export(*args, **kwargs):
    raise AssertionError("exported again although a valid export exists")


def test_export_is_reused_for_the_same_weights_only(exported, onnx_dir, monkeypatch) -> None:
    layout, model, encoder = exported
    import hrmedsegsam.encoder_backend as eb

    monkeypatch.setattr(eb, "export_encoder", _no_export)
    again = OnnxEncoder(model, onnx_dir)
    assert again.path == encoder.path
    changed = _model(layout)
    with torch.no_grad():
        next(changed.image_encoder.parameters()).add_(1e-3)
    assert export_path(changed, onnx_dir) != encoder.path
    with pytest.raises(AssertionError, match="exported again"):
        OnnxEncoder(changed, onnx_dir)


def test_predictor_on_onnx_matches_torch(exported, onnx_dir, monkeypatch) -> None:
    _, model, encoder = exported
    monkeypatch.setenv(CACHE_ENV, str(onnx_dir.parent))
    rng = np.random.default_rng(0)
    img = rng.normal(0, 200, (96, 80)).astype(np.float32)
    img[30:60, 20:50] += 600
    on_onnx = Predictor(model, torch.device("cpu"), backend="onnx")
    on_torch = Predictor(model, torch.device("cpu"), backend="torch")
    a = on_onnx.embed(img, (-160, 240)).features
    b = on_torch.embed(img, (-160, 240)).features
    assert on_onnx.encoder()[0] == "onnx" and on_torch.encoder()[0] == "torch"
    assert on_onnx.encoder()[1].path == encoder.path  # the cached export, not a new one
    assert float((a - b).abs().max()) < 1e-3


def test_missing_runtime_falls_back_to_torch_with_one_warning(monkeypatch, tmp_path) -> None:
    for module in ("onnxruntime", "openvino"):
        monkeypatch.setitem(sys.modules, module, None)  # import -> ImportError
    model = _model("patch")
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.warns(RuntimeWarning, match="using PyTorch") as record:
        name, fn = make_encoder(model, torch.device("cpu"), "onnx", tmp_path)
    assert len(record) == 1
    assert name == "torch" and fn == model.encode
    assert not list(tmp_path.iterdir())


def test_failed_export_falls_back_and_leaves_no_file(monkeypatch, tmp_path) -> None:
    import hrmedsegsam.encoder_backend as eb

    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.warns(RuntimeWarning, match="exporter crashed"):
        name, _ = eb.make_encoder(_model("patch"), torch.device("cpu"), "onnx", tmp_path)
    assert name == "torch"
    assert not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob("*.tmp"))


def test_backend_choice(monkeypatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    # OpenVINO first (the fastest here), then ONNX Runtime, then PyTorch
    assert resolve_backend(None, torch.device("cpu")) == "openvino"
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "openvino", None)
        assert resolve_backend(None, torch.device("cpu")) == "onnx"
        m.setitem(sys.modules, "onnxruntime", None)
        assert resolve_backend(None, torch.device("cpu")) == "torch"
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    monkeypatch.setenv(BACKEND_ENV, "torch")
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_backend("onnx", torch.device("cpu")) == "onnx"  # an explicit choice wins
    with pytest.raises(ValueError, match="unknown encoder backend"):
        resolve_backend("tensorrt", torch.device("cpu"))


def test_a_pending_first_use_export_is_announced_then_done(monkeypatch, tmp_path) -> None:
    """Predictor.encoder_pending says whether the first embedding will export (the widget
    shows a message for it); after the export it is False, and for PyTorch never True."""
    from hrmedsegsam.predictor import Predictor

    monkeypatch.setenv("HRMEDSEGSAM_CACHE_DIR", str(tmp_path))
    model = _model("patch", seed=5)
    runtime = "openvino" if _has("openvino") else "onnx"
    pred = Predictor(model, backend=runtime)
    assert pred.encoder_pending()
    assert Predictor(model, backend="torch").encoder_pending() is False
    name, _ = pred.encoder()
    assert name == runtime and list((tmp_path / "onnx").glob("*.onnx"))
    assert not pred.encoder_pending()
    assert not Predictor(model, backend=runtime).encoder_pending()  # the cached export
