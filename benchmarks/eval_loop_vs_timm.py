"""Our evaluation loop vs. timm's validate loop on the same images and model.

Baseline (measured in the same run): timm's validate.py recipe — ``create_dataset`` over an image
folder + ``create_loader`` (PIL decode, resize, crop, normalise on every pass) + a loop with
inference_mode/AMP. Ours: images decoded once into biasbench's memory-mapped uint8 cache, then
``EvalContext.predict`` (uint8 until the device, normalise on the device). A benchmark run evaluates
the same checkpoint-preprocessing many times (every metric, every checkpoint of a zoo), so we report
the steady-state ratio (cache warm) and the cold cost of building the cache. Both loops run the model
in channels_last (timm's ``validate.py --channels-last``). A second cold figure is our streamed path
(a set over the cache budget: decoded on every pass by the prefetching pipeline of
:mod:`biasbench.core.streaming`, as timm's loader does).

    python benchmarks/eval_loop_vs_timm.py --data ../shared/data/imagenet-sample --model resnet18 --repeats 3
    python benchmarks/eval_loop_vs_timm.py --data ../shared/data/imagenet-sample --model null --repeats 3

``--model null``: a network that does no work (global average pool + a 3 → 1000 linear layer) with
ResNet-50's data config — it isolates the data path (decode, resize, crop, transfer, normalise), i.e.
the regime of an accelerator that runs the model faster than the CPU decodes (a ResNet-50 in bf16 on
a recent GPU). With a real model on a CPU the forward pass dominates both loops and the ratio tends to 1.

Prints: seconds per pass for each, then the ratios timm / ours last (> 1 means we are faster). Also
checks that both loops give the same top-1 predictions (up to resampling differences, reported).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import timm
import torch
from timm.data import create_dataset, create_loader, resolve_data_config

from biasbench.core.streaming import StreamedImages
from biasbench.harness.datasets.folders import decode_files, list_labeled_files
from biasbench.metrics.base import EvalContext, ModelWrapper


def timm_pass(
    model, folder: Path, cfg: dict, batch_size: int, workers: int, device: torch.device
) -> torch.Tensor:
    ds = create_dataset("", root=str(folder))
    loader = create_loader(
        ds,
        input_size=cfg["input_size"],
        batch_size=batch_size,
        interpolation=cfg["interpolation"],
        mean=cfg["mean"],
        std=cfg["std"],
        crop_pct=cfg["crop_pct"],
        num_workers=workers,
        use_prefetcher=device.type == "cuda",
        device=device,
        persistent_workers=False,
    )
    preds = []
    with torch.inference_mode():
        for x, _ in loader:
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            preds.append(model(x).argmax(1).cpu())
    return torch.cat(preds)


class NullNet(torch.nn.Module):
    """No compute: the mean colour of each image through a 3 → 1000 linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.float().mean(dim=(2, 3)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/imagenet-sample"))
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.model == "null":
        net = NullNet().eval().to(device)
        cfg = resolve_data_config({}, model=timm.create_model("resnet50", pretrained=False))
    else:
        net = timm.create_model(args.model, pretrained=False).eval().to(device)
        cfg = resolve_data_config({}, model=net)
    net = net.to(memory_format=torch.channels_last)  # both loops
    crop = cfg["input_size"][-1]
    resize = round(crop / cfg["crop_pct"])

    # timm wants class folders: lay the flat wnid-prefixed files out as <wnid>/<file> (links)
    files = list_labeled_files(args.data, "wnid-prefix")
    tmp = Path(tempfile.mkdtemp())
    for f, _ in files:
        (tmp / f[:9]).mkdir(exist_ok=True)
        (tmp / f[:9] / f).symlink_to((args.data / f).resolve())

    from biasbench.core.preprocess import Preprocess

    pre = Preprocess(
        resize=resize, crop=crop, mean=cfg["mean"], std=cfg["std"], interpolation=cfg["interpolation"]
    )
    t0 = time.perf_counter()
    images = torch.from_numpy(decode_files([args.data / f for f, _ in files], pre))
    cold = time.perf_counter() - t0
    model = ModelWrapper(
        net, mean=cfg["mean"], std=cfg["std"], num_classes=1000, label_space="imagenet-1k"
    ).to(device)
    ctx = EvalContext(
        device=device,
        batch_size=args.batch_size,
        amp_dtype=torch.bfloat16 if device.type == "cuda" else None,
        channels_last=True,
    )
    streamed = StreamedImages([args.data / f for f, _ in files], pre, (crop, crop))

    ours, theirs, ours_streamed = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        p_ours = ctx.predict(model, images).argmax(1)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        p_streamed = ctx.predict(model, streamed).argmax(1)
        ours_streamed.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        p_timm = timm_pass(net, tmp, cfg, args.batch_size, args.workers, device)
        theirs.append(time.perf_counter() - t0)
    shutil.rmtree(tmp)
    agree = float((p_ours == p_timm).float().mean())
    assert torch.equal(p_streamed, p_ours), "the streamed pass must predict what the cached pass does"
    o, t, st = min(ours), min(theirs), min(ours_streamed)
    print(f"images: {len(files)}  model: {args.model}  device: {device}  channels_last: both")
    print(
        f"baseline timm validate loop: {t:.3f} s/pass   ours (warm cache): {o:.3f} s/pass   cache build: {cold:.3f} s"
        f"   ours streamed (decode every pass): {st:.3f} s/pass"
    )
    print(f"top-1 agreement between the loops: {agree:.3f}")
    print(f"ratio timm/ours warm (steady state): {t / o:.2f}x")
    print(f"ratio timm/ours cold (first pass incl. decode into the cache): {t / (o + cold):.2f}x")
    print(f"ratio timm/ours cold (streamed, decode on every pass): {t / st:.2f}x")


if __name__ == "__main__":
    main()
