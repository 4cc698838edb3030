"""Data sets behind one interface.

Every data set is prepared once into a compact ``.npz`` file of uint8 images
(``N, C, H, W``) and int64 labels, split into train and test, plus the channel
statistics used for normalisation. Training then loads the whole file into
memory (on the GPU when there is one) with :func:`load_prepared`.

New data sets register a *preparer* in :data:`PREPARERS`: a function taking the
``data`` section of the config and returning a :class:`PreparedData`.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import DataError
from .batches import MemoryBatches
from .catalog import CIFAR10_HINT, IMAGENET_HINT
from .drawing import BatchDrawing
from .images import convert_uint8, decode_image, eval_resize, resize_uint8
from .streaming import StreamData

FORMAT_VERSION = 1


@dataclass
class PreparedData:
    """Images as uint8 ``(N, C, H, W)`` arrays and labels as int64 arrays."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    stream: dict | None = None  # streamed training set: {"root", "files" (relative), "labels"}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std of the training images on the [0, 1] scale."""
        x = self.x_train.astype(np.float64) / 255.0
        mean = x.mean(axis=(0, 2, 3))
        std = x.std(axis=(0, 2, 3))
        return mean, np.maximum(std, 1e-6)


class Images:
    """Images held as uint8 on a device and handed out normalised: ``x[i]`` is
    ``(raw[i] / 255 - mean) / std`` in float32, computed for the part asked for.

    Holding a quarter of the bytes matters at paper scale (the evaluation
    subset and validation images of ImageNet are 7.7 GB as uint8, 30.7 GB in
    float32, on the GPU); the numbers are bit-identical to normalising
    everything up front. ``shape``, ``device``, ``dtype`` (float32) and
    ``len()`` describe the normalised tensor; index with anything a tensor
    takes along the first dimension (an int, a slice, an index tensor).
    """

    dtype = torch.float32

    def __init__(self, raw: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        if raw.dtype != torch.uint8 or raw.ndim != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {raw.dtype} {tuple(raw.shape)}")
        self.raw = raw
        self.mean = mean.to(raw.device, torch.float32).view(1, -1, 1, 1)
        self.std = std.to(raw.device, torch.float32).view(1, -1, 1, 1)

    @property
    def shape(self) -> torch.Size:
        return self.raw.shape

    @property
    def device(self) -> torch.device:
        return self.raw.device

    def __len__(self) -> int:
        return int(self.raw.shape[0])

    def __getitem__(self, index) -> torch.Tensor:
        x = self.raw[index].to(torch.float32).div_(255.0)
        mean, std = (self.mean, self.std) if x.ndim == 4 else (self.mean[0], self.std[0])
        return x.sub_(mean).div_(std)

    def __repr__(self) -> str:
        return f"Images({tuple(self.shape)}, uint8 on {self.device}, normalised on access)"


@dataclass
class TensorData:
    """A prepared data set on one device: images (a normalised float tensor,
    or :class:`Images` as loaded from a prepared file) and int64 labels."""

    name: str
    x_train: torch.Tensor | Images
    y_train: torch.Tensor
    x_test: torch.Tensor | Images
    y_test: torch.Tensor
    num_classes: int
    background: torch.Tensor  # (1, C, 1, 1): a black pixel after normalisation

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    def train_batches(self, batch_size: int, drawing: BatchDrawing, seed: int) -> MemoryBatches:
        """The run's batch source (:class:`.batches.MemoryBatches`)."""
        return MemoryBatches(self, batch_size, drawing, seed)


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test split: the same class balance in both parts."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_test = int(round(test_fraction * idx.size))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def prepare_digits(cfg: dict, workers: int = 1) -> PreparedData:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes); no download."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images / 16.0  # pixel values are 0..16
    labels = digits.target.astype(np.int64)
    x = resize_uint8(images, int(cfg["image_size"]), int(cfg["channels"]))
    train, test = split_indices(labels, float(cfg["test_fraction"]), int(cfg["split_seed"]))
    return PreparedData("digits", x[train], labels[train], x[test], labels[test], 10)


CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class _ArraysOnly(pickle.Unpickler):
    """Unpickles the CIFAR batch format (dicts of bytes, lists, ints and one
    numpy array) and refuses any other global, so a file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "bytes"),
        ("_codecs", "encode"),
    }  # how Python 3 writes bytes at protocol 2 (safe: str -> bytes)

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name}: not part of the CIFAR-10 batch format")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch {path} does not exist; {CIFAR10_HINT}")
    try:
        with open(path, "rb") as fh:
            batch = _ArraysOnly(fh, encoding="bytes").load()
        x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(batch[b"labels"], dtype=np.int64)
    except DataError:
        raise
    except Exception as exc:  # truncated or foreign file: pickle, key and shape errors alike
        raise DataError(
            f"CIFAR-10 batch {path} is not in the CIFAR-10 python format ({type(exc).__name__}: {exc}); {CIFAR10_HINT}"
        ) from exc
    if x.shape[0] != y.shape[0] or y.size == 0 or y.min() < 0 or y.max() > 9:
        raise DataError(
            f"CIFAR-10 batch {path} has {x.shape[0]} images and {y.shape[0]} labels in "
            f"[{y.min() if y.size else '-'}, {y.max() if y.size else '-'}]; expected matching counts "
            f"and labels 0..9"
        )
    return x, y


def prepare_cifar10(cfg: dict, workers: int = 1) -> PreparedData:
    """CIFAR-10 from the standard python batches at ``cfg['path']`` (50,000
    train and 10,000 test images, 32x32 RGB, 10 classes), resized to
    ``image_size`` and converted to grey for ``channels: 1``."""
    root = _local_path(cfg, "CIFAR-10", CIFAR10_HINT)
    parts = [_cifar_batch(root / name) for name in CIFAR10_FILES]
    x_train = np.concatenate([p[0] for p in parts[:-1]])
    y_train = np.concatenate([p[1] for p in parts[:-1]])
    x_test, y_test = parts[-1]
    size, channels = int(cfg["image_size"]), int(cfg["channels"])
    return PreparedData(
        "cifar10", convert_uint8(x_train, size, channels), y_train, convert_uint8(x_test, size, channels), y_test, 10
    )


def _local_path(cfg: dict, what: str, hint: str) -> Path:
    path = cfg.get("path")
    if not path:
        raise DataError(f"data.path is required for {what} (a local directory; nothing is downloaded); {hint}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path {root} is not a directory; {hint}")
    return root


IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def _image_folder(root: Path, classes: list[str] | None) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image files and labels of an ImageFolder-style directory (classes = sorted sub-directories)."""
    if not root.is_dir():
        raise DataError(f"ImageNet split {root} is not a directory; {IMAGENET_HINT}")
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    if classes is None:
        classes = found
    elif found != classes:
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise DataError(
            f"{root} has other classes than train/ (missing {missing[:3]}, extra {extra[:3]}); {IMAGENET_HINT}"
        )
    if not classes:
        raise DataError(f"{root} has no class sub-directories; {IMAGENET_HINT}")
    files, labels = [], []
    for k, name in enumerate(classes):
        images = sorted(f for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        files += images
        labels += [k] * len(images)
    return files, np.asarray(labels, dtype=np.int64), classes


def _per_class(files: list[Path], labels: np.ndarray, limit: int | None) -> tuple[list[Path], np.ndarray]:
    """The first ``limit`` images (in file-name order) of every class; all with ``None``."""
    if not limit:
        return files, labels
    keep = np.concatenate([np.flatnonzero(labels == k)[:limit] for k in np.unique(labels)])
    return [files[i] for i in keep], labels[keep]


def _load_center_crop(path: Path, size: int, channels: int, resize: int | None = None) -> np.ndarray:
    """One image: shorter side resized to ``resize`` (default ``size``; antialiased),
    centre-cropped to ``size`` x ``size``."""
    from PIL import Image

    def center_crop(im):
        w, h = im.size
        short = resize or size
        scale = short / min(w, h)
        im = im.resize(
            (max(short, round(w * scale)), max(short, round(h * scale))), Image.Resampling.BILINEAR, reducing_gap=None
        )
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        return im.crop((left, top, left + size, top + size))

    return decode_image(path, channels, center_crop)


def _pack(files: list[Path], size: int, channels: int, workers: int, resize: int | None = None) -> np.ndarray:
    from concurrent.futures import ThreadPoolExecutor

    out = np.empty((len(files), channels, size, size), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without holding the GIL
        for i, arr in enumerate(pool.map(lambda f: _load_center_crop(f, size, channels, resize), files)):
            out[i] = arr
    return out


def prepare_imagenet(cfg: dict, workers: int = 1) -> PreparedData:
    """ImageNet (or any ImageFolder-style data set) from ``cfg['path']``, packed
    into a fixed-size uint8 store: every image's shorter side resized to
    ``image_size`` and centre-cropped square (the evaluation transform's
    geometry), ``train/`` -> training set and ``val/`` -> test set, optionally
    the first ``max_train_per_class`` / ``max_test_per_class`` images of each
    class. Decoded on ``workers`` threads.

    With ``loader: stream`` (the paper's setting) the training set is instead
    streamed from its files during training (:mod:`.streaming`); the store then
    holds the evaluation images at the standard evaluation transform (shorter
    side ``image_size * 256/224``, centre crop ``image_size``): a seeded random
    subset of ``stream_subset`` training images as the training part (train
    metrics; Hessian, noise and landscape stages) and the validation images."""
    root = _local_path(cfg, "ImageNet", IMAGENET_HINT)
    train_files, y_train, classes = _image_folder(root / "train", None)
    test_files, y_test, _ = _image_folder(root / "val", classes)
    train_files, y_train = _per_class(train_files, y_train, cfg.get("max_train_per_class"))
    test_files, y_test = _per_class(test_files, y_test, cfg.get("max_test_per_class"))
    if not train_files or not test_files:
        raise DataError(
            f"no images under {root}/train or {root}/val (looked for {sorted(IMAGE_SUFFIXES)}); {IMAGENET_HINT}"
        )
    size, channels = int(cfg["image_size"]), int(cfg["channels"])
    workers = max(1, int(workers))
    if cfg["loader"] == "stream":
        n_sub = int(cfg["stream_subset"])
        if n_sub > len(train_files):
            raise DataError(
                f"data.stream_subset = {n_sub} exceeds the {len(train_files)} training images under {root}/train"
            )
        sub = np.random.default_rng(int(cfg["split_seed"])).permutation(len(train_files))[:n_sub]
        resize = eval_resize(size)
        stream = {
            "root": str(root.resolve()),
            "labels": y_train,
            "files": [str(f.relative_to(root)) for f in train_files],
        }
        return PreparedData(
            "imagenet",
            _pack([train_files[i] for i in sub], size, channels, workers, resize),
            y_train[sub],
            _pack(test_files, size, channels, workers, resize),
            y_test,
            len(classes),
            stream,
        )
    return PreparedData(
        "imagenet",
        _pack(train_files, size, channels, workers),
        y_train,
        _pack(test_files, size, channels, workers),
        y_test,
        len(classes),
    )


PREPARERS: dict[str, Callable[..., PreparedData]] = {
    "digits": prepare_digits,
    "cifar10": prepare_cifar10,
    "imagenet": prepare_imagenet,
}


def prepare(cfg: dict, workers: int = 1) -> PreparedData:
    """Prepare the data set named by ``cfg['name']``; images that need decoding
    (ImageNet) are decoded on ``workers`` threads (the rule's ``threads``)."""
    name = cfg["name"]
    if name not in PREPARERS:
        raise DataError(f"unknown data set {name!r}; available: {sorted(PREPARERS)}")
    return PREPARERS[name](cfg, workers=workers)


def save_prepared(data: PreparedData, path: str | Path) -> None:
    """Write a prepared data set to ``path`` (``.npz``), atomically."""
    mean, std = data.channel_stats()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                format_version=np.int64(FORMAT_VERSION),
                name=np.str_(data.name),
                num_classes=np.int64(data.num_classes),
                x_train=data.x_train,
                y_train=data.y_train,
                x_test=data.x_test,
                y_test=data.y_test,
                mean=mean,
                std=std,
                **(
                    {}
                    if data.stream is None
                    else {
                        "stream_root": np.str_(data.stream["root"]),
                        "stream_labels": data.stream["labels"],
                        "stream_files": np.asarray(data.stream["files"], dtype=str),
                    }
                ),
            )


def load_prepared(path: str | Path, device: torch.device | str, workers: int = 0):
    """Load a prepared file into memory on ``device`` (a :class:`TensorData`
    whose images are :class:`Images`: uint8, normalised to float32 on access);
    a streamed data set comes back as a
    :class:`.streaming.StreamData` whose training batches are decoded by
    ``workers`` DataLoader processes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prepared data file {path} does not exist; run the prepare_data rule first")
    try:
        with open(path, "rb") as fh:
            is_zip = fh.read(4) == b"PK\x03\x04"
    except OSError as exc:
        raise DataError(f"prepared data file {path} is unreadable ({exc.strerror or exc})") from exc
    if not is_zip:
        raise DataError(
            f"prepared data file {path} is not a prepared data set (not an .npz archive); rerun the prepare_data rule"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except OSError as exc:
        raise DataError(f"prepared data file {path} is unreadable ({exc.strerror or exc})") from exc
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"prepared data file {path} is damaged or truncated ({exc}); rerun the prepare_data rule"
        ) from exc
    if int(arrays.get("format_version", -1)) != FORMAT_VERSION:
        raise DataError(
            f"prepared data file {path} has format version "
            f"{arrays.get('format_version')}, expected {FORMAT_VERSION}; rerun prepare_data"
        )
    mean = torch.tensor(arrays["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(arrays["std"], dtype=torch.float32).view(1, -1, 1, 1)

    def images(x: np.ndarray) -> Images:
        return Images(torch.from_numpy(x).to(device), mean, std)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y).to(device=device, dtype=torch.int64)

    memory = TensorData(
        name=str(arrays["name"]),
        x_train=images(arrays["x_train"]),
        y_train=labels(arrays["y_train"]),
        x_test=images(arrays["x_test"]),
        y_test=labels(arrays["y_test"]),
        num_classes=int(arrays["num_classes"]),
        background=(-mean / std).to(device),
    )
    if "stream_files" not in arrays:
        return memory
    root = Path(str(arrays["stream_root"]))
    if not root.is_dir():
        raise DataError(
            f"the streamed training images of {path} were under {root}, which is not a directory "
            "now; restore it or rerun prepare_data with data.path set to where ImageNet is"
        )
    return StreamData(
        memory, root, [str(f) for f in arrays["stream_files"]], arrays["stream_labels"], mean, std, workers
    )


__all__ = [
    "DataError",
    "PreparedData",
    "TensorData",
    "prepare",
    "save_prepared",
    "load_prepared",
    "split_indices",
    "PREPARERS",
]
