"""Convert the UCI digits CSV into the package's compact data file (run once, at development time).

    python tools/make_digits.py [../shared/data/digits/digits.csv.gz]

Writes fastbn/datasets/digits.npz: ``images`` uint8 (1797, 8, 8) with values 0..16 and
``labels`` uint8 (1797,).  The package reads only that file at run time.
"""
import gzip
import hashlib
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "..", "shared", "data", "digits", "digits.csv.gz")
TARGET = os.path.join(ROOT, "fastbn", "datasets", "digits.npz")
MD5 = "9b335364a7bfd63947c7480a5bd51f2d"  # from ../shared/data/README.md


def main(source=SOURCE):
    with open(source, "rb") as f:
        raw = f.read()
    if hashlib.md5(raw).hexdigest() != MD5:
        raise SystemExit(f"{source}: md5 differs from the published {MD5}")
    rows = np.loadtxt(gzip.decompress(raw).decode().splitlines(), delimiter=",", dtype=np.int64)
    if rows.shape != (1797, 65) or rows[:, :64].max() > 16 or rows[:, 64].max() > 9:
        raise SystemExit(f"{source}: unexpected contents, shape {rows.shape}")
    images = rows[:, :64].reshape(-1, 8, 8).astype(np.uint8)
    labels = rows[:, 64].astype(np.uint8)
    np.savez_compressed(TARGET, images=images, labels=labels)
    print(f"wrote {TARGET} ({os.path.getsize(TARGET)} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:])
