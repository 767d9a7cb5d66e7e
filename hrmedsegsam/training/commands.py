r"""CLI sub-commands ``hrmedsegsam train ...`` and ``hrmedsegsam evaluate ...``.

Registered by :mod:`hrmedsegsam.cli` through :func:`register_train` and
:func:`register_evaluate`. Torch and the training code are imported inside the handlers
only, so building the parser stays cheap.

Pipeline (each stage resumable; rerun the same command to continue)::

    hrmedsegsam train cache    --cache cache/main              # samples + teacher embeddings
    hrmedsegsam train distill  --cache cache/main --run runs/distill --steps 1500
    hrmedsegsam train decoder  --cache cache/main --run runs/decoder --init runs/distill/checkpoint.pt \
                               --teacher-init --steps 3000
    hrmedsegsam train decoder  ... --encoder-lr 5e-5             # end to end: the encoder learns too
    hrmedsegsam train export   --checkpoint runs/decoder/checkpoint.pt -o runs/new.pt
    hrmedsegsam train validate --models weights/hrmedsegsam.pt,runs/new.pt  # choose (never on held-out data)
    cp runs/new.pt weights/hrmedsegsam.pt                                  # if the selection rule allows
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hrmedsegsam.errors import InputError

if TYPE_CHECKING:
    from hrmedsegsam.model.hrmedsegsam import HRMedSegSAM


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache", type=Path, default=Path("cache/main"), help="sample/embedding cache folder"
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop (with a checkpoint) after this wall time",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register_train(subparsers: Any) -> None:
    """Add ``train {cache,distill,decoder,validate,export}``."""
    p = subparsers.add_parser("train", help="train HRMedSegSAM (cache, distill, decoder, export)")
    stages = p.add_subparsers(dest="stage", metavar="STAGE")
    stages.required = True

    s = stages.add_parser("cache", help="build training samples and cache LiteMedSAM embeddings")
    _common(s)
    s.add_argument(
        "--data",
        default=None,
        help="development data folder (default ../shared/data or $HRMEDSEGSAM_DATA)",
    )
    s.add_argument("--limit", type=int, default=None, help="teacher-embed only the first N samples")
    s.set_defaults(func=cmd_cache)

    s = stages.add_parser(
        "distill", help="distil the LGViT encoder from LiteMedSAM's cached embeddings"
    )
    _common(s)
    s.add_argument(
        "--run",
        type=Path,
        default=Path("runs/distill"),
        help="run folder (checkpoint.pt, train.log)",
    )
    s.add_argument("--steps", type=int, default=1500)
    s.add_argument("--batch", type=int, default=2)
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--crop", type=int, default=512, help="crop of the 1024 frame (multiple of 16)")
    s.add_argument("--full-frame-prob", type=float, default=0.15)
    s.add_argument(
        "--init",
        type=Path,
        default=None,
        help="weights file or checkpoint to start from (tensors of the same name and shape)",
    )
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument(
        "--encoder",
        choices=("first", "hierarchical"),
        default="hierarchical",
        help="encoder layout of a new run: the first design or the hierarchical one (model card)",
    )
    s.set_defaults(func=cmd_distill)

    s = stages.add_parser(
        "decoder", help="train prompt encoder + ECM decoder on frozen encoder embeddings"
    )
    _common(s)
    s.add_argument("--run", type=Path, default=Path("runs/decoder"))
    s.add_argument(
        "--init",
        type=Path,
        default=None,
        help="weights file or checkpoint (e.g. the distillation's)",
    )
    s.add_argument(
        "--teacher-init",
        action="store_true",
        help="initialise the prompt encoder and coarse decoder from LiteMedSAM first",
    )
    s.add_argument(
        "--embeddings",
        choices=("student", "teacher"),
        default="student",
        help="train on our encoder's embeddings (computed once into RUN/embeddings) or the teacher's",
    )
    s.add_argument(
        "--embed-limit",
        type=int,
        default=None,
        help="compute student embeddings for the first N cached samples only",
    )
    s.add_argument("--steps", type=int, default=3000)
    s.add_argument("--batch", type=int, default=2, help="objects per step")
    s.add_argument(
        "--full-prob",
        type=float,
        default=0.05,
        help="share of steps on the whole embedding with the native-resolution refiner "
        "(the others train the coarse decoder on a token window around the objects)",
    )
    s.add_argument("--rounds", type=int, default=2, help="max correction rounds per step")
    s.add_argument("--lr", type=float, default=2e-4)
    s.add_argument("--refiner-lr", type=float, default=1e-3)
    s.add_argument(
        "--prompt-weights",
        type=float,
        nargs=3,
        default=(0.4, 0.35, 0.25),
        metavar=("BOX", "POINT", "POINTS"),
        help="relative frequency of box, single-point and positive+negative point steps",
    )
    s.add_argument(
        "--point-max-frac",
        type=float,
        default=0.1,
        help="single-point steps use objects covering at most this fraction of the slice (<= 0: any)",
    )
    s.add_argument(
        "--large-box-prob",
        type=float,
        default=0.0,
        help="share of box steps on the frame's large objects (those covering at least "
        "--large-box-frac of the slice)",
    )
    s.add_argument("--large-box-frac", type=float, default=0.02)
    s.add_argument(
        "--point-whole-prob",
        type=float,
        default=0.5,
        help="share of cropped point steps trained on the whole token grid (penalises far leaks)",
    )
    s.add_argument(
        "--teacher-prob",
        type=float,
        default=0.0,
        help="share of steps learning LiteMedSAM's answers to boxes around label-free regions "
        "(needs the teacher embeddings of `train cache`)",
    )
    s.add_argument(
        "--teacher-min-frac",
        type=float,
        default=0.0,
        help="teacher boxes only around regions covering at least this fraction of the slice",
    )
    s.add_argument(
        "--encoder-lr",
        type=float,
        default=0.0,
        help="> 0: train the image encoder end to end too, at this learning rate (embeddings computed "
        "on the fly; needs the teacher embeddings of `train cache`)",
    )
    s.add_argument(
        "--distill-weight",
        type=float,
        default=20.0,
        help="weight of the MSE to the teacher's embedding in end-to-end steps",
    )
    s.add_argument(
        "--region-prob",
        type=float,
        default=0.3,
        help="share of steps on label-free homogeneous-intensity regions",
    )
    s.set_defaults(func=cmd_decoder)

    s = stages.add_parser(
        "validate", help="compare weights on validation data (never the held-out volume)"
    )
    s.add_argument(
        "--models",
        required=True,
        help="comma-separated model names or weights files, earlier round first",
    )
    s.add_argument(
        "--data",
        default=None,
        help="development data folder (default ../shared/data or $HRMEDSEGSAM_DATA)",
    )
    s.add_argument("--json", type=Path, default=None, help="write the result as JSON here")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument(
        "--no-fidelity", action="store_true", help="skip the encoder fidelity (R^2) part"
    )
    s.add_argument(
        "--fidelity-only",
        action="store_true",
        help="only the encoder fidelity (R^2), e.g. for a distillation checkpoint without its decoder",
    )
    s.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="training cache: fidelity also against the mean of its teacher embeddings",
    )
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_validate)

    s = stages.add_parser("export", help="write a checkpoint's model as a float16 weights file")
    s.add_argument("--checkpoint", type=Path, required=True)
    s.add_argument(
        "-o", "--output", type=Path, default=None, help="default: weights/hrmedsegsam.pt"
    )
    s.add_argument("--meta", default=None, help="JSON object stored in the file's meta")
    s.set_defaults(func=cmd_export)


def register_evaluate(subparsers: Any) -> None:
    """Add ``evaluate IMAGE LABELS``."""
    p = subparsers.add_parser(
        "evaluate", help="DESIGN §6 evaluation (box/point Dice, small/large, 3D propagation)"
    )
    p.add_argument("image", type=Path)
    p.add_argument("labels", type=Path, help="label map file, or a folder of binary mask files")
    p.add_argument("--prompts", default="box,point", help="comma-separated: box, point")
    p.add_argument(
        "--clicks",
        type=int,
        default=0,
        help="interactive protocol: up to N corrective clicks after each prompt (DESIGN §6 uses 5)",
    )
    p.add_argument(
        "--models",
        default="hrmedsegsam,litemedsam",
        help="comma-separated model names or weight files",
    )
    p.add_argument("--every", type=int, default=1, help="evaluate every N-th axial slice")
    p.add_argument("--window", type=float, nargs=2, default=(-160.0, 240.0), metavar=("LO", "HI"))
    p.add_argument(
        "--min-size", type=int, default=100, help="smallest component that counts as an object (px)"
    )
    p.add_argument(
        "--propagate",
        action="store_true",
        help="also 3D Dice of propagation from a box on each organ",
    )
    p.add_argument(
        "--organs", default="liver,spleen,kidney_left,kidney_right", help="labels for --propagate"
    )
    p.add_argument(
        "--box-margin",
        type=float,
        default=None,
        help="propagation's box widening per side, as a fraction of the mask's box (default 0: 1 px)",
    )
    p.add_argument(
        "--json", type=Path, default=None, help="write the full result (per object) as JSON here"
    )
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_evaluate)


# --------------------------------------------------------------------------- handlers


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


def cmd_cache(args: argparse.Namespace) -> int:
    from hrmedsegsam.model.litemedsam import load_litemedsam
    from hrmedsegsam.training.cache import build_cache
    from hrmedsegsam.training.data import VolumeCache, frame_plan, require_data_dir

    _threads(args.threads)
    data = require_data_dir(args.data)
    specs = frame_plan(data, seed=args.seed)
    print(f"{len(specs)} frames planned for {args.cache}", file=sys.stderr)
    n = build_cache(
        args.cache,
        specs,
        VolumeCache(data),
        teacher=load_litemedsam(),
        limit=args.limit,
        progress=not args.no_progress,
    )
    print(f"{n} teacher embeddings in {args.cache}/teacher", file=sys.stderr)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from hrmedsegsam.model.hrmedsegsam import NEW_ENCODER
    from hrmedsegsam.training.distill import DistillConfig, distill

    if args.crop % 32:
        raise InputError("--crop must be a multiple of 32")
    from hrmedsegsam.model.build import resolve_device

    device = str(resolve_device(args.device))
    cfg = DistillConfig(
        cache=args.cache,
        run_dir=args.run,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        crop=args.crop,
        full_frame_prob=args.full_frame_prob,
        max_minutes=args.max_minutes,
        seed=args.seed,
        threads=args.threads,
        init=args.init,
        progress=not args.no_progress,
        config=dict(NEW_ENCODER) if args.encoder == "hierarchical" else None,
        device=device,
    )
    try:
        out = distill(cfg)
    except FileNotFoundError as exc:
        raise InputError(str(exc)) from exc
    print(json.dumps(out))
    return 0


def prepare_decoder_model(init: Any, teacher_init: bool, run_dir: Path) -> HRMedSegSAM:
    """Model for decoder training: ``init`` weights, then LiteMedSAM's decoder if asked
    (only when not resuming: a checkpoint in ``run_dir`` replaces all of this).
    """
    from hrmedsegsam.model.build import build_model
    from hrmedsegsam.training.distill import _load_init, init_config

    # The run's own checkpoint decides the layout when resuming, else the init file.
    model = cast(
        "HRMedSegSAM",
        build_model(
            "hrmedsegsam", init_config(Path(run_dir) / "checkpoint.pt") or init_config(init)
        ),
    )
    if init is not None:
        _load_init(model, Path(init))
    if teacher_init and not (Path(run_dir) / "checkpoint.pt").exists():
        from hrmedsegsam.model.litemedsam import load_litemedsam
        from hrmedsegsam.training.init import init_from_teacher

        init_from_teacher(model, load_litemedsam())
    return model


def cmd_decoder(args: argparse.Namespace) -> int:
    from hrmedsegsam.training.cache import embed_cache
    from hrmedsegsam.training.decoder import DecoderConfig, train_decoder

    if min(args.prompt_weights) < 0 or sum(args.prompt_weights) <= 0:
        raise InputError("--prompt-weights must be three non-negative numbers, not all zero")
    for name in (
        "teacher_prob",
        "teacher_min_frac",
        "large_box_prob",
        "large_box_frac",
        "point_whole_prob",
        "region_prob",
        "full_prob",
    ):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise InputError(f"--{name.replace('_', '-')} must be between 0 and 1")
    if args.encoder_lr < 0 or args.distill_weight < 0:
        raise InputError("--encoder-lr and --distill-weight must not be negative")
    _threads(args.threads)
    import torch

    from hrmedsegsam.training.distributed import init_ranks

    ranks, _ = init_ranks(torch.device("cpu"))  # under torchrun: each rank embeds its shard
    model = prepare_decoder_model(args.init, args.teacher_init, args.run)
    if args.encoder_lr > 0:  # embeddings are computed on the fly; samples with a teacher embedding
        emb_dir = args.cache / "teacher"
    elif args.embeddings == "student":
        emb_dir = args.run / "embeddings"
        ck = args.run / "checkpoint.pt"
        if ck.exists():  # embeddings come from the encoder of the checkpoint (frozen: unchanged)
            from hrmedsegsam.training.loop import load_checkpoint

            state = load_checkpoint(ck)
            if state is not None:  # None only if the file went away since exists()
                model.load_state_dict(state["model"])
        embed_cache(
            args.cache,
            model,
            "student",
            out=emb_dir,
            labelled_only=True,
            limit=args.embed_limit,
            ranks=ranks,
            progress=not args.no_progress,
        )
    else:
        emb_dir = args.cache / "teacher"
    cfg = DecoderConfig(
        cache=args.cache,
        run_dir=args.run,
        embeddings=emb_dir,
        steps=args.steps,
        batch=args.batch,
        rounds=args.rounds,
        lr=args.lr,
        region_prob=args.region_prob,
        full_prob=args.full_prob,
        refiner_lr=args.refiner_lr,
        prompt_weights=tuple(args.prompt_weights),
        point_max_frac=args.point_max_frac if args.point_max_frac > 0 else None,
        point_whole_prob=args.point_whole_prob,
        large_box_prob=args.large_box_prob,
        large_box_frac=args.large_box_frac,
        teacher_prob=args.teacher_prob,
        teacher_min_frac=args.teacher_min_frac,
        encoder_lr=args.encoder_lr,
        distill_weight=args.distill_weight,
        max_minutes=args.max_minutes,
        seed=args.seed,
        threads=args.threads,
        progress=not args.no_progress,
    )
    try:
        out = train_decoder(cfg, model=model)
    except FileNotFoundError as exc:
        raise InputError(str(exc)) from exc
    print(json.dumps(out))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from hrmedsegsam.training.data import require_data_dir
    from hrmedsegsam.training.validate import format_validation, selection_rule, validate

    _threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    if not models:
        raise InputError("--models needs at least one model name or weights file")
    for m in models:
        if m not in ("hrmedsegsam", "litemedsam") and not Path(m).is_file():
            raise InputError(f"weights file not found: {m}")
    if args.fidelity_only and args.no_fidelity:
        raise InputError("--fidelity-only and --no-fidelity exclude each other")
    result = validate(
        models,
        require_data_dir(args.data),
        progress=not args.no_progress,
        fidelity=not args.no_fidelity,
        segmentation=not args.fidelity_only,
        cache=args.cache,
    )
    print(format_validation(result))
    names = list(result["models"])
    for earlier, later in zip(names, names[1:], strict=False) if not args.fidelity_only else ():
        ok = selection_rule(result["models"][earlier], result["models"][later])
        print(f"selection rule: {later} {'may replace' if ok else 'may NOT replace'} {earlier}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
        tmp.replace(args.json)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hrmedsegsam.errors import WeightsError
    from hrmedsegsam.model.build import build_model, default_weights_path, save_weights
    from hrmedsegsam.training.loop import load_checkpoint

    ck = load_checkpoint(args.checkpoint)
    if ck is None:
        raise InputError(f"checkpoint not found: {args.checkpoint}")
    try:
        model = cast("HRMedSegSAM", build_model("hrmedsegsam", ck.get("config")))
        model.load_state_dict(ck["model"])
    except (ValueError, RuntimeError, TypeError) as exc:
        raise WeightsError(
            f"checkpoint {args.checkpoint} does not match the HRMedSegSAM architecture "
            f"({str(exc).splitlines()[0]})"
        ) from None
    meta = json.loads(args.meta) if args.meta else {}
    meta.setdefault("stage", ck.get("stage"))
    meta.setdefault("step", ck.get("step"))
    out = save_weights(model, args.output or default_weights_path(), meta)
    print(out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hrmedsegsam.training.evaluate import evaluate, format_table

    _threads(args.threads)
    for p in (args.image, args.labels):
        if not p.exists():
            raise InputError(f"not found: {p}")
    result = evaluate(
        args.image,
        args.labels,
        models=[m for m in args.models.split(",") if m],
        prompts=[p for p in args.prompts.split(",") if p],
        every=args.every,
        window=tuple(args.window),
        propagate3d=args.propagate,
        organs=[o for o in args.organs.split(",") if o],
        min_size=args.min_size,
        device=args.device,
        progress=not args.no_progress,
        clicks=args.clicks,
        box_margin=args.box_margin,
    )
    print(format_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
        tmp.replace(args.json)
    return 0
