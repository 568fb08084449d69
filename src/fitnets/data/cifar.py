"""CIFAR-10 / CIFAR-100 from the genuine python pickle batches (tar.gz or extracted), or
CIFAR-10 from its JPEG zip (an image-folder copy) when the pickles are absent."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from fitnets.data.download import download_file, missing_files_error
from fitnets.data.folder import Folder
from fitnets.data.images import FileRef
from fitnets.data.source import Decoded, Images
from fitnets.errors import FitnetsError

SOURCES = {  # name -> (archive, extracted folder, url, md5, train members, test member, meta)
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py",
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a",
                [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python",
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "eb9058c3a382ffc7106e4002c42a8d85", ["train"], "test", "meta"),
}
KEYS = {"cifar10": ("labels", "label_names"),  # name -> (labels, class names) in the batches
        "cifar100": ("fine_labels", "fine_label_names")}
JPEG_ZIP = {"cifar10": "cifar10-jpeg.zip"}  # name -> an image-folder copy under the data root

# Only what a CIFAR batch needs: numpy array reconstruction. Anything else (os.system,
# eval, ...) is refused, so a malicious file cannot run code while being unpickled.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        return super().find_class(module, name)


def load_batch(data: bytes, where: str) -> dict:
    """Unpickle one CIFAR batch safely; keys are decoded from bytes to str."""
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # pickle raises many types on garbage input
        raise FitnetsError(f"Cannot unpickle CIFAR batch {where}: {e}. The file is corrupt "
                           "or not a CIFAR python batch; delete it and download it again.") from e
    if not isinstance(obj, dict):
        raise FitnetsError(f"CIFAR batch {where} holds a {type(obj).__name__}, not a dict. "
                           "Replace it with the genuine file.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


class _Reader:
    """Reads members from the extracted folder or straight from the tar.gz."""

    def __init__(self, root: Path, name: str, download: bool):
        archive, folder, url, md5 = SOURCES[name][:4]
        self.folder, self.tar = root / folder, None
        if self.folder.is_dir():
            return
        path = root / archive
        if not path.is_file():
            if not download:
                why = "downloading is disabled" + (
                    f" ({JPEG_ZIP[name]}, an image-folder copy, is also accepted)"
                    if name in JPEG_ZIP else "")
                raise missing_files_error(name, [archive], root, why)
            try:
                download_file(url, path, md5=md5)
            except FitnetsError as e:
                raise missing_files_error(name, [archive], root, f"download failed ({e})") from e
        try:
            self.tar = tarfile.open(path, "r:gz")
            self.members = {Path(m.name).name: m for m in self.tar.getmembers() if m.isfile()}
        except (tarfile.TarError, OSError, EOFError) as e:
            raise FitnetsError(f"Cannot open {path}: {e}. Delete the archive and download "
                               "it again.") from e
        self.where = path

    def batch(self, member: str) -> dict:
        if self.tar is None:
            path = self.folder / member
            if not path.is_file():
                raise FitnetsError(f"{path} is missing from the extracted CIFAR folder. "
                                   "Restore it or delete the folder to use the archive.")
            return load_batch(path.read_bytes(), str(path))
        if member not in self.members:
            raise FitnetsError(f"{self.where} has no member '{member}'; it is not a genuine "
                               "CIFAR python archive. Delete it and download it again.")
        try:
            data = self.tar.extractfile(self.members[member]).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise FitnetsError(f"Cannot read {member} from {self.where}: {e}. The archive "
                               "is corrupt; delete it and download it again.") from e
        return load_batch(data, f"{self.where}:{member}")


def _images(batch: dict, where: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(batch[label_key], dtype=np.int64)
    except (KeyError, ValueError) as e:
        raise FitnetsError(f"CIFAR batch {where} lacks valid 'data'/'{label_key}': {e}. "
                           "Replace it with the genuine file.") from e
    if len(x) != len(y):
        raise FitnetsError(f"CIFAR batch {where} has {len(x)} images but {len(y)} labels.")
    return x, y


def _names(meta: dict, key: str) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]


def read_pickles(root: Path, name: str, download: bool) -> Decoded:
    """Train and test (x as N,3,32,32 uint8) and the class names, from the pickles."""
    r = _Reader(root, name, download)
    _, _, _, _, train_members, test_member, meta_member = SOURCES[name]
    label_key, names_key = KEYS[name]
    try:
        parts = [_images(r.batch(m), m, label_key) for m in train_members]
        test = _images(r.batch(test_member), test_member, label_key)
        meta = r.batch(meta_member)
    finally:
        if r.tar is not None:
            r.tar.close()
    train = Images(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return Decoded({"train": train, "test": Images(*test)}, _names(meta, names_key))


def has_pickles(root: Path, name: str) -> bool:
    """True when the genuine archive or extracted folder is under ``root``."""
    archive, folder = SOURCES[name][:2]
    return (root / archive).is_file() or (root / folder).is_dir()


class Cifar:
    """CIFAR-10 or CIFAR-100 from its pickles, downloaded when missing; from its JPEG zip
    (decoded at 32x32 RGB, cached) when the zip is there and the pickles are not: a
    ``Source``."""

    OPTIONS = ()
    paper_val = 10_000

    def __init__(self, name: str, root: Path, *, download: bool = True, path: str | None = None):
        self.name, self.root, self.download = name, root, download
        zipped = root / JPEG_ZIP[name] if name in JPEG_ZIP else None
        self.jpeg = None
        if zipped is not None and not has_pickles(root, name) and zipped.is_file():
            self.jpeg = Folder(f"{name}-jpeg", root, path=str(zipped), size=(32, 32), mode="RGB")
        self._read: Decoded | None = None

    def splits(self) -> tuple[str, ...]:
        return self.jpeg.splits() if self.jpeg else ("train", "test")

    def classes(self) -> list[str]:
        return self.jpeg.classes() if self.jpeg else self._pickles().classes

    def arrays(self, split: str) -> Images:
        return self.jpeg.arrays(split) if self.jpeg else self._pickles().splits[split]

    def files(self, split: str) -> list[FileRef] | None:
        return self.jpeg.files(split) if self.jpeg else None

    def cache_key(self) -> str | None:
        return self.jpeg.cache_key() if self.jpeg else None

    def _pickles(self) -> Decoded:
        if self._read is None:
            self._read = read_pickles(self.root, self.name, self.download)
        return self._read
