"""Labels: ImageNet's classes, an image's class from its file or folder name, and the decision set."""
from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Optional

_SYNSET = re.compile(r"^(n\d{8})")

#: The decision set: the labelled images whose stable name hash (:func:`name_hash_fraction`) is below
#: this fraction. Of the 500 ``imagenet-sample-dev`` images these are 233; recipes are decided on them,
#: and a checkpoint trained with ``--holdout DECISION_SET_FRACTION`` (v3) never saw one. They include
#: every image v1 (holdout 0.2) and v2 (holdout 0.35) held out, but v1 trained on 146 of them and v2
#: started from v1 (docs/accuracy.md says which checkpoint saw what).
DECISION_SET_FRACTION = 0.5


def name_hash_fraction(path: str | os.PathLike) -> float:
    """A file name's stable position in [0, 1] (SHA-1 of the name): the same on every machine and run.
    Training's hold-out split and the decision set are both read from it."""
    return int(hashlib.sha1(Path(path).name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def in_decision_set(path: str | os.PathLike) -> bool:
    """Whether a labelled image belongs to the decision set (see DECISION_SET_FRACTION)."""
    return label_from_path(path) is not None and name_hash_fraction(path) < DECISION_SET_FRACTION


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """((synset, name), ...) in ImageNet-1k class order (sorted synsets)."""
    path = Path(__file__).with_name("imagenet_classes.tsv")
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return tuple((r[1], r[2]) for r in rows)


@functools.lru_cache(maxsize=1)
def _synset_index() -> dict[str, int]:
    return {s: i for i, (s, _) in enumerate(imagenet_classes())}


def class_name(index: int) -> str:
    return imagenet_classes()[index][1]


def label_from_path(path: str | os.PathLike, root: Optional[str | os.PathLike] = None) -> Optional[int]:
    """ImageNet class index from a leading WordNet synset in the file name
    (``n01530575_brambling.JPEG``) or from the parent folder's name (a synset or a class
    index, as in an ImageFolder). None when neither says."""
    p = Path(path)
    m = _SYNSET.match(p.name)
    if m and m.group(1) in _synset_index():
        return _synset_index()[m.group(1)]
    parent = p.parent
    if root is not None and parent.resolve() == Path(root).resolve():
        return None
    m = _SYNSET.match(parent.name)
    if m and m.group(1) in _synset_index():
        return _synset_index()[m.group(1)]
    if parent.name.isdigit() and 0 <= int(parent.name) < len(imagenet_classes()):
        return int(parent.name)
    return None
