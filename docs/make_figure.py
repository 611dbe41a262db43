"""Draw ``docs/prediction_example.png``: a photograph, its predicted mask and the overlay, side by side.

    python docs/make_figure.py                          # random weights (no download needed)
    python docs/make_figure.py --weights ckpt.pth       # a real checkpoint file (or omit for the catalogue's)
    python docs/make_figure.py --download               # download the catalogue checkpoint first

Every pixel of the mask comes from ``Segmentor.predict`` with the checkpoint's own preprocessing (keep-ratio
resize to 2048 x 512 (ADE20K by default), normalisation, whole-image inference); ``colorize()`` and ``overlay()`` draw it. With random
weights the caption says so in red: the picture then shows the output format, not the model's accuracy.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

import resnest_zoo

HERE = Path(__file__).resolve().parent
PHOTO = HERE.parent / "tests" / "data" / "chelsea_160x106.png"
PANEL_SCALE = 3  # the test photo is 160 x 106; panels are enlarged (nearest) to stay legible


def random_model(segmentor: str, dataset: str, seed: int) -> resnest_zoo.Segmentor:
    """The architecture with seeded random weights, BatchNorm statistics in a sane range and a classifier
    scaled up so that the (meaningless) mask shows several classes."""
    torch.manual_seed(seed)
    model = resnest_zoo.build(segmentor, dataset)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) * 0.5 + 0.75)
        for name, param in model.named_parameters():
            if name.startswith("decoder.") and param.ndim == 4:
                param.mul_(4.0)
    return model.eval()


def legend(prediction: resnest_zoo.Prediction, width: int, font: ImageFont.ImageFont, rows: int = 4) -> Image.Image:
    """Swatches and names of the classes covering most of the picture."""
    line = 18
    image = Image.new("RGB", (width, rows * line + 8), "white")
    draw = ImageDraw.Draw(image)
    shown = [(name, fraction) for name, fraction in prediction.summary() if fraction >= 0.005][:rows]
    for row, (name, fraction) in enumerate(shown):
        colour = tuple(int(c) for c in prediction.palette[prediction.class_names.index(name)])
        top = 4 + row * line
        draw.rectangle([8, top + 2, 22, top + 14], fill=colour, outline="black")
        draw.text((30, top + 2), f"{name.split(',')[0]}  {fraction:.0%}", fill="black", font=font)
    return image


def make_figure(prediction: resnest_zoo.Prediction, caption: str, warning: str | None) -> Image.Image:
    height, width = prediction.size
    size = (width * PANEL_SCALE, height * PANEL_SCALE)
    panels = [Image.fromarray(prediction.image), prediction.colorize(), prediction.overlay(alpha=0.5)]
    titles = ["photograph", "predict(...).colorize()", "predict(...).overlay()"]
    font = ImageFont.load_default()
    gap, title_height = 10, 22
    key = legend(prediction, size[0], font)
    caption_lines = [caption] + ([warning] if warning else [])
    figure = Image.new("RGB", (3 * size[0] + 4 * gap, title_height + size[1] + key.height + 20 * len(caption_lines) + 2 * gap),
                       "white")
    draw = ImageDraw.Draw(figure)
    for index, (panel, title) in enumerate(zip(panels, titles)):
        left = gap + index * (size[0] + gap)
        draw.text((left, 4), title, fill="black", font=font)
        figure.paste(panel.resize(size, Image.NEAREST), (left, title_height))
    figure.paste(key, (gap + 2 * (size[0] + gap), title_height + size[1] + 4))
    top = title_height + size[1] + key.height + gap
    for number, line in enumerate(caption_lines):
        draw.text((gap, top + 20 * number), line, fill=(200, 0, 0) if line is warning else "black", font=font)
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmentor", default="deeplabv3plus")
    parser.add_argument("--dataset", default="ade20k")
    parser.add_argument("--weights", help="checkpoint file or URL (default: random weights unless --download)")
    parser.add_argument("--download", action="store_true", help="use the catalogue checkpoint (downloads it)")
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "prediction_example.png")
    args = parser.parse_args()

    if args.weights or args.download:
        model = resnest_zoo.load(args.segmentor, args.dataset, weights=args.weights)
        warning = None
        source = "published weights"
    else:
        model = random_model(args.segmentor, args.dataset, args.seed)
        warning = ("RANDOM WEIGHTS: the real checkpoints could not be downloaded here, so this mask is NOT a real "
                   "segmentation - it only shows what predict(), colorize() and overlay() produce.")
        source = f"randomly initialised weights (seed {args.seed})"
    prediction = model.predict(args.photo)
    caption = (f"{model.entry.title}, {source}; photo: 'Chelsea the cat' by Stefan van der Walt (CC0), "
               f"via scikit-image; made by docs/make_figure.py")
    figure = make_figure(prediction, caption, warning)
    figure.save(args.out, optimize=True)
    print(f"wrote {args.out} ({figure.width} x {figure.height}); {prediction!r}")


if __name__ == "__main__":
    main()
