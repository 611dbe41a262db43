"""Folder to folder: segment any number of files into masks, resumably, on every process of a torchrun.

:func:`predict_to_folder` is what ``resnest-zoo predict`` runs:

* **Work list**: files, folders, glob patterns and a list file (:mod:`.inputs`), sorted and deduplicated; under
  torchrun each process takes its own share (:func:`resnest_zoo.distributed.shard`), so every file is handled by
  exactly one process.
* **Reading** in ``DataLoader`` workers and **inference** in batches of equal resized shape
  (:func:`.stream.segment_loaded`, the loop evaluation uses too).
* **Writing** in a small pool of background threads behind a bounded queue (:class:`WriterPool`): PNG encoding
  never stalls the network, and memory holds at most ``queue`` pending results. Every file is written under a
  temporary name in its folder (``.NAME.partial``) and renamed into place, so no half-written file ever has a final
  name; a file that is already there is never replaced unless ``overwrite=True`` (:mod:`.outputs` has the names,
  formats and the rules that refuse a run before any work).
* **Resume**: an input whose outputs all exist is skipped, so a rerun after ``kill -9`` redoes only the inputs
  that were in flight (their temporary files are overwritten, then renamed). No lock, pid or state file is
  trusted: the outputs themselves say what is done.
* **Manifest**: ``manifest.jsonl`` in the output folder (``manifest.rank<N>.jsonl`` per process under torchrun),
  appended to by every run: one JSON object per input and run, ``{"input", "outputs", "status", "error"}`` with
  status ``done``, ``skipped`` (already done) or ``failed`` (and the reason); ``input`` is absolute, ``outputs``
  are relative to the output folder (:class:`Manifest`).
* **Bad inputs** (missing, unreadable, empty, truncated, not an image, decompression bomb) are reported once,
  recorded and skipped; an output that cannot be written (permissions, full disk) stops the run with
  :class:`~resnest_zoo.OutputWriteError`, leaving every finished output in place.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..distributed import all_reduce_sum, device_for, process_group, ranks_from_environment, shard
from ..errors import OutputWriteError
from ..options import WRITERS
from ..progress import progress_bar
from .engine import InferencePlan, plan_inference
from .inputs import collect_inputs
from .loader import ImageFiles, load_images
from ..options import MASK_FORMATS
from .outputs import PlannedInput, check_output_folder, plan_outputs, write_outputs
from .prediction import Prediction
from .stream import predictions_of, resolve_workers, segment_loaded

__all__ = ["BatchSummary", "WriterPool", "Manifest", "predict_to_folder", "segment_to_folder"]



@dataclass
class BatchSummary:
    """What a :func:`predict_to_folder` run did, all processes together."""

    done: int
    skipped: int
    failed: int
    seconds: float
    output: Path
    processes: int = 1
    manifests: list[Path] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.done + self.skipped + self.failed

    @property
    def images_per_second(self) -> float:
        """Images segmented per second of the run (skipped and failed inputs not counted)."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"{self.done} of {self.total} image(s) segmented into {self.output} ({self.skipped} skipped as "
                f"already done, {self.failed} failed) in {self.seconds:.1f} s, {self.images_per_second:.2f} images/s")

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed, "seconds": self.seconds,
                "images_per_second": self.images_per_second, "output": str(self.output),
                "processes": self.processes, "manifests": [str(path) for path in self.manifests]}


class Manifest:
    """An append-only JSON-lines record of a run's inputs; lines are flushed as they are written.

    Each line's ``input`` is the input's absolute path (as given, links not resolved) and its ``outputs`` are relative
    to the manifest's own folder, the output folder: the record means the same from any working directory, and
    stays true when the output folder is moved or copied with its manifest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._folder = Path(os.path.abspath(path.parent))
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise OutputWriteError(f"cannot write the manifest {path}: {exc.strerror or exc}") from None

    def record(self, path: Path, outputs: Sequence[Path], status: str, error: str | None = None) -> None:
        line = json.dumps({"input": os.path.abspath(path),
                           "outputs": [os.path.relpath(os.path.abspath(p), self._folder) for p in outputs],
                           "status": status, "error": error}, ensure_ascii=False)
        with self._lock:
            try:
                self._handle.write(line + "\n")
                self._handle.flush()
            except OSError as exc:
                raise OutputWriteError(f"cannot write the manifest {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        with self._lock:
            try:
                self._handle.close()
            except OSError:
                pass


class WriterPool:
    """``threads`` background writers behind a queue of at most ``queue`` jobs: :meth:`submit` blocks when it is
    full, so results never pile up in memory. The first failure is kept, and raised by the next :meth:`submit` or
    by :meth:`close`; jobs already running finish (or fail) on their own, and no new job starts."""

    def __init__(self, threads: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="resnest-zoo-writer")
        self._slots = threading.BoundedSemaphore(queue)
        self.failure: BaseException | None = None

    def _run(self, job: Callable[[], None]) -> None:
        try:
            if self.failure is None:
                job()
        except BaseException as exc:  # kept and raised in the submitting thread
            if self.failure is None:
                self.failure = exc
        finally:
            self._slots.release()

    def submit(self, job: Callable[[], None]) -> None:
        if self.failure is not None:
            raise self.failure
        self._slots.acquire()
        self._executor.submit(self._run, job)

    def wait(self) -> None:
        """Wait for every submitted job to finish or fail."""
        self._executor.shutdown(wait=True)

    def close(self) -> None:
        """Wait for every submitted job; raise the first failure, if any."""
        self.wait()
        if self.failure is not None:
            raise self.failure


def _model_name(model: torch.nn.Module) -> str:
    entry = getattr(model, "entry", None)
    return f"{entry.segmentor}/{entry.dataset}" if entry is not None else type(model).__name__


def predict_to_folder(
    model: torch.nn.Module,
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = (),
    output: str | os.PathLike[str] = "predictions",
    *,
    list_file: str | os.PathLike[str] | None = None,
    format: str = "png",
    overlay: bool = False,
    alpha: float = 0.5,
    overwrite: bool = False,
    batch_size: int | None = None,
    workers: int | None = None,
    writers: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    report: Callable[[str, str], None] | None = None,
    **options: Any,
) -> BatchSummary:
    """Segment every image of ``inputs`` (and ``list_file``) into ``output``, keeping the inputs' folder structure.

    See the module docs for the work list, resume, manifest and failure rules. Under torchrun each process
    handles its own share on its ``LOCAL_RANK`` device and the counts are summed once at the end.

    Args:
        inputs: files, folders (recursive) and glob patterns (see :mod:`resnest_zoo.inference.inputs`).
        output: the output folder (created); files below it are never taken as inputs.
        list_file: a text file of image paths, one per line.
        format: ``"png"`` (indexed, dataset palette), ``"cityscapes-ids"`` (Cityscapes models: official label ids,
            for the evaluation server) or ``"npy"`` (class ids as a NumPy array).
        overlay: also write ``NAME_overlay.png``, the mask blended over the picture with opacity ``alpha``.
        overwrite: redo inputs whose outputs exist (by default they are skipped: a rerun resumes).
        batch_size, workers: images per forward pass; ``DataLoader`` processes reading files (default: half the
            CPUs, at most 8).
        writers: background threads encoding and writing outputs (default :data:`resnest_zoo.options.WRITERS`).
        device: where to compute; default where the model is (under torchrun: the GPU of ``LOCAL_RANK``).
        progress: show a progress bar (rank 0).
        report: called as ``report(path, reason)`` once per input that fails (default: one line on stderr).
        options: as for ``model.predict``: ``dtype``, ``mode``, ``crop_size``, ``stride``, ``scales``, ``flip``,
            ``channels_last``.

    Returns:
        The :class:`BatchSummary` of the whole run (every process returns the same).

    Raises:
        OutputWriteError: the output folder cannot be written, or a write failed (full disk ...).
        OutputConflictError: before any work, when an output would land on an input, two inputs would share an
            output, or an existing file was not written by batch prediction (and ``overwrite`` is False).
    """
    if format not in MASK_FORMATS:
        raise ValueError(f"format must be one of {', '.join(MASK_FORMATS)}, got {format!r}")
    output = Path(output)
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    work = collect_inputs(items, list_file=list_file, exclude=output)
    check_output_folder(output)
    planned = plan_outputs(shard(work, ranks_from_environment()), output, format, overlay, overwrite, inputs=work)
    return segment_to_folder(model, planned, output, format=format, alpha=alpha if overlay else None,
                             overwrite=overwrite, batch_size=batch_size, workers=workers, writers=writers,
                             device=device, progress=progress, report=report, **options)


def segment_to_folder(
    model: torch.nn.Module,
    planned: Sequence[PlannedInput],
    output: str | os.PathLike[str],
    *,
    format: str = "png",
    alpha: float | None = None,
    overwrite: bool = False,
    progress: bool = False,
    report: Callable[[str, str], None] | None = None,
    **options: Any,
) -> BatchSummary:
    """The run of :func:`predict_to_folder` once its outputs are planned (:func:`.outputs.plan_outputs` of this
    process's share): what ``resnest-zoo predict`` calls after its checks, so that they come before the model is
    loaded. ``alpha`` is the overlay's opacity, None for no overlay; ``options`` are ``batch_size``, ``workers``,
    ``writers``, ``device`` and the inference options, as for :func:`predict_to_folder`."""
    started = time.perf_counter()
    workers, writers, device = (options.pop(name, None) for name in ("workers", "writers", "device"))
    if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    plan = plan_inference(model, **options)
    if format == "cityscapes-ids":
        from ..datasets import cityscapes

        if tuple(plan.config.class_names) != cityscapes.CLASS_NAMES:
            raise ValueError("format='cityscapes-ids' writes Cityscapes label ids, so it needs a model of the 19 "
                             "Cityscapes classes; use format='png' or 'npy' for this model")
    threads = WRITERS if writers is None else writers
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"writers must be a positive whole number, got {writers!r}")
    output = Path(output)
    ranks = ranks_from_environment()
    count = resolve_workers(workers, ranks.local_world_size)
    target = plan.prepare(model, None if device is None and not ranks.distributed else device_for(device, ranks))
    manifest_path = output / ("manifest.jsonl" if not ranks.distributed else f"manifest.rank{ranks.rank}.jsonl")
    with process_group(ranks, target):
        counts = _run(model, plan, target, list(planned), Manifest(manifest_path), fmt=format, alpha=alpha,
                      overwrite=overwrite, workers=count, writers=threads, progress=progress and ranks.is_main,
                      report=report, name=_model_name(model))
        totals = all_reduce_sum(torch.tensor(counts, dtype=torch.int64, device=target))
    done, skipped, failed = (int(value) for value in totals.tolist())
    manifests = sorted(output.glob("manifest*.jsonl")) if ranks.distributed else [manifest_path]
    return BatchSummary(done, skipped, failed, time.perf_counter() - started, output, ranks.world_size, manifests)


def _run(model: torch.nn.Module, plan: InferencePlan, device: torch.device, planned: list[PlannedInput],
         manifest: Manifest, *, fmt: str, alpha: float | None, overwrite: bool, workers: int, writers: int,
         progress: bool, report: Callable[[str, str], None] | None, name: str) -> list[int]:
    """This process's share: ``[done, skipped, failed]``."""
    done = failed = 0
    todo = [entry for entry in planned if not entry.done]
    bar = progress_bar(len(planned), initial=len(planned) - len(todo), unit="img", desc="segmenting",
                       enabled=progress)
    if report is None:  # one line per failed input, above the progress display
        def report(path: str, reason: str) -> None:
            bar.write(f"error: {path}: {reason}", file=sys.stderr)
    try:
        for entry in planned:
            if entry.done:
                manifest.record(entry.input.path, entry.outputs, "skipped")
        files = ImageFiles([entry.input.path for entry in todo], plan.config.preprocessing,
                           keep_image=alpha is not None)
        pool = WriterPool(writers, queue=2 * writers + plan.batch_size)
        try:
            loaded = load_images(files, workers=workers, pin_memory=device.type == "cuda")
            for batch, labels in segment_loaded(model, plan, device, loaded):
                for item, prediction in zip(batch, predictions_of(batch, labels, plan.config)):
                    entry = todo[item.index]
                    if prediction is not None:
                        pool.submit(_write_job(prediction, entry, fmt, alpha, overwrite, manifest, name))
                        done += 1
                    else:
                        failed += 1
                        report(str(entry.input.path), item.error or "unreadable")
                        manifest.record(entry.input.path, [], "failed", item.error)
                bar.update(len(batch))
            pool.close()
        finally:
            pool.wait()  # whatever happened, the outputs in flight are finished (or cleanly failed) first
    finally:
        bar.close()
        manifest.close()
    return [done, len(planned) - len(todo), failed]


def _write_job(prediction: Prediction, entry: PlannedInput, fmt: str, alpha: float | None, overwrite: bool,
               manifest: Manifest, name: str) -> Callable[[], None]:
    def job() -> None:
        write_outputs(prediction, entry.outputs, fmt, alpha, name, overwrite)
        manifest.record(entry.input.path, entry.outputs, "done")
    return job
