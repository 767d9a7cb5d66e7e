"""Where a model's image encoder runs at inference: PyTorch, or ONNX Runtime on CPU.

The encoder is the slow part of interactive segmentation (one call per slice). On CPU,
ONNX Runtime and OpenVINO run the same graph faster than PyTorch eager mode (measured by
``hrmedsegsam benchmark``; README, speed table). Both read one ONNX file, made by our own
code from the loaded model's weights at first use (``torch.onnx.export``) and kept in a
user cache folder under a name that hashes the weights, the config, the export code and the
versions of the exporter (torch, onnxscript), so an export made for other weights or by
another exporter is never used. Training and every other part of the model stay in PyTorch.

Backends: ``"torch"``; ``"onnx"`` (ONNX Runtime); ``"openvino"``; ``"auto"`` (on CPU,
OpenVINO when installed, else ONNX Runtime when installed, else PyTorch: OpenVINO was the
fastest of the three in every interleaved run here, README; on CUDA, PyTorch with autocast). ``$HRMEDSEGSAM_ENCODER_BACKEND`` replaces ``"auto"``. When a runtime cannot be
used (missing, export or compilation failing) the encoder falls back to PyTorch with one
warning.

Cache folder: ``$HRMEDSEGSAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/hrmedsegsam``, else
``~/.cache/hrmedsegsam``; exports live in its ``onnx/`` subfolder.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hrmedsegsam.model.base import PromptableModel
from hrmedsegsam.model.fingerprint import model_fingerprint

BACKEND_ENV = "HRMEDSEGSAM_ENCODER_BACKEND"
CACHE_ENV = "HRMEDSEGSAM_CACHE_DIR"
BACKENDS = ("auto", "torch", "onnx", "openvino")
#: Runtimes that run the ONNX export on CPU, in the order "auto" tries them, and the module
#: each needs.
RUNTIMES = {"openvino": "openvino", "onnx": "onnxruntime"}
# Bump when the export code changes what it writes (part of every cache key).
EXPORT_VERSION = 1
OPSET = 18

log = logging.getLogger(__name__)

#: An encoder callable: frame ``(1, 3, S, S)`` float32 in [0, 1] -> ``(1, 256, S/16, S/16)``.
EncodeFn = Callable[[torch.Tensor], torch.Tensor]


def cache_dir() -> Path:
    """The user cache folder of this package (see the module docstring); not created here."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hrmedsegsam"


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """``"torch"`` or ``"onnx"`` for ``backend`` (None means ``"auto"``) on ``device``.

    Raises:
        ValueError: ``backend`` is not one of :data:`BACKENDS`.
    """
    name = (backend or "auto").lower()
    if name == "auto":
        name = os.environ.get(BACKEND_ENV, "auto").lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"unknown encoder backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        if device.type != "cpu":
            return "torch"
        for runtime, module in RUNTIMES.items():
            if importlib.util.find_spec(module) is not None:
                return runtime
        return "torch"
    return name


class _Encode(nn.Module):
    """``model.encode`` as a module, so any :class:`PromptableModel` exports the same way."""

    def __init__(self, model: PromptableModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images)


def export_path(model: PromptableModel, folder: Path | None = None) -> Path:
    """Where the ONNX export of ``model``'s encoder is cached (the name is its cache key)."""
    import onnxscript

    key = f"{model_fingerprint(model)}-e{EXPORT_VERSION}-t{torch.__version__}-os{onnxscript.__version__}"
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in key)
    name = getattr(model, "name", "") or type(model).__name__.lower()
    return (folder or cache_dir() / "onnx") / f"{name}-encoder-{safe}.onnx"


def export_encoder(model: PromptableModel, path: Path) -> Path:
    """Export ``model.encode`` for a ``(1, 3, S, S)`` float32 input to ONNX at ``path``.

    One self-contained file (weights inside), written under a temporary name and renamed
    into place, so a half-written export is never read. Takes tens of seconds on a CPU.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    device = next(model.parameters()).device
    frame = torch.zeros(1, 3, model.image_size, model.image_size, device=device)
    was_training = model.training
    model.eval()
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        # torch.export cannot trace under inference mode; the exporter's own progress
        # messages and warnings (e.g. that torchvision's operators are absent) are noise here.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Encode(model),
                (frame,),
                str(tmp),
                input_names=["image"],
                output_names=["embedding"],
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        os.replace(tmp, path)
    finally:
        exporter_log.setLevel(level)
        model.train(was_training)
        tmp.unlink(missing_ok=True)
    return path


def export_pending(
    model: PromptableModel, device: torch.device, backend: str | None = None
) -> bool:
    """Whether the first use of ``backend`` for ``model`` on ``device`` will export its
    encoder first (tens of seconds; a UI says so instead of looking frozen).
    """
    name = resolve_backend(backend, device)
    if name not in RUNTIMES or device.type != "cpu":
        return False
    try:
        return not export_path(model).is_file()
    except ImportError:  # no exporter: the backend will fall back to PyTorch at once
        return False


def cached_export(model: PromptableModel, folder: Path | None = None) -> Path:
    """The cached ONNX export of ``model``'s encoder, made now if there is none."""
    path = export_path(model, folder)
    if not path.is_file():
        log.info("exporting the %s image encoder to ONNX (once per weights): %s", model.name, path)
        export_encoder(model, path)
    return path


class OnnxEncoder:
    """ONNX Runtime (CPU) session for ``model``'s encoder; called like ``model.encode``.

    Exports into ``folder`` (default: the cache folder) at construction if no valid export
    exists. ``threads``: intra-op threads (default: torch's thread count).
    """

    name = "onnx"

    def __init__(
        self, model: PromptableModel, folder: Path | None = None, threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        self.path = cached_export(model, folder)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(self.path), opts, providers=["CPUExecutionProvider"]
        )
        self.image_size = model.image_size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(1, 3, S, S)`` float32 in [0, 1] -> ``(1, 256, S/16, S/16)`` float32 (CPU)."""
        x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"image": x})[0])


class OpenVinoEncoder:
    """OpenVINO (CPU) compiled model of ``model``'s encoder, from the same ONNX export as
    :class:`OnnxEncoder`; called like ``model.encode``. Runs in float32 (OpenVINO may
    otherwise pick bfloat16 on CPUs that have it). ``threads``: default torch's count.
    """

    name = "openvino"

    def __init__(
        self, model: PromptableModel, folder: Path | None = None, threads: int | None = None
    ) -> None:
        import openvino as ov

        self.path = cached_export(model, folder)
        config = {
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        }
        self.compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: one call at a time

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(1, 3, S, S)`` float32 in [0, 1] -> ``(1, 256, S/16, S/16)`` float32 (CPU)."""
        x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        with self._lock:
            out = self._request.infer({0: x})[self.compiled.output(0)]
            return torch.from_numpy(np.array(out, copy=True))  # the request reuses its buffer


def make_encoder(
    model: PromptableModel,
    device: torch.device,
    backend: str | None = None,
    folder: Path | None = None,
) -> tuple[str, EncodeFn]:
    """The backend's name and encoder callable for ``model`` on ``device``.

    Falls back to ``("torch", model.encode)`` with one warning when the ONNX path fails.
    """
    name = resolve_backend(backend, device)
    if name in RUNTIMES:
        try:
            if device.type != "cpu":
                raise RuntimeError(f"the {name} backend runs on the CPU; the model is on {device}")
            encoder = (
                OnnxEncoder(model, folder) if name == "onnx" else OpenVinoEncoder(model, folder)
            )
            return name, encoder
        except Exception as exc:  # noqa: BLE001 - any failure here means: use PyTorch
            first = str(exc).splitlines()[0] if str(exc) else ""
            warnings.warn(
                f"{name} encoder unavailable ({type(exc).__name__}: {first}); using PyTorch",
                RuntimeWarning,
                stacklevel=2,
            )
    return "torch", model.encode


__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "CACHE_ENV",
    "RUNTIMES",
    "EncodeFn",
    "OnnxEncoder",
    "OpenVinoEncoder",
    "cache_dir",
    "cached_export",
    "export_encoder",
    "export_path",
    "make_encoder",
    "resolve_backend",
]
