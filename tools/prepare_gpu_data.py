"""A small copy of the training photos for a lent GPU machine (only the repo travels, 64 MiB).

Training photos whose short side exceeds 320 px (the largest the training crops use:
256 * 1.25) are resized to 320 (bilinear) and re-saved as JPEG quality 95. The dev images
that training holds out (name hash, --holdout 0.2) serve only the in-training validation
there: they travel at short side 256 (the protocol's resize) and quality 75. File names, and
so labels and the hold-out split, are kept. The accuracy figures are measured afterwards on
the original files.

    python tools/prepare_gpu_data.py [--out gpu_data]      # gpu_data/ is git-ignored
"""
import argparse
from pathlib import Path

from PIL import Image

from afd_ext import data
from afd_ext.train import split_files

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FOLDERS = {"imagenet-sample-dev": DATA / "imagenet-sample-dev", "bsds500-train": DATA / "bsds500" / "train",
           "bsds500-val": DATA / "bsds500" / "val"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "gpu_data"))
    p.add_argument("--holdout", type=float, default=0.2)
    a = p.parse_args(argv)
    total = 0
    for name, src in FOLDERS.items():
        dst = Path(a.out) / name
        dst.mkdir(parents=True, exist_ok=True)
        train, held = split_files([str(src)], a.holdout)
        for f in train + held:
            short, quality = (256, 75) if f in held else (320, 95)
            img = data.load_image(f)
            s = short / min(img.size)
            if s < 1:
                img = img.resize((round(img.width * s), round(img.height * s)), Image.BILINEAR)
            out = dst / f.name
            img.save(out, format="JPEG", quality=quality)
            total += out.stat().st_size
    print(f"{total / 2**20:.1f} MiB in {a.out}")


if __name__ == "__main__":
    main()
