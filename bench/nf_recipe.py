"""Train the seed-size Perceiver NF once with a given recipe and print val PSNR against wall-clock time.

    python bench/nf_recipe.py --data-root DIR [--batches 1 2] [--lr 1e-3] [--betas 0.9 0.95] [--epochs 32]

Runs the real `train` job (`nfjobs.jobs.train.run`) on the CIFAR-10 batches present under DIR (the device tool
carries at most two), holding out the last 10 % as validation; the curve comes from its `val_curve` rows.
"""

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nfjobs.data.cifar10 as cifar10  # noqa: E402
from nfjobs.config import DataConfig  # noqa: E402
from nfjobs.context import Context  # noqa: E402
from nfjobs.jobs import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--betas", type=float, nargs=2, default=None)
    parser.add_argument("--warmup-steps", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--tiny", action="store_true", help="a CPU smoke test")
    args = parser.parse_args()
    cifar10.TRAIN_FILES = tuple(f"data_batch_{i}" for i in args.batches)
    cfg = train.Config(data=DataConfig(name="cifar10", root=args.data_root, val_frac=0.1), epochs=args.epochs)
    optim = cfg.optim
    for name in ("lr", "betas", "warmup_steps"):
        value = getattr(args, name)
        if value is not None:
            optim = replace(optim, **{name: tuple(value) if name == "betas" else value})
    cfg = replace(cfg, optim=optim)
    if args.tiny:
        from nfjobs.models.perceiver_config import PerceiverConfig

        cfg = replace(cfg, data=replace(cfg.data, n_train=256), batch_size=32, curve_images=32, epochs=2,
                      perceiver=PerceiverConfig(fourier_size=16, latent_dims=(32,), num_latents=16, cross_dim_head=16,
                                                self_dim_head=16, processor_depth=1))
    with tempfile.TemporaryDirectory() as tmp:
        rows = train.run(cfg, Context(key="recipe", kind="train", runs_root=Path(tmp)))
    print(f"# recipe: lr {cfg.optim.lr}, betas {cfg.optim.betas}, warm-up {cfg.optim.warmup_steps}, cosine to "
          f"{cfg.optim.min_lr}, batch {cfg.batch_size}, {cfg.epochs} epochs, CIFAR-10 batches {args.batches}")
    print("| epoch | wall-clock (s) | train loss | val PSNR full context (dB) |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        if r.get("split") == "val_curve" and r.get("eval_context_frac") == 1.0:
            print(f"| {r['epoch']} | {r['wall_s']:.0f} | {r['train_loss']:.4f} | {r['psnr']:.2f} |")
    for r in rows:
        if r.get("split") == "val":
            print(f"final val (all held-out images), context {r['eval_context_frac']}: {r['psnr']:.2f} dB")


if __name__ == "__main__":
    main()
