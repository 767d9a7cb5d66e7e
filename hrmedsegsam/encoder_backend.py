"""Where a model's image encoder runs at inference: PyTorch, ONNX Runtime or OpenVINO (CPU).

The encoder is the slow part of interactive segmentation (one call per slice). ONNX
Runtime and OpenVINO read one ONNX file, made by our own code from the loaded model's
weights at first use (``torch.onnx.export``) and kept in a user cache folder under a name
that hashes the weights, the config, the export code and the versions of the exporter
(torch, onnxscript), so an export made for other weights or by another exporter is never
used. Training and every other part of the model stay in PyTorch.

Backends: ``"torch"``; ``"onnx"`` (ONNX Runtime); ``"openvino"``; ``"auto"``. On CUDA,
``"auto"`` is PyTorch with autocast; on a CPU without either runtime, PyTorch. On a CPU
with a runtime, ``"auto"`` is chosen by measurement on the machine at hand
(:func:`auto_encoder`): at first use PyTorch and each installed runtime encode a frame in
interleaved rounds, the fastest median wins, and the choice, with its timings and the load
average, is kept next to the export under the export's key plus the CPU model, thread count
and runtime versions; later uses read it. Why not a fixed order: which is fastest depends
on the model and on the machine's load. Interleaved on the 2-core development CPU (torch
2.13, 2 threads, seconds per frame, median of the rounds):

- shipped weights (hierarchical encoder), load average 3 (a training job and a validation
  job on the 2 cores): PyTorch 2.52, ONNX Runtime 0.54, OpenVINO 0.32; the benchmark of
  round 11 (load 2.8) had measured PyTorch 0.17, OpenVINO 0.27, ONNX Runtime 0.50;
- LiteMedSAM, load average 3.2: PyTorch 5.04, ONNX Runtime 2.89, OpenVINO 1.90.

PyTorch eager suffers most from a busy CPU (its OpenMP threads wait at a barrier after
each of hundreds of small operations), so a fixed preference for either side was wrong
somewhere. ``$HRMEDSEGSAM_ENCODER_BACKEND`` replaces ``"auto"``; deleting the record
(``*-auto-*.json``) makes the next use measure again. When a runtime cannot be used
(missing, export or compilation failing) the encoder falls back to PyTorch with one
warning.

Cache folder: ``$HRMEDSEGSAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/hrmedsegsam``, else
``~/.cache/hrmedsegsam``; exports and calibration records live in its ``onnx/`` subfolder.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import queue
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hrmedsegsam.model.base import PromptableModel
from hrmedsegsam.model.fingerprint import model_fingerprint
from hrmedsegsam.runtime import torch_threads

BACKEND_ENV = "HRMEDSEGSAM_ENCODER_BACKEND"
CACHE_ENV = "HRMEDSEGSAM_CACHE_DIR"
BACKENDS = ("auto", "torch", "onnx", "openvino")
#: Runtimes that run the ONNX export on CPU, and the module each needs.
RUNTIMES = {"openvino": "openvino", "onnx": "onnxruntime"}
# Bump when the export code changes what it writes (part of every cache key).
EXPORT_VERSION = 1
OPSET = 18
#: Timed rounds of the "auto" calibration, and the ratio to the first round's best beyond
#: which a backend is not timed again.
CALIBRATION_ROUNDS = 3
CALIBRATION_DROP = 2.0

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


def installed_runtimes() -> list[str]:
    """The runtimes of :data:`RUNTIMES` whose module is installed, in that order."""
    return [r for r, module in RUNTIMES.items() if importlib.util.find_spec(module) is not None]


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """The backend for ``backend`` (None means ``"auto"``, which the environment variable
    :data:`BACKEND_ENV` replaces) on ``device``: ``"torch"``, ``"onnx"``, ``"openvino"``, or
    ``"auto"`` when the choice is left to :func:`auto_encoder`'s timed calibration (a CPU
    with at least one runtime installed).

    Raises:
        ValueError: ``backend`` is not one of :data:`BACKENDS`.
    """
    name = (backend or "auto").lower()
    if name == "auto":
        name = os.environ.get(BACKEND_ENV, "auto").lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"unknown encoder backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto" and (device.type != "cpu" or not installed_runtimes()):
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
    encoder first, or for ``"auto"`` export and time it (tens of seconds; a UI says so
    instead of looking frozen).
    """
    name = resolve_backend(backend, device)
    if name == "torch" or device.type != "cpu":
        return False
    try:
        if name == "auto":
            record = read_calibration(calibration_path(model))
            if record is None:
                return True
            name = record["choice"]
            if name not in RUNTIMES:
                return False
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

    ``streams`` > 1: compiled for throughput, ``streams`` frames at once (from as many
    threads), ``threads`` shared among them; each stream's threads are pinned to cores.
    For a volume on the 2-core development machine, 2 streams of one thread took 0.21 s a
    frame against 0.27 s for two separate one-thread compiled models (no pinning) and
    0.29 s for one two-thread model, one frame at a time (interleaved, load average 2.7).
    """

    name = "openvino"

    def __init__(
        self,
        model: PromptableModel,
        folder: Path | None = None,
        threads: int | None = None,
        streams: int = 1,
    ) -> None:
        import openvino as ov

        self.path = cached_export(model, folder)
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
            "INFERENCE_PRECISION_HINT": "f32",
        }
        if streams > 1:
            config["NUM_STREAMS"] = streams
        self.compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        # One infer request per stream; a call waits for a free one.
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(streams):
            self._requests.put(self.compiled.create_infer_request())

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(1, 3, S, S)`` float32 in [0, 1] -> ``(1, 256, S/16, S/16)`` float32 (CPU)."""
        x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        request = self._requests.get()
        try:
            out = request.infer({0: x})[self.compiled.output(0)]
            return torch.from_numpy(np.array(out, copy=True))  # the request reuses its buffer
        finally:
            self._requests.put(request)


def _runtime_encoder(
    name: str, model: PromptableModel, folder: Path | None, threads: int | None = None
) -> EncodeFn:
    if name == "onnx":
        return OnnxEncoder(model, folder, threads)
    return OpenVinoEncoder(model, folder, threads)


def parallel_encoders(
    name: str, model: PromptableModel, count: int, folder: Path | None = None
) -> list[EncodeFn]:
    """``count`` encoders on backend ``name`` (``"torch"``, ``"onnx"`` or ``"openvino"``, as
    :func:`make_encoder` resolved it) for encoding ``count`` frames at once from as many
    threads, each frame on one thread
    (:meth:`~hrmedsegsam.predictor.Predictor.embed_all`): PyTorch at one intra-op thread,
    one ONNX Runtime session per encoder, one OpenVINO model compiled for ``count``
    streams (the same object ``count`` times).
    """
    if name == "openvino":
        return [OpenVinoEncoder(model, folder, threads=count, streams=count)] * count
    if name == "onnx":
        return [OnnxEncoder(model, folder, threads=1) for _ in range(count)]

    def encode(images: torch.Tensor) -> torch.Tensor:
        with torch_threads(1):
            return model.encode(images)

    return [encode] * count


def _unavailable(name: str, exc: Exception) -> None:
    first = str(exc).splitlines()[0] if str(exc) else ""
    warnings.warn(
        f"{name} encoder unavailable ({type(exc).__name__}: {first}); using PyTorch",
        RuntimeWarning,
        stacklevel=3,
    )


def make_encoder(
    model: PromptableModel,
    device: torch.device,
    backend: str | None = None,
    folder: Path | None = None,
) -> tuple[str, EncodeFn]:
    """The backend's name and encoder callable for ``model`` on ``device`` (``"auto"``: see
    :func:`auto_encoder`).

    Falls back to ``("torch", model.encode)`` with one warning when the ONNX path fails.
    """
    name = resolve_backend(backend, device)
    if name == "auto":
        return auto_encoder(model, folder)
    if name in RUNTIMES:
        try:
            if device.type != "cpu":
                raise RuntimeError(f"the {name} backend runs on the CPU; the model is on {device}")
            return name, _runtime_encoder(name, model, folder)
        except Exception as exc:  # noqa: BLE001 - any failure here means: use PyTorch
            _unavailable(name, exc)
    return "torch", model.encode


# ----------------------------------------------------------------------------- "auto"
def machine_key() -> str:
    """What a calibration depends on besides the model: the CPU model and count, torch's
    thread count (the runtimes get the same) and the versions of torch and the runtimes.
    """
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = [f"torch {torch.__version__}"]
    for runtime in installed_runtimes():
        try:
            versions.append(f"{RUNTIMES[runtime]} {importlib.metadata.version(RUNTIMES[runtime])}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{RUNTIMES[runtime]} ?")
    return f"{cpu}; {os.cpu_count()} CPUs; {torch.get_num_threads()} threads; " + ", ".join(
        versions
    )


def calibration_path(model: PromptableModel, folder: Path | None = None) -> Path:
    """Where ``"auto"`` keeps its choice for ``model`` on this machine: next to the ONNX
    export, under the export's key plus a hash of :func:`machine_key`.
    """
    export = export_path(model, folder)
    digest = hashlib.blake2b(machine_key().encode(), digest_size=8).hexdigest()
    return export.with_name(f"{export.stem}-auto-{digest}.json")


def read_calibration(path: Path) -> dict[str, Any] | None:
    """The calibration record at ``path``, or None if it is missing or unreadable."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("choice") not in BACKENDS[1:]:
        return None
    return record


def calibrate(
    encoders: dict[str, EncodeFn], image_size: int, rounds: int = CALIBRATION_ROUNDS
) -> dict[str, float]:
    """Median seconds per ``(1, 3, image_size, image_size)`` frame of each encoder.

    One warm-up call each, then ``rounds`` rounds with one call per encoder, in an order
    that rotates every round (interleaved, so a change of the machine's load hits every
    encoder alike). An encoder more than :data:`CALIBRATION_DROP` times slower than the
    best in the first round is not timed again (it cannot win, and LiteMedSAM's encoder in
    PyTorch takes seconds a call).
    """
    frame = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    names = list(encoders)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for fn in encoders.values():
            fn(frame)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                t = time.perf_counter()
                encoders[name](frame)
                times[name].append(time.perf_counter() - t)
            if r == 0:
                best = min(v[0] for v in times.values())
                names = [n for n in names if times[n][0] <= CALIBRATION_DROP * best]
    return {name: statistics.median(v) for name, v in times.items()}


def choose_backend(seconds: dict[str, float]) -> str:
    """The backend with the fewest seconds; on a tie the earlier one (PyTorch first)."""
    order = list(BACKENDS[1:])
    return min(seconds, key=lambda name: (seconds[name], order.index(name)))


def auto_encoder(
    model: PromptableModel,
    folder: Path | None = None,
    built: dict[str, EncodeFn] | None = None,
) -> tuple[str, EncodeFn]:
    """``"auto"`` on a CPU: the backend its calibration record names, else calibrate now.

    Calibrating exports the encoder if needed, times PyTorch and every installed runtime
    with :func:`calibrate`, and writes the record (the choice, the seconds, the machine
    and its load average) to :func:`calibration_path`; delete it to calibrate again. A
    runtime that fails to load is left out with one warning. ``built``: encoders by
    backend name that the caller already made for ``model`` (used instead of making
    them again, e.g. by the benchmark, whose peak memory they would otherwise raise).
    """
    built = built or {}
    try:
        path = calibration_path(model, folder)
    except ImportError as exc:  # no exporter, so no runtime can run the encoder
        _unavailable("auto", exc)
        return "torch", model.encode
    record = read_calibration(path)
    if record is not None:
        name = record["choice"]
        if name == "torch":
            return "torch", model.encode
        if name in built:
            return name, built[name]
        try:
            return name, _runtime_encoder(name, model, folder)
        except Exception as exc:  # noqa: BLE001 - the recorded runtime broke: use PyTorch
            _unavailable(name, exc)
            return "torch", model.encode
    encoders: dict[str, EncodeFn] = {"torch": model.encode}
    for name in installed_runtimes():
        if name in built:
            encoders[name] = built[name]
            continue
        try:
            encoders[name] = _runtime_encoder(name, model, folder)
        except Exception as exc:  # noqa: BLE001 - calibrate among the ones that work
            _unavailable(name, exc)
    if len(encoders) == 1:
        return "torch", model.encode
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    seconds = calibrate(encoders, model.image_size)
    choice = choose_backend(seconds)
    record = {
        "choice": choice,
        "seconds_per_frame": seconds,
        "rounds": CALIBRATION_ROUNDS,
        "machine": machine_key(),
        "load_average_1min": load,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache: calibrate again next time
        log.warning("could not keep the encoder backend choice in %s: %s", path, exc)
        tmp.unlink(missing_ok=True)
    log.info("encoder backend for %s: %s (%s)", model.name, choice, seconds)
    return choice, encoders[choice]


__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "CACHE_ENV",
    "RUNTIMES",
    "EncodeFn",
    "OnnxEncoder",
    "OpenVinoEncoder",
    "auto_encoder",
    "cache_dir",
    "cached_export",
    "calibrate",
    "calibration_path",
    "choose_backend",
    "export_encoder",
    "export_path",
    "installed_runtimes",
    "machine_key",
    "make_encoder",
    "read_calibration",
    "resolve_backend",
    "parallel_encoders",
]
