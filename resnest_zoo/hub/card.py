"""The model card (``README.md``) of a saved model: what it is, its classes, how to load it, where it came from.

Its metadata block (the Hub's YAML front matter) is written by ``huggingface_hub``'s :class:`ModelCardData`, so the
Hub reads the library, license, task, dataset and -- for the published checkpoints -- the reported mIoU from it.
"""
from __future__ import annotations

from huggingface_hub import EvalResult, ModelCardData

from ..catalogue import SEGMENTOR_TITLES, CheckpointEntry
from ..config import ModelConfig
from ..datasets import DATASETS
from ..formats.saved_model import LIBRARY_NAME, SavedModel

__all__ = ["model_card"]

LICENSE = "apache-2.0"
_CITATION = """```bibtex
@article{zhang2020resnest,
  title={ResNeSt: Split-Attention Networks},
  author={Zhang, Hang and Wu, Chongruo and Zhang, Zhongyue and Zhu, Yi and Zhang, Zhi and Lin, Haibin and Sun, Yue
          and He, Tong and Muller, Jonas and Manmatha, R. and Li, Mu and Smola, Alexander},
  journal={arXiv preprint arXiv:2004.08955},
  year={2020}
}
```"""


def architecture(config: ModelConfig) -> str:
    """``DeepLabV3+ ResNeSt-101-D8``: the segmentor and backbone in words."""
    depth = config.backbone.arch.removeprefix("resnest")
    return f"{SEGMENTOR_TITLES[config.segmentor]} ResNeSt-{depth}-D{config.backbone.output_stride}"


def model_card(record: SavedModel, *, repo_id: str | None = None) -> str:
    """The card's full text; ``repo_id`` (when the model is pushed) goes into the loading instructions."""
    config = record.model
    entry = record.origin.entry if record.origin is not None else None
    published = entry if record.is_catalogue_model else None
    title = published.title if published is not None else f"{architecture(config)}, {config.num_classes} classes of its own"
    name = repo_id or (published.name if published is not None else "path/to/this/folder")
    sections = [f"# {title}", _summary(config, entry, published), _usage(name, repo_id), _classes(config),
                _preprocessing(config)]
    if published is not None:
        sections.append(_training(published))
    if record.metrics:
        sections.append(_metrics(record, published))
    if record.origin is not None:
        sections.append(_source(record))
    sections += [f"## License\n\nApache-2.0, as the weights and code of [sssegmentation]"
                 f"(https://github.com/SegmentationBLWX/sssegmentation) they come from.",
                 f"## Citation\n\nThe backbone is ResNeSt (Zhang et al., 2020):\n\n{_CITATION}"]
    return f"---\n{_metadata(record, published, name).to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"


def _metadata(record: SavedModel, published: CheckpointEntry | None, name: str) -> ModelCardData:
    entry = record.origin.entry if record.origin is not None else None
    results = None
    if published is not None and "mIoU" in record.metrics:
        results = [EvalResult(task_type="image-segmentation", dataset_type=published.dataset,
                              dataset_name=published.dataset_info.title, dataset_split=published.eval_set,
                              metric_type="mean_iou", metric_value=record.metrics["mIoU"])]
    return ModelCardData(
        library_name=LIBRARY_NAME, license=LICENSE, pipeline_tag="image-segmentation",
        tags=["semantic-segmentation", "resnest", record.model.segmentor, "pytorch", "safetensors"],
        datasets=[published.dataset] if published is not None else None,
        base_model=entry.hf_repo if entry is not None and published is None and entry.hf_repo else None,
        model_name=name if results else None, eval_results=results,
    )


def _summary(config: ModelConfig, entry: CheckpointEntry | None, published: CheckpointEntry | None) -> str:
    if published is not None:
        return (f"The {architecture(config)} semantic segmentation model of sssegmentation's model zoo, trained on "
                f"{published.dataset_info.title} ({published.train_set}), in the Hugging Face layout of "
                f"[resnest_zoo](https://pypi.org/project/resnest-zoo/): the published weights as float32 safetensors "
                f"(`model.safetensors`), with its classes, palette and test-time preprocessing (`config.json`).")
    start = f" fine-tuned from the published `{entry.segmentor}/{entry.dataset}` checkpoint" if entry is not None else ""
    return (f"Semantic segmentation with {architecture(config)}, predicting {config.num_classes} classes of its "
            f"own{start}; saved by [resnest_zoo](https://pypi.org/project/resnest-zoo/): weights as float32 "
            "safetensors (`model.safetensors`), classes, palette and test-time preprocessing (`config.json`).")


def _usage(name: str, repo_id: str | None) -> str:
    hub = f"hf:{name}" if repo_id else name
    return (
        "## How to use\n\n```python\nimport resnest_zoo\n\n"
        f"model = resnest_zoo.from_pretrained({name!r})\n"
        "prediction = model.predict(\"photo.jpg\")   # labels at the photo's size, with these classes and colours\n"
        "prediction.save(\"photo_mask.png\")\n```\n\n"
        f"From a shell: `resnest-zoo predict photo.jpg -m {hub}`. With torch.hub, from a clone of resnest_zoo: "
        f"`torch.hub.load(\"/path/to/resnest_zoo\", \"from_pretrained\", {name!r}, source=\"local\")`."
    )


def _classes(config: ModelConfig) -> str:
    rows = [f"| {i} | {name} | `#{r:02x}{g:02x}{b:02x}` ({r}, {g}, {b}) |"
            for i, (name, (r, g, b)) in enumerate(zip(config.class_names, config.palette))]
    return "## Classes\n\nOutput channel (label value) -> class, and its colour in masks:\n\n" \
           "| id | class | colour |\n| --: | :-- | :-- |\n" + "\n".join(rows)


def _preprocessing(config: ModelConfig) -> str:
    pre = config.preprocessing
    return (f"## Test-time pipeline\n\n`predict` resizes a picture keeping its aspect ratio to fit "
            f"{pre.resize[0]}x{pre.resize[1]} (long x short side, bilinear), normalises RGB values in 0-255 with "
            f"mean {list(pre.mean)} and std {list(pre.std)}, runs the network on the "
            f"{'whole image' if config.inference_mode == 'whole' else 'image in sliding windows'} and resizes the "
            "logits back to the picture before the argmax.")


def _training(entry: CheckpointEntry) -> str:
    s = entry.schedule
    return (f"## Training\n\nAs published by sssegmentation: {entry.dataset_info.title} {entry.train_set} set, crop "
            f"{entry.crop_size[0]}x{entry.crop_size[1]}, SGD, learning rate {s['lr']} with {s['policy']} decay, "
            f"batch size {s['batch_size']}, {s['epochs']} epochs. Original release: [checkpoint]({entry.url}), "
            f"[training log]({entry.log_url}), [config]({entry.config_url}).")


def _metrics(record: SavedModel, published: CheckpointEntry | None) -> str:
    where = (f"Measured on {published.dataset_info.title} {published.eval_set}, single-scale whole-image inference, "
             "as published by sssegmentation" if published is not None else "As reported by the author of this model")
    rows = "\n".join(f"| {name} | {value:.2f} |" for name, value in record.metrics.items())
    return f"## Results\n\n{where}:\n\n| metric | value |\n| :-- | --: |\n{rows}"


def _source(record: SavedModel) -> str:
    origin = record.origin
    assert origin is not None
    digest = f"sha256 `{origin.sha256}`" if origin.sha256 else "sha256 not recorded"
    verb = "Converted from" if record.is_catalogue_model else "Weights initialised from"
    return (f"## Source\n\n{verb} the published checkpoint [{origin.file}]({origin.url}) ({digest}; "
            f"{DATASETS[origin.dataset].title} classes). `model.safetensors` has sha256 `{record.weights_sha256}`.")
