"""Stage 2: decoder training with simulated prompts (DESIGN §3.2).

By default the image encoder is frozen: image embeddings come from the cache (``student``
after distillation; ``teacher`` embeddings work too, e.g. to check the teacher
initialisation), so a step costs only the prompt encoder, the coarse decoder and the
native-resolution refiner. With ``encoder_lr > 0`` the encoder is trained end to end as
well, on embeddings computed on the fly, with the distillation MSE as a regulariser.

Each step takes one cached sample, up to ``batch`` of its objects and one prompt type for
all of them (box, single positive point, positive + negative points), then
``0-rounds`` correction rounds: a click at the centre of the largest error region (positive
if missed, negative if leaked) with the previous low-res logits fed back as ``mask_input``.
Loss per round at native resolution: Dice + BCE on the refined logits, half of that on the
plain upsampled coarse logits, plus MSE between the predicted and the actual IoU.

Most steps are cheaper: the coarse decoder on a token window around the objects, loss on
the low-res logits (:func:`train_step_crop`). Single-point steps take objects of at most
``point_max_frac`` of the slice, and half of the point steps use the whole token grid, so a
lone click learns to stay on its structure. Optional teacher-box steps (``teacher_prob``)
learn LiteMedSAM's answers to boxes around label-free regions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from hrmedsegsam.errors import InputError
from hrmedsegsam.training.cache import sample_paths
from hrmedsegsam.training.data import Sample, load_sample, region_objects
from hrmedsegsam.training.distributed import (
    Ranks,
    StepRunner,
    any_rank,
    broadcast_weights,
    check_in_sync,
    close,
    gather,
    init_ranks,
    wrap,
)
from hrmedsegsam.training.loop import (
    Budget,
    cosine_lr,
    load_checkpoint,
    save_checkpoint,
    setup_logging,
)
from hrmedsegsam.training.prompts import Prompt, correction_point, objects, simulate, tight_box

if TYPE_CHECKING:
    import torch

    from hrmedsegsam.model.base import DecoderOutput, PromptableModel
    from hrmedsegsam.model.hrmedsegsam import HRMedSegSAM
    from hrmedsegsam.model.litemedsam import LiteMedSAM

log = logging.getLogger("hrmedsegsam.training")


@dataclass
class DecoderConfig:
    cache: Path
    run_dir: Path
    embeddings: Path = Path("cache/main/teacher")  # folder of cached image embeddings
    steps: int = 3000
    batch: int = 2
    rounds: int = 2
    lr: float = 2e-4
    refiner_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    min_size: int = 40
    ckpt_every: int = 200
    max_minutes: float | None = None
    seed: int = 0
    threads: int = 2
    init: Path | None = None
    progress: bool = True
    prompt_weights: tuple[float, float, float] = (0.4, 0.35, 0.25)
    region_prob: float = 0.3  # share of steps on label-free intensity regions (data.region_objects)
    full_prob: float = (
        0.05  # share of full steps (whole embedding, refiner, native loss); others: cropped coarse
    )
    # A lone click should select the smallest sensible structure: single-point steps draw
    # their objects from those covering at most this fraction of the slice (when it has any).
    point_max_frac: float | None = 0.1
    # Share of cropped point steps whose token window is the whole grid, so that a mask
    # leaking far outside the object is penalised (a window only sees leaks near the object).
    point_whole_prob: float = 0.5
    # Share of steps that learn box prompts from the teacher instead of reference masks:
    # LiteMedSAM (on its cached embedding) segments boxes around label-free regions and
    # random boxes, and its mask is the target. Our training volumes label few structures;
    # this passes on what the teacher knows about the others (e.g. liver, kidneys).
    teacher_prob: float = 0.0
    teacher_embeddings: Path | None = None  # default: cache/teacher
    teacher_min_iou: float = 0.75  # the teacher's own predicted IoU below this: box skipped
    # Teacher boxes only around regions covering at least this fraction of the slice: the
    # labels already teach small structures better than the teacher's answers do (a 0.3
    # share on all sizes cost 0.03 small-object box Dice), large organs are what they lack.
    teacher_min_frac: float = 0.0
    # Share of box steps whose objects are the frame's large ones (covering at least
    # large_box_frac of the slice): drawn uniformly, objects are mostly small, and a tight box
    # around a large organ often holds other organs, which the model then takes along
    # (scripts/box_errors.py: half the liver's area on magnified ct_body_3mm slices).
    large_box_prob: float = 0.0
    large_box_frac: float = 0.02
    # End-to-end: > 0 trains the image encoder too, at this learning rate, on embeddings
    # computed on the fly (on the token window of a cropped step: the encoder is isotropic
    # with a relative position code, as in distillation). Its BatchNorm statistics stay
    # frozen. ``distill_weight`` keeps the embedding near the teacher's (MSE on the same
    # window) so the prompt path and the teacher-box targets stay meaningful.
    encoder_lr: float = 0.0
    distill_weight: float = 20.0


def prompt_tensors(
    prompts: Sequence[Prompt], native_hw: tuple[int, int], input_hw: tuple[int, int]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Batch native-pixel prompts into frame tensors: coords ``(B, N, 2)`` (x, y), labels
    ``(B, N)`` and boxes ``(B, 4)`` (x0, y0, x1, y1), each None when absent; points padded
    with label -1 (SAM's "not a point"). The first prompt decides whether the batch has
    boxes; then every prompt needs one.
    """
    import torch

    from hrmedsegsam.model.frame import boxes_to_frame, points_to_frame

    boxes = None
    if prompts[0].box is not None:
        box_list = [p.box for p in prompts if p.box is not None]
        if len(box_list) != len(prompts):
            raise ValueError("a batch of prompts needs a box on every prompt or on none")
        boxes = torch.from_numpy(boxes_to_frame(box_list, native_hw, input_hw))
    coords: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    n = max((0 if p.points is None else len(p.points)) for p in prompts)
    if n:
        coords = torch.zeros(len(prompts), n, 2)
        labels = -torch.ones(len(prompts), n, dtype=torch.int64)
        for i, p in enumerate(prompts):
            if p.points is not None:
                k = len(p.points)
                coords[i, :k] = torch.from_numpy(points_to_frame(p.points, native_hw, input_hw))
                labels[i, :k] = torch.from_numpy(np.asarray(p.labels, np.int64))
    return coords, labels, boxes


def decode_prompts(
    model: PromptableModel,
    emb: torch.Tensor,
    native: torch.Tensor,
    input_hw: tuple[int, int],
    prompts: Sequence[Prompt],
    mask_input: torch.Tensor | None = None,
    box_native: tuple[float, float, float, float] | None = None,
) -> DecoderOutput:
    """Decode a batch of prompts on one embedded image: emb ``(1, 256, G, G)``, native
    ``(1, 3, H, W)``, mask_input ``(B, 1, L, L)`` low-res logits, box_native ``(x0, y0, x1,
    y1)`` native pixels.
    """
    H, W = native.shape[-2:]
    coords, labels, boxes = prompt_tensors(prompts, (H, W), input_hw)
    B = len(prompts)
    return model.decode(
        emb.expand(B, -1, -1, -1),
        native.expand(B, -1, -1, -1),
        input_hw,
        coords=coords,
        labels=labels,
        boxes=boxes,
        mask_input=mask_input,
        multimask=False,
        box_native=box_native,
    )


def mask_losses(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice + BCE per item; logits/target ``(B, 1, H, W)``."""
    import torch.nn.functional as F

    p = logits.sigmoid()
    inter = (p * target).flatten(1).sum(1)
    dice = 1 - (2 * inter + 1) / (p.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)
    return dice + bce


def _union_box(ms: Sequence[np.ndarray]) -> tuple[float, float, float, float]:
    """Tight ``(x0, y0, x1, y1)`` box (inclusive pixels) around the union of non-empty masks."""
    x0, y0, x1, y1 = tight_box(np.logical_or.reduce(list(ms)))
    return float(x0), float(y0), float(x1), float(y1)


def choose_kind(rng: np.random.Generator, weights: Sequence[float]) -> int:
    """Prompt type of a step: 0 box, 1 single positive point, 2 positive + negative points."""
    return int(rng.choice(3, p=np.asarray(weights, float) / np.sum(weights)))


def one_hot(kind: int) -> tuple[float, float, float]:
    w = [0.0, 0.0, 0.0]
    w[kind] = 1.0
    return w[0], w[1], w[2]


def point_candidates(objs: list[np.ndarray], max_frac: float | None) -> list[np.ndarray]:
    """Objects for a single-point step: those covering at most ``max_frac`` of the slice
    (all of them when none does, or when ``max_frac`` is None).
    """
    if max_frac is None:
        return objs
    small = [m for m in objs if m.sum() <= max_frac * m.size]
    return small or objs


def box_candidates(objs: list[np.ndarray], min_frac: float) -> list[np.ndarray]:
    """Objects for a large-object box step: those covering at least ``min_frac`` of the
    slice (the largest one when none does).
    """
    large = [m for m in objs if m.sum() >= min_frac * m.size]
    return large or [max(objs, key=lambda m: int(m.sum()))]


def train_step(
    model: PromptableModel,
    emb: torch.Tensor,
    sample: Sample,
    objs: list[np.ndarray],
    rng: np.random.Generator,
    rounds: int,
    kind: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one step (graph attached) and diagnostics; ``emb`` ``(1, 256, G, G)``,
    ``kind`` as :func:`choose_kind`.
    """
    import torch

    from hrmedsegsam.model.decoder import sample_frame
    from hrmedsegsam.model.frame import resized_hw

    frame_native = torch.from_numpy(sample.image)[None, None].expand(-1, 3, -1, -1).contiguous()
    H, W = sample.image.shape
    input_hw = resized_hw((H, W), model.image_size)
    prompts = [simulate(m, rng, one_hot(kind)) for m in objs]
    target = torch.from_numpy(np.stack(objs)[:, None].astype(np.float32))
    box_native = _union_box(objs)
    n_rounds = 1 + int(rng.integers(0, rounds + 1))
    mask_input: torch.Tensor | None = None
    total: torch.Tensor | float = 0.0  # a tensor after the first round
    stats: dict[str, float] = {}
    valid = model.lowres_valid_hw(input_hw)
    for r in range(n_rounds):
        out = decode_prompts(model, emb, frame_native, input_hw, prompts, mask_input, box_native)
        logits = out.logits[:, :1]
        coarse = sample_frame(out.lowres[:, :1], valid, (H, W), (0, 0, H, W))
        loss_mask = mask_losses(logits, target)
        loss_coarse = mask_losses(coarse, target)
        with torch.no_grad():
            pred = logits > 0
            inter = (pred & (target > 0)).flatten(1).sum(1).float()
            union = (pred | (target > 0)).flatten(1).sum(1).float()
            iou = inter / union.clamp(min=1)
            dice = (
                2 * inter / (pred.flatten(1).sum(1) + (target > 0).flatten(1).sum(1)).clamp(min=1)
            )
        loss_iou = (out.iou[:, 0] - iou).pow(2)
        total = total + (loss_mask + 0.5 * loss_coarse + loss_iou).mean()
        stats[f"dice_r{r}"] = float(dice.mean())
        if r + 1 < n_rounds:
            pred_np = pred[:, 0].numpy()
            new = []
            for p, pm, m in zip(prompts, pred_np, objs, strict=True):
                c: tuple[tuple[float, float], int] | None = correction_point(pm, m)
                if c is None:
                    c = (
                        ((float(p.points[0][0]), float(p.points[0][1])), 1)
                        if p.points is not None
                        else (_center(m), 1)
                    )
                new.append(p.add_point(c[0], c[1]))
            prompts = new
            mask_input = out.lowres[:, :1].detach()
    stats["kind"] = kind
    return cast("torch.Tensor", total) / n_rounds, stats


def teacher_boxes(
    sample: Sample, rng: np.random.Generator, n: int, min_frac: float = 0.0
) -> list[tuple[float, float, float, float]]:
    """Native-pixel boxes ``(x0, y0, x1, y1)`` to ask the teacher about: jittered boxes
    around label-free regions (:func:`region_objects`) covering at least ``min_frac`` of the
    slice or, when there are too few, random boxes of 5-60 % of each side (at least
    ``sqrt(min_frac)``).
    """
    from hrmedsegsam.training.prompts import jitter_box, tight_box

    H, W = sample.image.shape
    if min_frac > 0:
        regions = [
            m
            for m in region_objects(sample.image, rng, max_objects=64)
            if m.sum() >= min_frac * H * W
        ]
    else:
        regions = region_objects(sample.image, rng, max_objects=n)
    out: list[tuple[float, float, float, float]] = []
    for m in regions[:n]:
        out.append(jitter_box(tight_box(m), (H, W), rng))
    lo = max(0.05, float(np.sqrt(min_frac)))
    while len(out) < n:
        w, h = rng.uniform(lo, max(lo, 0.6)) * W, rng.uniform(lo, max(lo, 0.6)) * H
        x0, y0 = rng.uniform(0, W - w), rng.uniform(0, H - h)
        out.append((float(x0), float(y0), float(min(W - 1, x0 + w)), float(min(H - 1, y0 + h))))
    return out


def teacher_masks(
    teacher: PromptableModel,
    temb: torch.Tensor,
    sample: Sample,
    boxes: Sequence[tuple[float, float, float, float]],
    min_iou: float,
) -> tuple[list[Prompt], list[np.ndarray]]:
    """The teacher's single-mask answers to box prompts on its cached embedding ``temb``
    ``(1, 256, 64, 64)``: native-resolution bool masks; boxes whose answer is empty, covers
    most of the slice, or has a predicted IoU under ``min_iou`` are dropped.
    """
    import torch

    from hrmedsegsam.model.frame import resized_hw

    H, W = sample.image.shape
    input_hw = resized_hw((H, W), teacher.image_size)
    prompts = [Prompt(box=b, kind="teacher-box") for b in boxes]
    coords, labels, boxes_t = prompt_tensors(prompts, (H, W), input_hw)
    with torch.no_grad():  # SAM's decoder repeats a batch-1 embedding for each prompt itself
        out = teacher.decode(
            temb, torch.zeros(1, 3, H, W), input_hw, coords=coords, labels=labels, boxes=boxes_t
        )
    masks = (out.logits[:, 0] > 0).numpy()
    keep = [
        i
        for i in range(len(prompts))
        if float(out.iou[i, 0]) >= min_iou and 40 <= masks[i].sum() <= 0.6 * masks[i].size
    ]
    return [prompts[i] for i in keep], [masks[i] for i in keep]


def _center(m: np.ndarray) -> tuple[int, int]:
    from hrmedsegsam.training.prompts import farthest_from_border

    return farthest_from_border(m)


class WindowEncoder:
    """On-the-fly embeddings for end-to-end steps: ``(r0, r1, c0, c1)`` token window ->
    ``(1, 256, r1 - r0, c1 - c0)`` embedding of that window of the sample's model frame
    (graph attached), and the MSE against the teacher's embedding of the same window in
    :attr:`distill_loss` (None when the teacher's grid does not match the model's).
    """

    def __init__(self, model: HRMedSegSAM, sample: Sample, teacher_path: Path | None) -> None:
        import torch

        from hrmedsegsam.model.frame import to_frame

        self.model = model
        self.frame, _ = to_frame(sample.image, model.image_size)
        self.tok = model.image_size // (model.lowres_size // 4)
        self.teacher: torch.Tensor | None = None
        if teacher_path is not None and Path(teacher_path).exists():
            t = torch.from_numpy(np.load(teacher_path).astype(np.float32))
            if t.shape[-1] == model.lowres_size // 4:
                self.teacher = t[None]
        self.distill_loss: torch.Tensor | None = None

    def __call__(self, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        import torch.nn.functional as F

        k = self.tok
        e = self.model.image_encoder(self.frame[..., r0 * k : r1 * k, c0 * k : c1 * k].contiguous())
        if self.teacher is not None:
            self.distill_loss = F.mse_loss(e, self.teacher[..., r0:r1, c0:c1])
        return e

    def whole(self) -> torch.Tensor:
        """The embedding of the whole frame ``(1, 256, G, G)``."""
        g = self.model.lowres_size // 4
        return self(0, g, 0, g)


class DecoderData:
    """Cached samples that have objects and a cached embedding in ``embeddings`` (of this
    rank's shard, with ``ranks``).
    """

    def __init__(
        self, cache: Path, embeddings: Path, min_size: int, ranks: Ranks | None = None
    ) -> None:
        self.cache = Path(cache)
        self.items: list[tuple[Path, Sample, list[np.ndarray]]] = []
        for p in sample_paths(cache):
            e = Path(embeddings) / (p.stem + ".npy")
            if (ranks is not None and not ranks.owns(p)) or not e.exists():
                continue
            s = load_sample(p)
            objs = objects(s.masks, min_size)
            if objs:
                self.items.append((e, s, objs))
        if not self.items:
            raise FileNotFoundError(f"no labelled samples with {embeddings} embeddings in {cache}")

    def embedding(self, i: int) -> torch.Tensor:
        """Sample ``i``'s cached embedding as a float32 ``(1, 256, G, G)`` tensor."""
        import torch

        return torch.from_numpy(np.load(self.items[i][0]).astype(np.float32))[None]


def trainable_parameters(
    model: HRMedSegSAM,
) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """The decoder-training parameters: prompt encoder and coarse decoder, then refiner."""
    ref = list(model.mask_decoder.refiner.parameters())
    ref_ids = {id(p) for p in ref}
    rest = [
        p
        for p in list(model.mask_decoder.parameters()) + list(model.prompt_encoder.parameters())
        if id(p) not in ref_ids
    ]
    return rest, ref


class DecoderRun:
    """One decoder-training run (resumable from ``run_dir/checkpoint.pt``): the model, its
    optimizer, the data of this rank's shard, the step count and the loss history.
    :meth:`run` trains until ``cfg.steps`` or the time budget. Under torchrun the whole
    step (every forward pass of it) runs inside DistributedDataParallel, so gradients are
    averaged over the ranks whatever kind of step each rank took.
    """

    def __init__(self, cfg: DecoderConfig, model: HRMedSegSAM | None = None) -> None:
        import torch

        from hrmedsegsam.model.build import build_model
        from hrmedsegsam.training.distill import _load_init

        self.cfg = cfg
        torch.set_num_threads(cfg.threads)
        self.ranks, dev = init_ranks(torch.device("cpu"))
        if self.ranks.main:
            setup_logging(cfg.run_dir)
        self.ckpt_path = cfg.run_dir / "checkpoint.pt"
        self.model = model if model is not None else cast("HRMedSegSAM", build_model("hrmedsegsam"))
        # The refiner learns at native resolution; its pixel budget is an inference-time bound.
        self.model.mask_decoder.refine_budget = None
        self.rest, self.ref = trainable_parameters(self.model)
        self.enc_params = list(self.model.image_encoder.parameters()) if cfg.encoder_lr > 0 else []
        groups = [
            {"params": self.rest, "lr": cfg.lr, "base": cfg.lr},
            {"params": self.ref, "lr": cfg.refiner_lr, "base": cfg.refiner_lr},
        ]
        if self.enc_params:
            groups.append({"params": self.enc_params, "lr": cfg.encoder_lr, "base": cfg.encoder_lr})
        self.opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        self.step = 0
        ck = load_checkpoint(self.ckpt_path)
        if ck is not None:
            self._resume(ck)
        elif cfg.init is not None:
            _load_init(self.model, cfg.init)
        broadcast_weights(self.model, self.ranks)
        self.data = DecoderData(cfg.cache, cfg.embeddings, cfg.min_size, self.ranks)
        log.info(
            "decoder training on %d samples (%s embeddings)", len(self.data.items), cfg.embeddings
        )
        if self.ranks.active:
            log.info(
                "%d ranks; samples per rank: %s",
                self.ranks.world,
                gather(len(self.data.items), self.ranks),
            )
        self.teacher_dir = (
            Path(cfg.teacher_embeddings)
            if cfg.teacher_embeddings is not None
            else Path(cfg.cache) / "teacher"
        )
        self.teacher: LiteMedSAM | None = None
        if cfg.teacher_prob > 0:
            from hrmedsegsam.model.litemedsam import load_litemedsam

            self.teacher = load_litemedsam()
            for q in self.teacher.parameters():
                q.requires_grad_(False)
        self.rng = np.random.default_rng(cfg.seed + 7919 * self.step + 1_000_003 * self.ranks.rank)
        self.model.eval()  # encoder BN stays frozen; the decoder has no BN/dropout
        for p in self.model.image_encoder.parameters():
            p.requires_grad_(bool(self.enc_params))
        self.steps = wrap(StepRunner(self.model), self.ranks, dev, partial=True)
        self.budget = Budget(cfg.max_minutes)
        self.t0 = time.time()
        self.hist: list[float] = []
        self.distill_hist: list[float] = []
        self.dices: dict[int, list[float]] = {0: [], 1: [], 2: [], 3: []}

    def _resume(self, ck: dict[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        try:
            self.opt.load_state_dict(ck["optimizer"])
        except (
            ValueError
        ) as exc:  # parameter groups differ: encoder trained in one run, not the other
            raise InputError(
                f"{self.ckpt_path} was written with{'out' if self.enc_params else ''} end-to-end "
                "steps; resume with the same --encoder-lr setting, or use a new --run folder"
            ) from exc
        self.step = int(ck["step"])
        log.info("resumed decoder training at step %d", self.step)

    def run(self) -> dict[str, Any]:
        """Train until ``cfg.steps`` or the time budget; a summary dict (see the log): step,
        loss, seconds, steps_by_kind (a dict) and, end to end, encoder_mse.
        """
        from tqdm import tqdm

        cfg = self.cfg
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc="decoder",
            disable=not (cfg.progress and self.ranks.main),
        )
        stop = False
        while self.step < cfg.steps and not stop:
            loss, st = self.train_one()
            self.optimise(loss)
            self.record(loss, st)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(self.hist[-50:]):.3f}")
            stop = any_rank(self.budget.over(), self.ranks)
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps or stop:
                self.save()
        bar.close()
        if self.hist and self.step % cfg.ckpt_every:
            self.save()
        out: dict[str, Any] = {
            "step": self.step,
            "loss": float(np.mean(self.hist[-50:])) if self.hist else float("nan"),
            "seconds": time.time() - self.t0,
            "steps_by_kind": {
                k: len(self.dices[i])
                for i, k in enumerate(("box", "point", "points", "teacher_box"))
            },
        }
        if self.distill_hist:
            out["encoder_mse"] = float(np.mean(self.distill_hist[-50:]))
        if self.ranks.active:
            log.info("weights digest per rank: %s", check_in_sync(self.model, self.ranks))
            close(self.ranks)
        log.info("decoder training stopped at step %d: %s", self.step, out)
        return out

    def train_one(self) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss (graph attached) and diagnostics of one step on a random sample of the shard."""
        cfg, rng = self.cfg, self.rng
        i = int(rng.integers(len(self.data.items)))
        _, sample, objs = self.data.items[i]
        t_path = self.teacher_dir / self.data.items[i][0].name
        if self.teacher is not None and rng.random() < cfg.teacher_prob and t_path.exists():
            temb = np.load(t_path).astype(np.float32)
            boxes = teacher_boxes(sample, rng, cfg.batch, cfg.teacher_min_frac)
            t_prompts, t_masks = teacher_masks(
                self.teacher, _tensor(temb), sample, boxes, cfg.teacher_min_iou
            )
            if t_masks:
                emb = self.embedding(i)
                loss, st = self.steps(
                    train_step_crop, emb, sample, t_masks, rng, 0, 0, prompts=t_prompts
                )
                st["kind"] = 3
                return self.with_distill(loss, emb), st
        if cfg.region_prob and rng.random() < cfg.region_prob:
            objs = region_objects(sample.image, rng) or objs
        kind = choose_kind(rng, cfg.prompt_weights)
        if kind == 1:
            objs = point_candidates(objs, cfg.point_max_frac)
        elif kind == 0 and cfg.large_box_prob and rng.random() < cfg.large_box_prob:
            objs = box_candidates(objs, cfg.large_box_frac)
        pick = rng.permutation(len(objs))[: cfg.batch]
        chosen = [objs[j] for j in pick]
        emb = self.embedding(i)
        if rng.random() < cfg.full_prob:
            loss, st = self.steps(_full_step, emb, sample, chosen, rng, cfg.rounds, kind)
        else:
            whole = kind != 0 and rng.random() < cfg.point_whole_prob
            loss, st = self.steps(
                train_step_crop,
                emb,
                sample,
                chosen,
                rng,
                cfg.rounds,
                kind,
                min_tokens=10**6 if whole else 24,
            )
        return self.with_distill(loss, emb), st

    def embedding(self, i: int) -> torch.Tensor | WindowEncoder:
        """The step's image embedding: cached tensor, or a :class:`WindowEncoder`."""
        if not self.enc_params:
            return self.data.embedding(i)
        return WindowEncoder(
            self.model, self.data.items[i][1], self.teacher_dir / self.data.items[i][0].name
        )

    def with_distill(self, loss: torch.Tensor, emb: torch.Tensor | WindowEncoder) -> torch.Tensor:
        """``loss`` plus the weighted distillation MSE of an end-to-end step."""
        if isinstance(emb, WindowEncoder) and emb.distill_loss is not None:
            self.distill_hist.append(float(emb.distill_loss.detach()))
            return loss + self.cfg.distill_weight * emb.distill_loss
        return loss

    def optimise(self, loss: torch.Tensor) -> None:
        import torch

        for g in self.opt.param_groups:
            g["lr"] = cosine_lr(
                self.step,
                self.cfg.steps,
                g["base"],
                self.cfg.warmup,
                time_fraction=self.budget.fraction(),
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.rest + self.ref + self.enc_params, 1.0)
        self.opt.step()

    def record(self, loss: torch.Tensor, st: dict[str, float]) -> None:
        self.step += 1
        self.hist.append(float(loss.detach()))
        self.dices[int(st["kind"])].append(st["dice_r0"])
        if self.step % 50 == 0:
            log.info(
                "decoder step %d loss %.4f dice box %.3f point %.3f points %.3f teacher-box %.3f (%.2f s/step)%s",
                self.step,
                np.mean(self.hist[-50:]),
                *(
                    np.mean(self.dices[k][-30:]) if self.dices[k] else float("nan")
                    for k in range(4)
                ),
                (time.time() - self.t0) / max(1, len(self.hist)),
                f" encoder mse {np.mean(self.distill_hist[-50:]):.5f}" if self.distill_hist else "",
            )

    def save(self) -> None:
        """Checkpoint (rank 0 only: the ranks hold the same weights)."""
        if not self.ranks.main:
            return
        save_checkpoint(
            self.ckpt_path,
            model=self.model.state_dict(),
            optimizer=self.opt.state_dict(),
            config=dict(self.model.config),
            step=self.step,
            stage="decoder",
        )


def train_decoder(cfg: DecoderConfig, model: HRMedSegSAM | None = None) -> dict[str, Any]:
    """Run (or resume from ``run_dir/checkpoint.pt``) decoder training (:class:`DecoderRun`)."""
    return DecoderRun(cfg, model).run()


def _full_step(
    model: HRMedSegSAM,
    emb: torch.Tensor | WindowEncoder,
    sample: Sample,
    objs: list[np.ndarray],
    rng: np.random.Generator,
    rounds: int,
    kind: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`train_step` on the whole embedding (computed here for an end-to-end step, so
    the encoder's forward pass belongs to the step).
    """
    full = emb.whole() if isinstance(emb, WindowEncoder) else emb
    return train_step(model, full, sample, objs, rng, rounds, kind)


def _tensor(a: np.ndarray) -> torch.Tensor:
    """``a`` as a ``(1, ...)`` float32 torch tensor."""
    import torch

    return torch.from_numpy(a)[None]


# --------------------------------------------------------------------------- cropped coarse steps


def _lowres_targets(
    objs: Sequence[np.ndarray],
    native_hw: tuple[int, int],
    input_hw: tuple[int, int],
    S: int,
    L: int,
) -> torch.Tensor:
    """Object masks as soft targets on the ``(L, L)`` low-res padded frame ``(B, 1, L, L)``."""
    import torch
    import torch.nn.functional as F

    lh, lw = -(-input_hw[0] * L // S), -(-input_hw[1] * L // S)
    m = torch.from_numpy(np.stack(objs)[:, None].astype(np.float32))
    t = F.interpolate(m, size=(lh, lw), mode="bilinear", align_corners=False, antialias=True)
    return F.pad(t, (0, L - lw, 0, L - lh))


def train_step_crop(
    model: HRMedSegSAM,
    emb: torch.Tensor | Callable[[int, int, int, int], torch.Tensor],
    sample: Sample,
    objs: list[np.ndarray],
    rng: np.random.Generator,
    rounds: int,
    kind: int,
    min_tokens: int = 24,
    margin_tokens: int = 4,
    prompts: list[Prompt] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """A cheaper step on the coarse decoder only: the image embedding, its position code and
    the dense prompt are cropped to a token window (at least ``min_tokens`` a side, capped
    at the grid) around the objects (any grid size works in the two-way transformer), and
    the loss is taken on the low-res logits in that window (outside it the objects are
    absent). Prompts stay in whole-frame coordinates; ``kind`` as :func:`choose_kind`, or
    ``prompts`` given (one per object). ``emb``: the whole ``(1, 256, G, G)`` embedding, or
    a callable ``(r0, r1, c0, c1) -> (1, 256, r1 - r0, c1 - c0)`` that computes the window
    (end-to-end steps, :class:`WindowEncoder`).
    """
    import torch

    from hrmedsegsam.model.frame import resized_hw

    H, W = sample.image.shape
    S, L = model.image_size, model.lowres_size
    G = emb.shape[-1] if isinstance(emb, torch.Tensor) else L // 4
    tok = S // G  # frame pixels per token
    up = L // G  # low-res pixels per token
    scale = S / max(H, W)  # native pixel -> frame pixel
    input_hw = resized_hw((H, W), S)
    x0, y0, x1, y1 = _union_box(objs)
    ty0, tx0 = int(y0 * scale // tok), int(x0 * scale // tok)
    ty1, tx1 = int(y1 * scale // tok) + 1, int(x1 * scale // tok) + 1

    def window(a0: int, a1: int) -> tuple[int, int]:
        size = min(G, max(min_tokens, a1 - a0 + 2 * margin_tokens))
        lo, hi = max(0, a1 - size), min(a0, G - size)
        s0 = int(rng.integers(lo, hi + 1)) if hi >= lo else max(0, min(a0, G - size))
        return s0, s0 + size

    r0, r1 = window(ty0, ty1)
    c0, c1 = window(tx0, tx1)
    if prompts is None:
        prompts = [simulate(m, rng, one_hot(kind)) for m in objs]
    target_full = _lowres_targets(objs, (H, W), input_hw, S, L)
    target = target_full[..., r0 * up : r1 * up, c0 * up : c1 * up]
    tbin = target > 0.5
    B = len(objs)
    pe = model.prompt_encoder.get_dense_pe()[..., r0:r1, c0:c1]
    win = emb[..., r0:r1, c0:c1] if isinstance(emb, torch.Tensor) else emb(r0, r1, c0, c1)
    e = win.expand(B, -1, -1, -1)
    coarse = model.mask_decoder.coarse
    n_rounds = 1 + int(rng.integers(0, rounds + 1))
    mask_input: torch.Tensor | None = None
    total: torch.Tensor | float = 0.0  # a tensor after the first round
    stats: dict[str, float] = {"kind": kind}
    for r in range(n_rounds):
        coords, labels, boxes = prompt_tensors(prompts, (H, W), input_hw)
        sparse, dense = model.embed_prompts(coords, labels, boxes, mask_input)
        masks, iou_pred, _, _ = coarse.predict_all(e, pe, sparse, dense[..., r0:r1, c0:c1])
        logits = masks[:, :1]
        loss_mask = mask_losses(logits, target)
        with torch.no_grad():
            pred = logits > 0
            inter = (pred & tbin).flatten(1).sum(1).float()
            union = (pred | tbin).flatten(1).sum(1).float()
            iou = inter / union.clamp(min=1)
            dice = 2 * inter / (pred.flatten(1).sum(1) + tbin.flatten(1).sum(1)).clamp(min=1)
        total = total + (loss_mask + (iou_pred[:, 0] - iou).pow(2)).mean()
        stats[f"dice_r{r}"] = float(dice.mean())
        if r + 1 < n_rounds:
            new = []
            f = S / L / scale  # low-res pixel -> native pixel
            for b, p in enumerate(prompts):
                c = correction_point(pred[b, 0].numpy(), tbin[b, 0].numpy())
                if c is None:
                    new.append(p.add_point(_center(objs[b]), 1))
                    continue
                (cx, cy), lab = c
                nx = min(W - 1.0, max(0.0, (c0 * up + cx + 0.5) * f - 0.5))
                ny = min(H - 1.0, max(0.0, (r0 * up + cy + 0.5) * f - 0.5))
                new.append(p.add_point((nx, ny), lab))
            prompts = new
            full = torch.full((B, 1, L, L), -20.0)
            full[..., r0 * up : r1 * up, c0 * up : c1 * up] = logits.detach()
            mask_input = full
    return cast("torch.Tensor", total) / n_rounds, stats
