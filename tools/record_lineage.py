"""Record the lineage of a checkpoint trained before ``afd train --init`` recorded it
(``afd_ext.train.lineage.record_lineage``): what it started from (path, sha256) and the labelled images
no checkpoint of that lineage trained on. Apply it from the oldest ancestor forward.

    python tools/record_lineage.py runs/v4/afd.safetensors \
        --init afd_ext/models/weights/afd_efficientnet_lite0.safetensors --out runs/v4/afd_lineage.safetensors
"""
from __future__ import annotations

import argparse
import json

from afd_ext.train.lineage import record_lineage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--init", required=True, help="the checkpoint it was trained from (with its own lineage)")
    ap.add_argument("--out", required=True, help="the checkpoint with its lineage recorded (.safetensors)")
    a = ap.parse_args()
    record = record_lineage(a.checkpoint, a.init, a.out)
    print(json.dumps({"lineage": record["lineage"], "lineage_holdout_files": None if record["lineage_holdout_files"]
                      is None else len(record["lineage_holdout_files"])}, indent=2))


if __name__ == "__main__":
    main()
