"""Write short-budget copies of `nf_variants.toml` and `representations.toml` for a GPU session.

The shipped sweeps train the four Perceiver fields for 40 epochs and cache every training image; a lent GPU
session (about 30 minutes, 64 GiB of disk) fits 10-epoch fields and caches of the first 10,000 training images.
The copies change only that (and the dataset root), so their four train cells stay the same cells as each other:

    uv run python bench/short_sweeps.py --root /tmp/cifar --out .dev/k3/sw   # here; carry the folder
    python launch.py --sweep .dev/k3/sw/nf_variants.toml --debug             # on the GPU machine
    python launch.py --sweep .dev/k3/sw/representations.toml --debug

Edits: `root` → `--root`; the three 40-epoch train groups → `--epochs`; cache groups' `data` → `n_train =
--cache-images`; `probe_tdsm_field` → `epochs = 2, head_epochs = 1` `train_images` = the caches' `n_train`. Checks that
every edit applied and that both files name the same train cells (by key, through `nfjobs.sweep`).
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfjobs.sweep import Override, expand  # noqa: E402

DATA = 'data = { name = "cifar10", root = "data", val_frac = 0.1 }'


def edit(text: str, old: str, new: str, count: int, what: str) -> str:
    found = text.count(old)
    if found != count:
        raise SystemExit(f"short_sweeps: expected {count} × {what} ({old!r}), found {found}: the sweep changed")
    return text.replace(old, new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="dataset root on the GPU machine")
    parser.add_argument("--out", required=True, help="folder for the two sweep files")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--cache-images", type=int, default=10000)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = DATA.replace('"data"', f'"{args.root}"')

    nf = (ROOT / "configs/sweeps/nf_variants.toml").read_text()
    nf = edit(nf, 'root = "data"', f'root = "{args.root}"', 1, "dataset root")
    nf = edit(nf, "epochs = 40", f"epochs = {args.epochs}", 3, "40-epoch train group")

    rep = (ROOT / "configs/sweeps/representations.toml").read_text()
    groups = rep.split("[[group]]")
    for i, group in enumerate(groups):
        group = group.replace(DATA, data)
        if 'kind = "train"' in group and "epochs" not in group:
            group = edit(group, data, f"{data}\nepochs = {args.epochs}", 1, "train group data line")
        if 'kind = "cache"' in group:
            group = edit(group, "val_frac = 0.1 }", f"val_frac = 0.1, n_train = {args.cache_images} }}", 1,
                         "cache group data line")
        if 'name = "probe_tdsm_field"' in group:
            group = edit(group, "epochs = 4\nhead_epochs = 2",
                         f"epochs = 2\nhead_epochs = 1\ntrain_images = {args.cache_images}", 1, "TDSM field epochs")
        groups[i] = group
    rep = "[[group]]".join(groups)

    (out / "nf_variants.toml").write_text(nf)
    (out / "representations.toml").write_text(rep)
    train_keys = []
    with tempfile.TemporaryDirectory() as tmp:  # a stand-in root that passes the dataset check here
        (Path(tmp) / "cifar-10-batches-py").mkdir()
        for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "batches.meta"):
            (Path(tmp) / "cifar-10-batches-py" / name).touch()
        for name in ("nf_variants", "representations"):
            cells = expand([out / f"{name}.toml"], [Override("data.root", tmp)])
            train_keys.append(sorted(c.key for c in cells if c.kind == "train"))
    if train_keys[0] != train_keys[1] or len(train_keys[0]) != 4:
        raise SystemExit(f"short_sweeps: the train cells differ: {train_keys}")
    print(f"wrote {out}/nf_variants.toml and representations.toml; the same four train cells")


if __name__ == "__main__":
    main()
