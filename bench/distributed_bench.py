"""What a cell of 2 ranks costs against 1 on this machine: one small `train` cell (Perceiver, builtin images, the
same global batch) launched locally (`launch.py run`, no Slurm) with `--tasks-per-node 1` and `2`, side by side in
one run. Steps/s is over `train_s` (the training loop, from the result row); wall is the whole launch (process
starts, torch imports, evaluation).

    uv run python -m bench.distributed_bench [--batch 32] [--epochs 2] [--images 720]
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from nfjobs import results
from nfjobs.commands import main as launch

SWEEP = """kind = "train"
epochs = {epochs}
batch_size = {batch}
curve_images = 0
data.builtin_n = {n}
data.val_frac = 0.1
optim.warmup_steps = 2
perceiver.fourier_size = 8
perceiver.latent_dims = [16, 24]
perceiver.num_latents = 8
perceiver.cross_heads = 1
perceiver.cross_dim_head = 8
perceiver.self_heads = 1
perceiver.self_dim_head = 8
perceiver.ff_mult = 1
perceiver.processor_depth = 1
"""


def one_launch(root: Path, ranks: int, args) -> dict:
    """Launch the cell with `ranks` ranks; its training steps/s and the launch's wall seconds."""
    sweep = root / f"ranks{ranks}.toml"
    sweep.write_text(SWEEP.format(epochs=args.epochs, batch=args.batch, n=args.images))
    t0 = time.perf_counter()
    code = launch(["run", "--sweep", str(sweep), "--runs-root", str(root / f"runs{ranks}"), "--log-root",
                   str(root / "logs"), "--tasks-per-node", str(ranks), "--cpus-per-task", str(os.cpu_count())])
    wall = time.perf_counter() - t0
    assert code == 0, f"the {ranks}-rank launch failed"
    row = results.load(sweep, root / f"runs{ranks}").collect().row(-1, named=True)
    steps = args.epochs * (int(args.images * 0.9) // args.batch)
    return {"ranks": ranks, "steps": steps, "train_s": row["train_s"], "steps_per_s": steps / row["train_s"],
            "loss": row["train_loss"], "wall_s": wall, "world": row["run.world_size"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=720)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [one_launch(Path(tmp), n, args) for n in (1, 2)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; global batch {args.batch}, "
          f"{rows[0]['steps']} steps")
    print("| ranks | steps/s | vs 1 rank | train s | wall s | final train loss |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        assert r["world"] == r["ranks"]
        print(f"| {r['ranks']} | {r['steps_per_s']:.2f} | {r['steps_per_s'] / rows[0]['steps_per_s']:.2f}× | "
              f"{r['train_s']:.1f} | {r['wall_s']:.1f} | {r['loss']:.5f} |")


if __name__ == "__main__":
    main()
