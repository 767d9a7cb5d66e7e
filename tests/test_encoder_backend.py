"""The ONNX Runtime encoder: a real export and a real session, against the PyTorch module."""

from __future__ import annotations

import json
import sys
import time

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
    calibrate,
    calibration_path,
    choose_backend,
    export_path,
    installed_runtimes,
    make_encoder,
    parallel_encoders,
    read_calibration,
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
    # "auto" on a CPU with a runtime installed is left to the calibration; without any
    # runtime it is PyTorch
    assert resolve_backend(None, torch.device("cpu")) == "auto"
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "openvino", None)
        assert resolve_backend(None, torch.device("cpu")) == "auto"
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


def test_choose_backend_takes_the_fewest_seconds_pytorch_on_a_tie() -> None:
    assert choose_backend({"torch": 0.17, "onnx": 0.50, "openvino": 0.27}) == "torch"
    assert choose_backend({"torch": 2.5, "onnx": 0.54, "openvino": 0.32}) == "openvino"
    assert choose_backend({"openvino": 0.3, "torch": 0.3}) == "torch"


def test_calibrate_times_real_encoders_and_drops_hopeless_ones(exported) -> None:
    _, model, encoder = exported
    slow_calls = []

    def slow(frame: torch.Tensor) -> torch.Tensor:  # a real forward pass, made slower
        slow_calls.append(1)
        out = model.encode(frame)
        time.sleep(0.3)
        return out

    seconds = calibrate(
        {"torch": model.encode, "onnx": encoder, "openvino": slow}, model.image_size, rounds=3
    )
    assert set(seconds) == {"torch", "onnx", "openvino"} and all(v > 0 for v in seconds.values())
    assert seconds["openvino"] >= 0.3 and choose_backend(seconds) != "openvino"
    assert len(slow_calls) == 2  # the warm-up and the first round only


def test_auto_calibrates_once_then_follows_the_record(monkeypatch, tmp_path) -> None:
    """ "auto" times PyTorch and the installed runtimes on the real (small) model, keeps the
    choice next to the export, reuses it without timing again, and follows a record that
    names another backend; the environment variable still overrides it."""
    import hrmedsegsam.encoder_backend as eb

    monkeypatch.delenv(BACKEND_ENV, raising=False)
    model = _model("conv", seed=3)
    cpu = torch.device("cpu")
    path = calibration_path(model, tmp_path)
    assert path.parent == export_path(model, tmp_path).parent and not path.exists()
    name, fn = make_encoder(model, cpu, "auto", tmp_path)
    record = read_calibration(path)
    assert record is not None and record["choice"] == name
    assert set(record["seconds_per_frame"]) == {"torch", *installed_runtimes()}
    frame = torch.rand(1, 3, model.image_size, model.image_size)
    with torch.inference_mode():
        assert float((fn(frame) - model.encode(frame)).abs().max()) < 1e-3

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibrated again although a record exists")

    monkeypatch.setattr(eb, "calibrate", no_calibration)
    assert make_encoder(model, cpu, None, tmp_path)[0] == name
    for choice in ("torch", *installed_runtimes()):
        path.write_text(json.dumps({**record, "choice": choice}))
        got, fn = make_encoder(model, cpu, "auto", tmp_path)
        assert got == choice
        with torch.inference_mode():
            assert float((fn(frame) - model.encode(frame)).abs().max()) < 1e-3
    monkeypatch.setenv(BACKEND_ENV, "torch")
    assert make_encoder(model, cpu, None, tmp_path) == ("torch", model.encode)
    # a damaged record is ignored (calibrated again)
    monkeypatch.delenv(BACKEND_ENV)
    path.write_text("{not json")
    assert read_calibration(path) is None
    with pytest.raises(AssertionError, match="calibrated again"):
        make_encoder(model, cpu, "auto", tmp_path)


def test_calibration_is_per_model_and_thread_count(tmp_path) -> None:
    a, b = _model("patch", seed=1), _model("patch", seed=2)
    assert calibration_path(a, tmp_path) != calibration_path(b, tmp_path)
    threads = torch.get_num_threads()
    try:
        before = calibration_path(a, tmp_path)
        torch.set_num_threads(threads + 1)
        assert calibration_path(a, tmp_path) != before
    finally:
        torch.set_num_threads(threads)


def test_auto_without_any_runtime_is_pytorch_and_writes_nothing(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    for module in ("onnxruntime", "openvino"):
        monkeypatch.setitem(sys.modules, module, None)
    model = _model("patch")
    assert make_encoder(model, torch.device("cpu"), "auto", tmp_path) == ("torch", model.encode)
    assert not list(tmp_path.iterdir())


def test_a_pending_auto_calibration_is_announced_then_done(monkeypatch, tmp_path) -> None:
    from hrmedsegsam.predictor import Predictor

    monkeypatch.setenv("HRMEDSEGSAM_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    model = _model("patch", seed=6)
    pred = Predictor(model)
    assert pred.encoder_pending()
    name, _ = pred.encoder()
    assert not Predictor(model).encoder_pending()
    assert Predictor(model).encoder()[0] == name


@pytest.mark.parametrize("runtime", ["torch", "onnx", "openvino"])
def test_parallel_encoders_from_two_threads_equal_pytorch(exported, onnx_dir, runtime) -> None:
    """The encoders Predictor.embed_all runs at once (one frame per thread) give the
    PyTorch module's output for every frame, called concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    if runtime == "openvino":
        pytest.importorskip("openvino")
    _, model, _ = exported
    encoders = parallel_encoders(runtime, model, 2, onnx_dir)
    assert len(encoders) == 2
    torch.manual_seed(2)
    frames = [torch.rand(1, 3, model.image_size, model.image_size) for _ in range(6)]
    with torch.inference_mode():
        ref = [model.encode(f) for f in frames]

    def run(k: int) -> list[torch.Tensor]:
        with torch.inference_mode():
            return [encoders[k](f) for f in frames[k::2]]

    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(run, range(2)))
    for k in range(2):
        for got, want in zip(outs[k], ref[k::2], strict=True):
            assert float((got - want).abs().max()) < 1e-3


def test_auto_uses_encoders_the_caller_already_built(exported, onnx_dir, monkeypatch) -> None:
    """The benchmark hands its encoders to auto_encoder: the calibration times those (no
    second copy of a runtime is made) and the chosen one is returned as is."""
    import hrmedsegsam.encoder_backend as eb

    monkeypatch.delenv(BACKEND_ENV, raising=False)
    _, model, encoder = exported
    built = {name: eb._runtime_encoder(name, model, onnx_dir) for name in installed_runtimes()}
    built["onnx"] = encoder

    def no_new_encoder(*args, **kwargs):
        raise AssertionError("made a runtime encoder although the caller built one")

    monkeypatch.setattr(eb, "_runtime_encoder", no_new_encoder)
    name, fn = eb.auto_encoder(model, onnx_dir, built=built)
    assert fn is (model.encode if name == "torch" else built[name])
    record = read_calibration(calibration_path(model, onnx_dir))
    assert record is not None and set(record["seconds_per_frame"]) == {"torch", *built}
    for choice in built:
        calibration_path(model, onnx_dir).write_text(json.dumps({**record, "choice": choice}))
        assert eb.auto_encoder(model, onnx_dir, built=built) == (choice, built[choice])
