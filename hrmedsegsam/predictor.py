"""Predictor: per-image state over a promptable model (numpy in, numpy out).

Coordinates: a slice is a 2D array ``(H, W)`` indexed ``[row, column]``; prompts are pixel
coordinates ``x`` = column, ``y`` = row (continuous, pixel centres at integers; a prompt
must lie inside ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``). Masks come back at the slice's
native ``(H, W)``. The image embedding of each (slice content, window) pair is cached, so
returning to a slice, or prefetching neighbours from a worker thread, costs nothing later.
The cache is bounded in bytes (:data:`CACHE_BYTES` by default): an entry holds the 4 MB
encoder output plus the windowed native slice (4 bytes a pixel), so 256 MB keep about 50
slices of 512 x 512 but only 3 of 4096 x 4096.
"""

from __future__ import annotations

import hashlib
import math
import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hrmedsegsam.encoder_backend import (
    EncodeFn,
    export_pending,
    make_encoder,
    parallel_encoders,
)
from hrmedsegsam.errors import InputError, PromptError, WeightsError
from hrmedsegsam.intensity import apply_window, percentile_window
from hrmedsegsam.masks import bbox_xyxy
from hrmedsegsam.model.base import PromptableModel
from hrmedsegsam.model.frame import boxes_to_frame, mask_to_lowres, points_to_frame, to_frame
from hrmedsegsam.prompt_support import accept_click, supported_mask
from hrmedsegsam.prompts import MAX_POINTS, check_box, check_point
from hrmedsegsam.runtime import keep_freed_memory, torch_threads
from hrmedsegsam.zoom import (
    ZOOM_POINT_AREA,
    Crop,
    crop_logits_to_lowres,
    lowres_to_crop,
    paste,
    zoom_crop,
)

Window = tuple[float, float]
CACHE_BYTES = 256 << 20
#: Torch threads for a prompt's decode and the checks of its output on a CPU (the encoder
#: keeps torch's setting). A decode is ~900 small operations: with two threads each waits
#: at an OpenMP barrier, and while other processes kept the 2-core development machine
#: busy, a box on a 512 x 512 slice took 0.24-1.6 s instead of 58-110 ms with one thread.
#: On the idle machine two threads were faster (49-54 ms against 62-69 ms): None suits a
#: machine known to be idle.
DECODE_THREADS = 1
#: Low-res logit given to the pixels :func:`supported_mask` removed (the value
#: :meth:`Predictor.mask_to_logits` uses for "surely outside").
_DROPPED_LOGIT = 10.0
#: Zoom crops kept per slice (a few objects being corrected on one slice).
ZOOM_KEPT = 4
#: ``(cache key, window) -> encoder output (1, 256, G, G) or None``: precomputed embeddings.
FeaturesSource = Callable[[Hashable, Window], "np.ndarray | None"]


@dataclass
class Prediction:
    """Result of :meth:`Predictor.predict`.

    mask: bool ``(H, W)`` native resolution (the best mask when several were asked for);
    score: its predicted IoU; logits: float32 ``(256, 256)`` low-res logits over the padded
    model frame, to pass back as ``mask_input``; masks / scores: all candidates ``(M, H, W)``
    / ``(M,)``, best first.
    """

    mask: np.ndarray
    score: float
    logits: np.ndarray
    masks: np.ndarray
    scores: np.ndarray


@dataclass
class Embedding:
    """A slice prepared for decoding: encoder output ``(1, 256, 64, 64)``, the windowed native
    slice ``(1, 3, H, W)`` in [0, 1], the resized image's size in the model frame, and the
    model's per-image decoder cache (prompt-independent work, filled on first use), and the
    embeddings of zoom crops made for small boxes.
    """

    features: torch.Tensor
    image: torch.Tensor
    input_hw: tuple[int, int]
    window: Window
    decoder_cache: dict[str, torch.Tensor] = field(default_factory=dict)
    #: Embeddings of zoom crops of this slice (:mod:`hrmedsegsam.zoom`), by crop; kept
    #: while the embedding is current, like the decoder cache.
    zoomed: dict[tuple[int, int, int, int], Embedding] = field(default_factory=dict)

    @property
    def native_hw(self) -> tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    @property
    def nbytes(self) -> int:
        """Memory held by the features and the native slice (the image is an expanded
        view of one channel, so its storage, not its shape, is counted).
        """
        return self.features.untyped_storage().nbytes() + self.image.untyped_storage().nbytes()


def _as_float_array(value: object, what: str) -> np.ndarray:
    """``value`` (list, tuple or array of numbers) as a float array; PromptError otherwise."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise PromptError(f"{what} must be numbers, got {type(value).__name__}") from None
    return arr


def _require_finite(t: torch.Tensor, what: str) -> None:
    # NaN logits compare false with 0 and would become an empty mask: say so instead.
    # aminmax propagates NaN and an infinity is its own min or max: one pass over the
    # tensor where isfinite().all() made several (0.05 against 0.55 ms at 512 x 512).
    if t.numel() == 0:
        return
    lo, hi = torch.aminmax(t)
    if not (math.isfinite(lo.item()) and math.isfinite(hi.item())):
        raise WeightsError(
            f"the model's {what} holds NaN or infinite values; its weights are damaged"
        )


def slice_identity(slice2d: np.ndarray) -> str:
    """Content hash of a slice (shape, dtype and bytes)."""
    arr = np.ascontiguousarray(slice2d)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.shape}{arr.dtype}".encode())
    h.update(arr.data)
    return h.hexdigest()


class Predictor:
    """Embed a slice once with :meth:`set_image`, then :meth:`predict` prompts against it."""

    def __init__(
        self,
        model: PromptableModel,
        device: torch.device | None = None,
        cache_bytes: int = CACHE_BYTES,
        backend: str | None = None,
        features_source: FeaturesSource | None = None,
        decode_threads: int | None = DECODE_THREADS,
        keep_supported: bool = True,
        zoom: bool = True,
    ) -> None:
        """``cache_bytes``: bound of the embedding cache; the newest entry is kept even if
        it alone is larger. ``backend``: where the image encoder runs, ``"auto"`` (None),
        ``"torch"``, ``"onnx"`` or ``"openvino"`` (see :mod:`hrmedsegsam.encoder_backend`); chosen at the
        first embedding. ``features_source(key, window)``: asked on a cache miss before the
        encoder runs, returns stored encoder output ``(1, 256, G, G)`` for that key or None
        (e.g. an :class:`~hrmedsegsam.embedding_store.StoreSource`); settable later as an
        attribute. ``decode_threads``: torch threads for :meth:`predict` on a CPU (None:
        torch's setting, as for the encoder; see :data:`DECODE_THREADS`). ``keep_supported``:
        drop the mask components the prompts do not support (:mod:`hrmedsegsam.prompt_support`;
        False returns the decoder's raw masks). ``zoom``: segment small boxes on an embedded
        crop of the slice (:mod:`hrmedsegsam.zoom`; one encoder run per new box position).
        """
        self.model = model.eval()
        self.device = device or next(model.parameters()).device
        self.model.to(self.device)
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[tuple[Hashable, Window], Embedding] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.RLock()
        self._current: Embedding | None = None
        self._backend_request = backend
        self.features_source = features_source
        self._encoder: tuple[str, EncodeFn] | None = None
        self._thread_encoders: list[EncodeFn] = []  # for embed_all
        self._encoder_lock = threading.Lock()
        self.decode_threads = decode_threads if self.device.type == "cpu" else None
        self.keep_supported = keep_supported
        self.zoom = zoom
        if self.device.type == "cpu":
            keep_freed_memory()

    # -- embedding -------------------------------------------------------------------
    def _autocast(self) -> AbstractContextManager[Any]:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    def encoder(self) -> tuple[str, EncodeFn]:
        """The encoder backend's name and callable (resolved, and exported if needed, once)."""
        # Its own lock: a first-use export takes tens of seconds, and cache look-ups (e.g.
        # is_cached from a UI thread) must not wait for it.
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = make_encoder(self.model, self.device, self._backend_request)
            return self._encoder

    def encoder_pending(self) -> bool:
        """Whether :meth:`encoder` still has a first-use export to make (tens of seconds)."""
        if self._encoder is not None:
            return False
        return export_pending(self.model, self.device, self._backend_request)

    @staticmethod
    def _check_slice(slice2d: np.ndarray) -> np.ndarray:
        arr = np.asarray(slice2d)
        if arr.ndim != 2:
            raise InputError(f"a 2D slice (H, W) is needed, got an array of shape {arr.shape}")
        if min(arr.shape) < 2:
            raise InputError(f"the slice is too small to segment: {arr.shape}")
        return arr

    def _key(
        self, slice2d: np.ndarray, window: Window, key: Hashable | None
    ) -> tuple[Hashable, Window]:
        return (
            key if key is not None else slice_identity(slice2d),
            (float(window[0]), float(window[1])),
        )

    def preprocess(
        self, slice2d: np.ndarray, window: Window
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Window and resize a slice: returns the model input ``(1, 3, S, S)``, the native
        windowed slice ``(1, 3, H, W)``, and the resized size ``(h, w)`` in the frame.
        """
        native = torch.from_numpy(apply_window(slice2d, window)).to(self.device)[None, None]
        frame, input_hw = to_frame(native, self.model.image_size)
        return frame, native.expand(-1, 3, -1, -1), input_hw

    def embed(
        self, slice2d: np.ndarray, window: Window | None = None, key: Hashable | None = None
    ) -> Embedding:
        """Compute (or fetch from the cache) the embedding of ``slice2d`` under ``window``.

        Thread-safe; does not change the current image. ``key`` identifies the slice (e.g.
        ``(volume_id, z)``); without it the slice's content hash is used. ``window`` None:
        the slice's 0.5-99.5 percentile range.
        """
        arr, win, ck = self._lookup_key(slice2d, window, key)
        hit = self._cached(ck)
        return hit if hit is not None else self._compute(arr, win, ck, None)

    def embed_all(
        self,
        slices: Sequence[np.ndarray] | np.ndarray,
        window: Window | None = None,
        keys: Sequence[Hashable] | None = None,
        workers: int | None = None,
    ) -> Iterator[tuple[int, Embedding]]:
        """Embed many slices (e.g. a volume ``(Z, H, W)``) for throughput: yields
        ``(index, embedding)`` in order, as :meth:`embed` would for each.

        On a CPU ``workers`` slices (default: torch's thread count) are windowed, resized
        and encoded at once, each on one thread (see
        :func:`~hrmedsegsam.encoder_backend.parallel_encoders`): the encoder is hundreds of
        small operations, and one frame per core skips the synchronisation between threads
        at every one of them (encoder alone, 2-core development machine under load: 0.21 s
        a 1024 frame instead of 0.29 s on OpenVINO, 0.31 s instead of 2.3 s on PyTorch;
        README, Speed). Elsewhere, or with one worker, the slices are embedded one after
        another. ``keys``: one per slice (see :meth:`embed`); ``window`` None: each
        slice's percentile window. New embeddings enter the cache as with :meth:`embed`, so
        with a small cache only the newest remain: use them as they come. At most
        ``2 * workers`` slices are in flight; closing the iterator early cancels the rest.
        """
        n = len(slices)
        if keys is not None and len(keys) != n:
            raise InputError(f"{len(keys)} keys for {n} slices")
        workers = max(1, workers or torch.get_num_threads()) if self.device.type == "cpu" else 1
        if workers == 1 or n < 2:
            for i in range(n):
                yield i, self.embed(slices[i], window, None if keys is None else keys[i])
            return
        free: queue.SimpleQueue[EncodeFn] = queue.SimpleQueue()
        for encode in self._parallel_encoders(workers):
            free.put(encode)

        def job(i: int) -> Embedding:
            arr, win, ck = self._lookup_key(slices[i], window, None if keys is None else keys[i])
            hit = self._cached(ck)
            if hit is not None:
                return hit
            encode = free.get()
            try:
                with torch_threads(1):  # the slice's preprocessing too
                    return self._compute(arr, win, ck, encode)
            finally:
                free.put(encode)

        pool = ThreadPoolExecutor(workers, thread_name_prefix="embed_all")
        try:
            ahead: deque[Future[Embedding]] = deque()
            for i in range(min(n, 2 * workers)):
                ahead.append(pool.submit(job, i))
            for i in range(n):
                emb = ahead.popleft().result()
                if i + len(ahead) + 1 < n:
                    ahead.append(pool.submit(job, i + len(ahead) + 1))
                yield i, emb
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _parallel_encoders(self, count: int) -> list[EncodeFn]:
        """``count`` encoders on the backend :meth:`encoder` chose, for as many threads at
        once, each computing on one thread (made once per count).
        """
        name, _ = self.encoder()
        with self._encoder_lock:
            if len(self._thread_encoders) != count:
                self._thread_encoders = parallel_encoders(name, self.model, count)
            return self._thread_encoders

    def _lookup_key(
        self, slice2d: np.ndarray, window: Window | None, key: Hashable | None
    ) -> tuple[np.ndarray, Window, tuple[Hashable, Window]]:
        arr = self._check_slice(slice2d)
        win: Window = window if window is not None else percentile_window(arr)
        return arr, win, self._key(arr, win, key)

    def _cached(self, ck: tuple[Hashable, Window]) -> Embedding | None:
        with self._lock:
            hit = self._cache.get(ck)
            if hit is not None:
                self._cache.move_to_end(ck)
            return hit

    def _compute(
        self, arr: np.ndarray, win: Window, ck: tuple[Hashable, Window], encode: EncodeFn | None
    ) -> Embedding:
        """Embed ``arr`` (stored features first, else ``encode`` or the predictor's encoder)
        and put it into the cache. The encoder runs outside the cache's lock, so several
        threads can encode at once.
        """
        frame, native, input_hw = self.preprocess(arr, win)
        stored = self.features_source(ck[0], ck[1]) if self.features_source is not None else None
        if stored is None and encode is None:
            encode = self.encoder()[1]
        with torch.inference_mode(), self._autocast():
            if encode is None:
                features = torch.from_numpy(np.asarray(stored, np.float32)).to(self.device)
            else:
                features = encode(frame[:1].contiguous()).float()
            _require_finite(features, "image embedding")
        emb = Embedding(features, native[:1], input_hw, ck[1])
        with self._lock:
            old = self._cache.pop(ck, None)
            if old is not None:  # another thread embedded the same slice meanwhile
                self._cached_bytes -= old.nbytes
            self._cache[ck] = emb
            self._cached_bytes += emb.nbytes
            while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
                self._cached_bytes -= self._cache.popitem(last=False)[1].nbytes
        return emb

    @property
    def cached_bytes(self) -> int:
        """Bytes the embedding cache holds now."""
        with self._lock:
            return self._cached_bytes

    def is_cached(self, key: Hashable, window: Window) -> bool:
        """Whether the embedding for ``key`` under ``window`` is in the cache."""
        with self._lock:
            return (key, (float(window[0]), float(window[1]))) in self._cache

    def set_image(
        self, slice2d: np.ndarray, window: Window | None = None, key: Hashable | None = None
    ) -> None:
        """Make ``slice2d`` ``(H, W)`` the image that :meth:`predict` segments."""
        self.set_embedding(self.embed(slice2d, window, key))

    def set_embedding(self, embedding: Embedding) -> None:
        """Make an embedding from :meth:`embed` (e.g. computed in a worker) current.

        Only the current embedding keeps its decoder cache (tens of MB); the one it replaces
        drops its cache and refills it if it becomes current again.
        """
        previous = self._current
        if previous is not None and previous is not embedding:
            previous.decoder_cache.clear()
            previous.zoomed.clear()
        self._current = embedding

    @property
    def image_hw(self) -> tuple[int, int]:
        """Native ``(H, W)`` of the current image."""
        if self._current is None:
            raise RuntimeError("call set_image() before predict()")
        return self._current.native_hw

    def mask_to_logits(self, mask: np.ndarray, strength: float = 10.0) -> np.ndarray:
        """Turn a native-resolution mask ``(H, W)`` of the current image into low-res logits
        ``(256, 256)`` usable as ``mask_input`` (e.g. to refine an accepted object).

        The mask is area-resampled onto the low-res frame; inside is ``+strength``, outside
        and padding ``-strength``, fractional pixels in between.
        """
        emb = self._current
        if emb is None:
            raise RuntimeError("call set_image() before mask_to_logits()")
        m = np.asarray(mask)
        if m.shape != emb.native_hw:
            raise PromptError(f"mask shape {m.shape} does not match the image {emb.native_hw}")
        return mask_to_lowres(
            m, self.model.lowres_valid_hw(emb.input_hw), self.model.lowres_size, strength
        )

    # -- prompts ---------------------------------------------------------------------
    def _zoom_embedding(self, emb: Embedding, crop: Crop) -> Embedding:
        """The embedding of ``crop`` ``(r0, c0, h, w)`` of ``emb``'s windowed slice (kept in
        ``emb.zoomed``; at most :data:`ZOOM_KEPT` crops per slice).
        """
        hit = emb.zoomed.get(crop)
        if hit is not None:
            return hit
        r0, c0, h, w = crop
        native = emb.image[..., r0 : r0 + h, c0 : c0 + w]
        frame, input_hw = to_frame(native[:, :1], self.model.image_size)
        encode = self.encoder()[1]
        with torch.inference_mode(), self._autocast():
            features = encode(frame.contiguous()).float()
            _require_finite(features, "image embedding")
        zoomed = Embedding(features, native, input_hw, emb.window)
        while len(emb.zoomed) >= ZOOM_KEPT:
            emb.zoomed.pop(next(iter(emb.zoomed)))
        emb.zoomed[crop] = zoomed
        return zoomed

    def _keep_supported(
        self,
        masks: np.ndarray,
        lowres: np.ndarray,
        box: np.ndarray | None,
        points: np.ndarray | None,
        labels: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``masks`` ``(M, H, W)`` filtered by :func:`supported_mask`; where pixels were
        removed, the low-res logits ``(M, 256, 256)`` are pushed below zero in proportion, so
        that a refinement fed with them does not bring the dropped parts back.
        """
        emb = self._current
        assert emb is not None
        masks, lowres = masks.copy(), lowres.copy()
        vh, vw = self.model.lowres_valid_hw(emb.input_hw)
        L = self.model.lowres_size
        for i in range(masks.shape[0]):
            kept = supported_mask(masks[i], box, points, labels)
            if kept is masks[i]:
                continue
            removed = masks[i] & ~kept
            masks[i] = kept
            frac = (mask_to_lowres(removed, (vh, vw), L, 1.0)[:vh, :vw] + 1.0) / 2.0
            region = lowres[i, :vh, :vw]
            lowres[i, :vh, :vw] = np.where(
                frac > 0, (1.0 - frac) * region + frac * -_DROPPED_LOGIT, region
            )
        return masks, lowres

    def refine(
        self,
        previous: Prediction,
        points: Sequence[Sequence[float]],
        labels: Sequence[int],
        box: Sequence[float] | None = None,
    ) -> Prediction:
        """A corrective click on ``previous`` (the prediction for the same slice, box and
        all points but the last): the last of ``points`` / ``labels`` is the new click.

        The decoder is fed ``previous.logits`` as ``mask_input``; its answer is merged with
        ``previous.mask`` by :func:`~hrmedsegsam.prompt_support.accept_click` (a positive
        click only adds, a negative one only takes away), and the returned low-res logits
        describe the merged mask. Coordinates as in :meth:`predict`.
        """
        if len(points) == 0 or len(labels) != len(points):
            raise PromptError(
                "refine needs the points with the new click last, and a label for each"
            )
        hw = self.image_hw
        if previous.mask.shape != hw:
            raise PromptError(f"the previous mask {previous.mask.shape} is not of this image {hw}")
        out = self.predict(box=box, points=points, labels=labels, mask_input=previous.logits)
        merged = accept_click(previous.mask, out.mask, int(labels[-1]) == 1)
        if np.array_equal(merged, out.mask):
            return out
        masks = out.masks.copy()
        masks[0] = merged
        return Prediction(
            mask=merged,
            score=out.score,
            logits=self.mask_to_logits(merged),
            masks=masks,
            scores=out.scores,
        )

    def predict(
        self,
        box: Sequence[float] | None = None,
        points: Sequence[Sequence[float]] | None = None,
        labels: Sequence[int] | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = False,
        zoom: bool | None = None,
    ) -> Prediction:
        """Segment the current image from prompts.

        box: ``[x0, y0, x1, y1]`` pixels (corners in any order); points: ``[[x, y], ...]``
        pixels, a list or an ``(N, 2)`` array, at most :data:`~hrmedsegsam.prompts.MAX_POINTS`
        (a third column is refused: point labels go in ``labels``); labels: 1 positive / 0
        negative per point (default all positive);
        mask_input: low-res logits ``(256, 256)`` from an earlier prediction; multimask:
        return three candidates (best in ``.mask``) instead of one; zoom: segment a small box
        on a crop (:mod:`hrmedsegsam.zoom`; None: the Predictor's ``zoom`` setting).
        """
        emb = self._current
        if emb is None:
            raise RuntimeError("call set_image() before predict()")
        pts = None if points is None else _as_float_array(points, "points")
        if pts is not None and pts.size == 0:
            pts = None
        if box is None and pts is None and mask_input is None:
            raise PromptError("give a box, at least one point, or a mask input")
        native_hw, input_hw = emb.native_hw, emb.input_hw
        dev = self.device
        box_native = None
        if box is not None:
            box_native = check_box(_as_float_array(box, "box"), native_hw)
        lab = None
        if pts is not None:
            if pts.ndim != 2 or pts.shape[1] != 2:
                raise PromptError(
                    f"points must be [x, y] pairs, an (N, 2) array, got shape {pts.shape}"
                    + (
                        "; give point labels in labels=, not as a third column"
                        if pts.ndim == 2 and pts.shape[1] == 3
                        else ""
                    )
                )
            if len(pts) > MAX_POINTS:
                raise PromptError(
                    f"{len(pts)} points; at most {MAX_POINTS} are allowed in one prediction"
                )
            lab_f = (
                np.ones(len(pts))
                if labels is None
                else _as_float_array(labels, "labels").reshape(-1)
            )
            if not np.isin(lab_f, (0, 1)).all():
                raise PromptError("point labels must be 1 (positive) or 0 (negative)")
            lab = lab_f.astype(int)
            if lab.shape[0] != pts.shape[0]:
                raise PromptError(f"{pts.shape[0]} points but {lab.shape[0]} labels")
            for x, y in pts:
                check_point(float(x), float(y), native_hw)
        mask_t = None
        if mask_input is not None:
            m = _as_float_array(mask_input, "mask_input").astype(np.float32)
            L = self.model.lowres_size
            if m.size != L * L:
                raise PromptError(
                    f"mask_input must be the ({L}, {L}) logits of an earlier prediction, got shape {m.shape}"
                )
            if not np.isfinite(m).all():
                raise PromptError("mask_input holds NaN or infinite values")
            mask_t = torch.from_numpy(m.reshape(1, 1, L, L)).to(dev)
        zoom_on = self.zoom if zoom is None else zoom
        crop = zoom_crop(box_native, native_hw, pts) if zoom_on and box_native is not None else None
        if mask_t is not None and crop is not None:
            valid_hw = self.model.lowres_valid_hw(input_hw)
            crop_valid = self.model.lowres_valid_hw(self._zoom_embedding(emb, crop).input_hw)
            mask_t = lowres_to_crop(mask_t, valid_hw, native_hw, crop, crop_valid)
        masks, lowres, scores = self._decode(emb, crop, box_native, pts, lab, mask_t, multimask)
        if self.keep_supported:
            masks, lowres = self._keep_supported(masks, lowres, box_native, pts, lab)
        if zoom_on and box_native is None and mask_t is None and pts is not None and not multimask:
            masks, lowres, scores = self._zoom_points(emb, masks, lowres, scores, pts, lab)
        return Prediction(
            mask=masks[0],
            score=float(scores[0]),
            logits=lowres[0].astype(np.float32),
            masks=masks,
            scores=scores,
        )

    def _decode(
        self,
        emb: Embedding,
        crop: Crop | None,
        box: tuple[float, float, float, float] | None,
        pts: np.ndarray | None,
        lab: np.ndarray | None,
        mask_t: torch.Tensor | None,
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One decode of checked native prompts (``box`` ``(x0, y0, x1, y1)``, ``pts``
        ``(N, 2)`` ``[x, y]``, ``lab`` ``(N,)``) on ``emb``'s slice or on its zoom ``crop``
        (``mask_t`` ``(1, 1, 256, 256)`` then already in the crop's frame). Returns masks
        ``(M, H, W)`` bool and low-res logits ``(M, 256, 256)`` in the slice's frame, and
        scores ``(M,)``, best first.
        """
        dev = self.device
        native_hw = emb.native_hw
        e = emb if crop is None else self._zoom_embedding(emb, crop)
        ox, oy = (0, 0) if crop is None else (crop[1], crop[0])
        box_e = boxes_t = coords_t = labels_t = None
        if box is not None:
            x0, y0, x1, y1 = box
            box_e = (x0 - ox, y0 - oy, x1 - ox, y1 - oy)
            boxes_t = torch.from_numpy(boxes_to_frame([box_e], e.native_hw, e.input_hw)).to(dev)
        if pts is not None and lab is not None:
            shifted = (pts - np.array([ox, oy], float))[None]
            coords_t = torch.from_numpy(points_to_frame(shifted, e.native_hw, e.input_hw)).to(dev)
            labels_t = torch.tensor(lab[None], dtype=torch.int64, device=dev)
        # The checks and conversions of the (H, W) logits run under the same thread setting:
        # at two threads on a busy CPU they cost as much as the decode.
        with torch.inference_mode(), self._autocast(), torch_threads(self.decode_threads):
            out = self.model.decode(
                e.features,
                e.image,
                e.input_hw,
                coords=coords_t,
                labels=labels_t,
                boxes=boxes_t,
                mask_input=mask_t,
                multimask=multimask,
                box_native=box_e,
                cache=e.decoder_cache,
            )
            _require_finite(out.logits, "mask logits")
            _require_finite(out.iou, "predicted IoU")
            full, low = out.logits, out.lowres
            if crop is not None:
                valid_hw = self.model.lowres_valid_hw(emb.input_hw)
                low = crop_logits_to_lowres(
                    full.float(), native_hw, crop, valid_hw, self.model.lowres_size
                )
                full = paste(full.float(), native_hw, crop)
            scores = out.iou[0].float().cpu().numpy()
            order = np.argsort(-scores, kind="stable")
            masks = (full[0].float() > 0).cpu().numpy()[order]
            lowres = low[0].float().cpu().numpy()[order]
        return masks, lowres, scores[order]

    def _zoom_points(
        self,
        emb: Embedding,
        masks: np.ndarray,
        lowres: np.ndarray,
        scores: np.ndarray,
        pts: np.ndarray,
        lab: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Clicks alone on a small structure: when the whole-slice answer ``masks[0]`` is
        under :data:`~hrmedsegsam.zoom.ZOOM_POINT_AREA` pixels and fits a zoom crop, the
        clicks are decoded again on that crop with the answer as the mask prompt (see
        :mod:`hrmedsegsam.zoom`). Arguments and result as :meth:`_decode`'s.
        """
        first = masks[0]
        area = int(first.sum())
        bb = bbox_xyxy(first) if 0 < area < ZOOM_POINT_AREA else None
        crop = zoom_crop(bb, emb.native_hw, pts) if bb is not None else None
        if crop is None:
            return masks, lowres, scores
        r0, c0, h, w = crop
        ze = self._zoom_embedding(emb, crop)
        seed = mask_to_lowres(
            first[r0 : r0 + h, c0 : c0 + w],
            self.model.lowres_valid_hw(ze.input_hw),
            self.model.lowres_size,
        )
        mask_t = torch.from_numpy(seed[None, None]).to(self.device)
        masks2, lowres2, scores2 = self._decode(emb, crop, None, pts, lab, mask_t, False)
        if self.keep_supported:
            masks2, lowres2 = self._keep_supported(masks2, lowres2, None, pts, lab)
        if not masks2[0].any():
            return masks, lowres, scores
        return masks2, lowres2, scores2
