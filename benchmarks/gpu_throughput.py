"""On CUDA: our evaluation loop vs a timm ``benchmark.py``-style synthetic-input loop, and GPU JPEG decode.

* **Model throughput** (ResNet-50, bf16 autocast, channels_last, batch ``--batch-size``): ours is
  ``EvalContext.predict`` over uint8 images in host memory (the copy to the device, the uint8 → float
  conversion and the normalisation included, as in every metric); the baseline is timm's
  ``benchmark.py`` inference loop: one float batch made on the device once, ``model(x)`` over and over
  (no input pipeline at all, so it bounds what any loop can reach). Target: ours ≥ 0.9 × baseline.
* **Decode throughput**: a streamed JPEG set (:class:`~biasbench.core.streaming.StreamedImages`)
  decoded with nvJPEG on the device (``torchvision.io.decode_jpeg(device="cuda")``, batched, resize +
  crop on the device) vs the CPU path (PIL on every core), images/s.

    python benchmarks/gpu_throughput.py --data ../shared/data/imagenet-sample

Prints images/s of each; the ratios come last. Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import timm
import torch

from biasbench.core.preprocess import Preprocess
from biasbench.core.streaming import StreamedImages
from biasbench.harness.datasets.folders import list_labeled_files
from biasbench.metrics.base import EvalContext, ModelWrapper


def _timed(fn, sync: bool = True) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/imagenet-sample"))
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=20, help="timed batches per loop")
    ap.add_argument("--decode-images", type=int, default=2048)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    bs, n = args.batch_size, args.batch_size * args.batches

    net = timm.create_model(args.model, pretrained=False).eval().to(dev).to(memory_format=torch.channels_last)
    cfg = timm.data.resolve_data_config({}, model=net)
    model = ModelWrapper(net, mean=cfg["mean"], std=cfg["std"], num_classes=1000, label_space="imagenet-1k")
    model = model.eval().requires_grad_(False).to(dev)

    # ours: uint8 images in host memory through EvalContext.predict
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=g)
    ctx = EvalContext(device=dev, batch_size=bs, amp_dtype=torch.bfloat16, channels_last=True)
    ctx.predict(model, images[: 2 * bs])  # warm-up (cudnn autotune)
    t_ours = _timed(lambda: ctx.predict(model, images))

    # baseline: timm benchmark.py's inference loop on one synthetic device batch
    x = torch.randn(bs, 3, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)

    def timm_loop(k: int) -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            for _ in range(k):
                net(x)

    timm_loop(2)
    t_timm = _timed(lambda: timm_loop(args.batches))

    # decode: a streamed JPEG set, on the GPU (nvJPEG) and on the CPU
    files = [args.data / f for f, _ in list_labeled_files(args.data, "wnid-prefix")]
    paths = (files * (args.decode_images // max(1, len(files)) + 1))[: args.decode_images]
    pre = Preprocess(resize=256, crop=224)
    streamed = StreamedImages(paths, pre, (224, 224))
    streamed[:bs].materialize(dev)  # warm-up
    t_gpu_dec = _timed(lambda: [streamed[i : i + bs].materialize(dev) for i in range(0, len(paths), bs)])
    t_cpu_dec = _timed(lambda: [streamed[i : i + bs].materialize() for i in range(0, len(paths), bs)])

    print(f"device: {torch.cuda.get_device_name(dev)}  model: {args.model} bf16 channels_last  batch: {bs}")
    print(f"ours (EvalContext.predict, uint8 host images): {n / t_ours:.0f} images/s")
    print(f"timm benchmark.py-style synthetic loop: {n / t_timm:.0f} images/s")
    print(
        f"decode {len(paths)} JPEGs, resize 256 + crop 224: GPU (nvJPEG) {len(paths) / t_gpu_dec:.0f} images/s"
    )
    print(
        f"                                                  CPU (PIL, all cores) {len(paths) / t_cpu_dec:.0f} images/s"
    )
    print(f"ratio ours / timm synthetic loop: {t_timm / t_ours:.2f}x (target ≥ 0.9)")
    print(f"ratio GPU decode / CPU decode: {t_cpu_dec / t_gpu_dec:.2f}x")


if __name__ == "__main__":
    main()
