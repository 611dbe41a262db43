"""Fine-tune a published checkpoint to classes of your own, on a folder of images and masks; save it; share it.

    python examples/finetune.py my_data --classes background crack pothole \
        --model deeplabv3plus/cityscapes --epochs 20 --batch-size 8 --out road-damage-model

``my_data`` holds ``images/`` and ``masks/`` (one PNG per image, same name, class ids as pixel values, 255 =
ignored; see ``resnest_zoo.training.data``). The loop is plain PyTorch, with the published recipe: the new
classifier (and the auxiliary head's) on top of every other published tensor, SGD with momentum 0.9 and weight
decay 5e-4, the checkpoint's learning rate decayed per iteration by the poly schedule, cross-entropy plus 0.4 x the
auxiliary head's, random scale / crop / flip; mixed precision (float16 autocast) on a GPU. Afterwards::

    model = resnest_zoo.from_pretrained("road-damage-model")
    model.predict("street.jpg").save("street_mask.png")
    model.push_to_hub("your-org/road-damage")        # or: --push your-org/road-damage

Use a batch of at least 2 (BatchNorm needs it in training mode), or ``--freeze batchnorm`` for batches of one.
"""
from __future__ import annotations

import argparse
import time

import torch

import resnest_zoo
from resnest_zoo.training import SegmentationFolder, TrainingTransform, poly_lr_scheduler, segmentation_loss, sgd


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="folder with images/ and masks/")
    classes = parser.add_mutually_exclusive_group(required=True)
    classes.add_argument("--classes", nargs="+", metavar="NAME", help="class names, in label order (0, 1, ...)")
    classes.add_argument("--num-classes", type=int, help="number of classes (named class_0, class_1, ...)")
    parser.add_argument("--model", default="deeplabv3plus/cityscapes", help="checkpoint to start from, SEGMENTOR/DATASET")
    parser.add_argument("--weights", help="local .pth of that checkpoint (default: download it)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, help="stop after this many iterations (a quick try)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, help="initial learning rate (default: the checkpoint's, 0.01)")
    parser.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="training crop (default: the checkpoint's)")
    parser.add_argument("--freeze", choices=["backbone", "batchnorm"], nargs="*", default=[], help="parts to freeze")
    parser.add_argument("--workers", type=int, default=2, help="data loading processes")
    parser.add_argument("--device", help="cuda, cpu ... (default: CUDA when available)")
    parser.add_argument("--out", default="finetuned-model", help="folder to save the model in")
    parser.add_argument("--push", metavar="ORG/NAME", help="also upload it to this Hugging Face Hub repository")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    segmentor, dataset = args.model.split("/")
    entry = resnest_zoo.get_entry(segmentor, dataset)
    model = resnest_zoo.load(segmentor, dataset, weights=args.weights, device=args.device, auxiliary_head=True,
                             num_classes=args.num_classes, class_names=args.classes, freeze=args.freeze)
    device = next(model.parameters()).device
    transform = TrainingTransform(model.config.preprocessing, crop_size=args.crop or entry.crop_size)
    data = SegmentationFolder(args.data, num_classes=model.config.num_classes, transform=transform)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         drop_last=len(data) >= args.batch_size, pin_memory=device.type == "cuda")
    total = args.epochs * len(loader) if args.steps is None else args.steps
    optimizer = sgd(model, args.lr if args.lr is not None else entry.schedule["lr"])
    scheduler = poly_lr_scheduler(optimizer, total)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    print(f"fine-tuning {entry.name} to {model.config.num_classes} classes on {len(data)} images, {total} iterations")
    model.train()
    step, started = 0, time.perf_counter()
    while step < total:
        for images, masks in loader:
            images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = segmentation_loss(model(images), masks)  # train mode: main + auxiliary logits
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            if step % 10 == 0 or step == total:
                print(f"iteration {step}/{total}  loss {loss.item():.4f}  lr {scheduler.get_last_lr()[0]:.5f}  "
                      f"{time.perf_counter() - started:.0f} s")
            if step == total:
                break

    model.eval()
    print(f"saved to {model.save_pretrained(args.out)}")
    if args.push:
        print(f"uploaded: {model.push_to_hub(args.push)}")


if __name__ == "__main__":
    main()
