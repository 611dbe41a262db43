"""Jobs the tests start as separate processes, alone or under ``python -m torch.distributed.run`` (torchrun).

    python tests/distributed_jobs.py eval DATASET DATA_ROOT OUT_JSON WORKERS
    python tests/distributed_jobs.py predict DATASET OUT_DIR WORKERS INPUT... [-- OPTION=VALUE ...]

The model is :class:`synthetic_data.ColourSegmentor`, the same in every process. ``eval`` writes the result (rank
0) to OUT_JSON and, per rank, how many images that rank ran through the network to ``OUT_JSON.rank<N>``.
``predict`` runs :func:`resnest_zoo.predict_to_folder` and writes the summary (rank 0) to ``OUT_DIR.json``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

import resnest_zoo

from synthetic_data import ColourSegmentor

torch.set_num_threads(1)


def _option(value: str):
    return json.loads(value) if value[:1] in "[{0123456789tfn-" else value


def main(argv: list[str]) -> None:
    job, dataset = argv[0], argv[1]
    rank = int(os.environ.get("RANK", "0"))
    model = ColourSegmentor(dataset, delay=float(os.environ.get("TEST_FORWARD_DELAY", "0")))
    if job == "eval":
        root, out, workers = Path(argv[2]), Path(argv[3]), int(argv[4])
        result = resnest_zoo.evaluate(model, root, workers=workers, batch_size=2)
        Path(f"{out}.rank{rank}").write_text(str(sum(shape[0] for shape in model.calls)))
        if rank == 0:
            out.write_text(json.dumps({"confusion": result.confusion.tolist(), "images": result.images,
                                       "processes": result.protocol["processes"]}))
    elif job == "predict":
        out, workers = Path(argv[2]), int(argv[3])
        rest = argv[4:]
        inputs = rest[: rest.index("--")] if "--" in rest else rest
        options = dict(item.split("=", 1) for item in (rest[rest.index("--") + 1:] if "--" in rest else []))
        summary = resnest_zoo.predict_to_folder(model, inputs, out, workers=workers,
                                                **{key: _option(value) for key, value in options.items()})
        if rank == 0:
            Path(f"{out}.json").write_text(json.dumps(summary.to_dict()))
    else:
        raise SystemExit(f"unknown job {job!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
