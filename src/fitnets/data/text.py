"""Text for language models: ``data.name=text``, ``data.path`` a .txt file, a folder or zip of
.txt / .py / .md files, or a JSONL file with a ``text`` field.

    documents (one per file; one per JSONL line; a single .txt file's paragraphs, split at
    blank lines)
      -> split by document with a fixed seed (a document is never cut between two splits)
      -> tokenised once into a token file in the data cache (numpy memmap, uint16 or uint32),
         keyed by the files (path, size, mtime) and the tokenizer, reused by every later run
      -> each split: its documents concatenated, each ended by the end-of-document token,
         cut into blocks of data.block_size + 1 tokens that overlap by one:
         inputs = block[:-1], targets = block[1:] (every token is predicted once); a masked
         LM's run (its models are masked LMs): inputs = block[:-1] masked by BERT's rule,
         labels its original ids at the masked positions, IGNORE elsewhere (Masking below)

Tokenizers: ``byte`` (built in, no download: the UTF-8 bytes, 256 ids, and 256 the end of a
document) or a local Hugging Face tokenizer folder (``data.tokenizer=DIR``; needs
transformers). fitnets.data.prepare.prepare_text makes a run's ``TextData`` of them (this
module never imports prepare.py): ``memory.Data`` whose batches are (input ids, next-token
ids) and which knows the training split's unigram perplexity (the stall guard's chance level
for a language model).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fitnets.data import cache
from fitnets.data.memory import Batch, Data, order
from fitnets.data.source import Images
from fitnets.errors import FitnetsError

SPLIT_SEED = 0  # the documents' fixed shuffle before the split (the same for every run seed)
TEST_FRACTION = 0.1  # of the documents
VAL_FRACTION = 0.1  # of the documents, unless data.val_size says how many
SUFFIXES = (".txt", ".py", ".md")  # the files of a folder or zip that are documents
TOKEN_FILE_VERSION = 1
COUNT_CHUNK = 1 << 24  # tokens counted at a time (the unigram perplexity of a large split)


# --------------------------------------------------------------------------- tokenizers


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255 and 256 for the end of a document: no download, no vocab
    file, every text encodes."""

    name = "byte"
    vocab_size = 257
    eod = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def files(self) -> list[Path]:
        return []


class HFTokenizer:
    """A Hugging Face tokenizer saved in a local folder (``save_pretrained``); its EOS token
    ends a document (one is added when it has none)."""

    def __init__(self, folder: str):
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise FitnetsError(f"data.tokenizer={folder!r} is neither 'byte' nor a folder; "
                               "give a local Hugging Face tokenizer folder (one that "
                               "AutoTokenizer.from_pretrained reads) or 'byte'.")
        try:
            from transformers import AutoTokenizer
        except ImportError as e:
            raise FitnetsError("data.tokenizer=DIR needs transformers: pip install "
                               "'fitnets[hf]', or use data.tokenizer=byte.") from e
        self.tok = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        if self.tok.eos_token_id is None:
            self.tok.add_special_tokens({"eos_token": "<|endoftext|>"})
        self.name = str(self.folder.resolve())
        self.eod = int(self.tok.eos_token_id)
        self.vocab_size = len(self.tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])

    def files(self) -> list[Path]:
        return [f for f in sorted(self.folder.iterdir()) if f.is_file()]


def make_tokenizer(spec: str) -> ByteTokenizer | HFTokenizer:
    """``byte`` or a local Hugging Face tokenizer folder."""
    return ByteTokenizer() if spec == "byte" else HFTokenizer(spec)


def tokenizer_id(spec: str) -> str:
    """How a run records its tokenizer (a teacher's is compared with it): ``byte``, or the
    folder's absolute path."""
    return spec if spec == "byte" else str(Path(spec).expanduser().resolve())


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class Document:
    """One document: its name (a file, ``file#line``, ``file#paragraph``) and its text."""

    name: str
    read: Callable[[], str]


def documents(path: Path) -> tuple[list[Document], list[Path]]:
    """The documents under ``path`` in a fixed order, and the files they come from (the
    cache key's)."""
    if path.is_dir():
        files = [f for f in sorted(path.rglob("*")) if f.is_file() and f.suffix in SUFFIXES
                 and not any(p.startswith(".") for p in f.relative_to(path).parts)]
        docs = [Document(f.relative_to(path).as_posix(), lambda f=f: _text(f.read_bytes()))
                for f in files]
        return docs, files
    if not path.is_file():
        raise FitnetsError(f"data.path {str(path)!r} does not exist; give a .txt file, a "
                           "folder or .zip of .txt/.py/.md files, or a .jsonl file with a "
                           "'text' field.")
    if path.suffix == ".zip":
        return _zip_documents(path), [path]
    if path.suffix == ".jsonl":
        return _jsonl_documents(path), [path]
    parts = [p for p in _text(path.read_bytes()).split("\n\n") if p.strip()]
    return [Document(f"{path.name}#{i}", lambda p=p: p + "\n\n")
            for i, p in enumerate(parts)], [path]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _zip_documents(path: Path) -> list[Document]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted(i.filename for i in zf.infolist() if not i.is_dir()
                           and Path(i.filename).suffix in SUFFIXES
                           and not any(p.startswith(".") or p == "__MACOSX"
                                       for p in i.filename.split("/")))
    except (zipfile.BadZipFile, OSError) as e:
        raise FitnetsError(f"cannot open zip {path}: {e}; replace it.") from e

    def read(name: str) -> str:
        with zipfile.ZipFile(path) as zf:
            return _text(zf.read(name))

    return [Document(n, lambda n=n: read(n)) for n in names]


def _jsonl_documents(path: Path) -> list[Document]:
    docs = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise FitnetsError(f"{path}, line {i}: not a JSON object with a 'text' field; "
                                   "each line of a .jsonl corpus must be one.") from None
            docs.append(Document(f"{path.name}#{i}", lambda t=str(text): t))
    return docs


def split_documents(n: int, seed: int = SPLIT_SEED, val: int | None = None,
                    ) -> dict[str, np.ndarray]:
    """Document indices of train, val and test: a seeded permutation of ``range(n)``, its
    first ``TEST_FRACTION`` the test split, the next ``val`` (default ``VAL_FRACTION``) the
    validation one; each split's documents in their listed order."""
    if n < 3:
        raise FitnetsError(f"the corpus has {n} document(s); splitting by document needs at "
                           "least 3 (one each for train, validation and test). Add files, or "
                           "separate a single .txt file's documents by blank lines.")
    n_test = max(1, round(TEST_FRACTION * n))
    n_val = max(1, round(VAL_FRACTION * n)) if val is None else val
    if n_test + n_val >= n:
        raise FitnetsError(f"data.val_size={n_val} documents plus {n_test} test documents "
                           f"leave none of the {n} to train on; lower data.val_size.")
    perm = np.random.default_rng(seed).permutation(n)
    parts = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val],
             "train": perm[n_test + n_val:]}
    return {k: np.sort(v) for k, v in parts.items()}


# --------------------------------------------------------------------------- the token file


@dataclass
class Tokens:
    """A tokenised corpus: every split's tokens (memory-mapped from the cache, or in memory
    when nothing can be cached), and where they were read from."""

    splits: dict[str, np.ndarray]
    vocab_size: int
    eod: int
    path: Path | None  # the token file; None: not cached
    built: bool  # tokenised by this call (False: the cached file was reused)


def token_file(root: Path, docs: list[Document], files: list[Path], tok,
               val: int | None) -> Tokens:
    """The corpus split by document and tokenised, read from (or written once to) a token
    file in the data cache keyed by ``files`` and the tokenizer (its folder's files too)."""
    parts = split_documents(len(docs), val=val)
    options = {"tokenizer": tok.name, "vocab": tok.vocab_size, "eod": tok.eod,
               "documents": len(docs), "val": val, "seed": SPLIT_SEED,
               "version": TOKEN_FILE_VERSION}
    name = cache.entry("text", [*files, *tok.files()], options)
    folder = cache.cache_dir(root)
    dtype = np.uint16 if tok.vocab_size <= 2**16 else np.uint32
    if folder is None:  # nowhere to write: tokenise into memory
        splits = {s: np.array(list(_ids(docs, idx, tok)), dtype=dtype)
                  for s, idx in parts.items()}
        return Tokens(splits, tok.vocab_size, tok.eod, None, True)
    path, meta_path = folder / f"{name}.tokens", folder / f"{name}.json"
    built = not _complete(path, meta_path)
    if built:
        _write(path, meta_path, docs, parts, tok, dtype)
    meta = json.loads(meta_path.read_text())
    whole = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")
    splits = {s: whole[lo:hi] for s, (lo, hi) in meta["splits"].items()}
    return Tokens(splits, meta["vocab"], meta["eod"], path, built)


def _ids(docs: list[Document], idx: np.ndarray, tok) -> Iterator[int]:
    for i in idx:
        yield from tok.encode(docs[i].read())
        yield tok.eod


def _complete(path: Path, meta_path: Path) -> bool:
    """A token file whose description was written after it, of the size it says."""
    try:
        meta = json.loads(meta_path.read_text())
        return path.stat().st_size == meta["tokens"] * np.dtype(meta["dtype"]).itemsize
    except (OSError, ValueError, KeyError):
        return False


def _write(path: Path, meta_path: Path, docs: list[Document], parts: dict[str, np.ndarray],
           tok, dtype) -> None:
    """Tokenise document by document into a temporary file, then rename it: a reader never
    sees half a file; the description (JSON) is written last and marks the file complete."""
    spans, n = {}, 0
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for s in ("train", "val", "test"):
                lo = n
                for i in parts[s]:
                    ids = np.array([*tok.encode(docs[i].read()), tok.eod], dtype=dtype)
                    f.write(ids.tobytes())
                    n += len(ids)
                spans[s] = [lo, n]
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    meta = {"dtype": np.dtype(dtype).name, "tokens": n, "splits": spans,
            "vocab": tok.vocab_size, "eod": tok.eod, "tokenizer": tok.name,
            "documents": {s: [docs[i].name for i in parts[s]] for s in parts}}
    fd, tmp = tempfile.mkstemp(prefix=meta_path.name, suffix=".tmp", dir=meta_path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, meta_path)


def blocks(tokens: np.ndarray, block_size: int) -> np.ndarray:
    """(N, block_size + 1) int64 blocks of ``tokens``, block i starting at token
    i * block_size (so a block's last token is the next one's first: every token but the
    first is a target once); the tail too short for a whole block is left out."""
    n = (len(tokens) - 1) // block_size
    if n < 1:
        return np.zeros((0, block_size + 1), dtype=np.int64)
    view = np.lib.stride_tricks.as_strided(
        tokens, shape=(n, block_size + 1),
        strides=(tokens.strides[0] * block_size, tokens.strides[0]), writeable=False)
    return view.astype(np.int64)


def unigram_perplexity(tokens: np.ndarray, vocab_size: int) -> float:
    """exp of the entropy of the tokens' frequencies: the perplexity of the best model that
    ignores context (a language model's chance level)."""
    counts = np.zeros(vocab_size, dtype=np.float64)
    for i in range(0, len(tokens), COUNT_CHUNK):  # a memmap: read a chunk at a time
        counts += np.bincount(np.asarray(tokens[i:i + COUNT_CHUNK]), minlength=vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(math.exp(-(p * np.log(p)).sum()))


# --------------------------------------------------------------------------- masking (BERT)

MASK_RATE = 0.15  # of the positions, chosen for prediction
MASK_KEEP = (0.8, 0.9)  # of the chosen: below 0.8 -> the mask id, below 0.9 -> a random id
IGNORE = -100  # a label not predicted (F.cross_entropy's ignore_index)
EVAL_MASK_SEED = 0x6D61736B  # the fixed masks of validation and test ("mask")
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Masking:
    """A masked language model's masking: the mask id, and the ids a random replacement is
    drawn from (``[0, draw)``: the corpus's own vocabulary, never the mask id added for it).
    ``vocab``: the ids a model predicts (the byte tokenizer's 257 and its mask id, 258)."""

    mask_id: int
    draw: int
    vocab: int


def masking_for(tok) -> Masking:
    """The byte tokenizer gets the mask id 257 (one past its end-of-document id: masked runs
    alone predict 258 ids; its token files, which never hold a mask, are those of causal
    runs); a Hugging Face tokenizer has its own ``mask_token_id`` or is refused."""
    if isinstance(tok, ByteTokenizer):
        return Masking(mask_id=tok.vocab_size, draw=tok.vocab_size, vocab=tok.vocab_size + 1)
    mask = getattr(getattr(tok, "tok", None), "mask_token_id", None)
    if mask is None:
        raise FitnetsError(f"data.tokenizer={tok.name!r} has no mask token (its "
                           "mask_token_id is unset), which a masked language model "
                           "predicts at the masked positions: give the tokenizer of a masked "
                           "LM (BERT's, RoBERTa's: [MASK] / <mask>) or data.tokenizer=byte.")
    return Masking(mask_id=int(mask), draw=tok.vocab_size, vocab=tok.vocab_size)


def apply_masks(x: torch.Tensor, u: torch.Tensor, r: torch.Tensor, ids: torch.Tensor,
                m: Masking) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's rule on (B, T) ids ``x`` from uniforms ``u`` (a position is chosen when below
    MASK_RATE; a row with none chosen gets its lowest ``u`` chosen, so every row predicts at
    least one token), ``r`` (what a chosen position becomes: the mask id 80%, the random id
    ``ids`` 10%, itself 10%). Returns (inputs, labels): labels are the original ids at the
    chosen positions and IGNORE elsewhere."""
    chosen = u < MASK_RATE
    lowest = u == u.min(dim=1, keepdim=True).values
    chosen = chosen | (lowest & ~chosen.any(dim=1, keepdim=True))
    inputs = torch.where(chosen & (r < MASK_KEEP[0]), m.mask_id, x)
    inputs = torch.where(chosen & (r >= MASK_KEEP[0]) & (r < MASK_KEEP[1]), ids, inputs)
    return inputs, torch.where(chosen, x, IGNORE)


def draw_masks(x: torch.Tensor, generator: torch.Generator, m: Masking,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch's masks drawn from the run's ``generator`` (shuffling's; a resumed
    run draws the same ones), applied to ``x``."""
    u, r, ids = mask_draws(x.shape, generator, m)
    dev = x.device
    return apply_masks(x, u.to(dev), r.to(dev), ids.to(dev), m)


def mask_draws(shape, generator: torch.Generator, m: Masking):
    dev = generator.device
    u = torch.rand(shape, generator=generator, device=dev)
    r = torch.rand(shape, generator=generator, device=dev)
    ids = torch.randint(0, m.draw, shape, generator=generator, device=dev)
    return u, r, ids


def fixed_masks(x: torch.Tensor, split: str, rows: np.ndarray, m: Masking,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation / test masks: row ``rows[i]`` of ``split`` is masked alike on every call
    (seeded by the split and the row, whatever the batch, the mode or the run), so every
    epoch and every run is judged on the same positions."""
    n, t = x.shape
    u, r = np.empty((n, t)), np.empty((n, t))
    ids = np.empty((n, t), dtype=np.int64)
    for i, row in enumerate(np.asarray(rows)):
        g = np.random.default_rng([EVAL_MASK_SEED, SPLIT_CODES[split], int(row)])
        u[i], r[i], ids[i] = g.random(t), g.random(t), g.integers(0, m.draw, t)
    dev = x.device
    return apply_masks(x, torch.from_numpy(u).to(dev), torch.from_numpy(r).to(dev),
                       torch.from_numpy(ids).to(dev), m)


# --------------------------------------------------------------------------- the source


class Text:
    """A text corpus: a ``Source`` whose splits are token blocks (x: input ids, y: the next
    ids), split by document. Nothing is read until ``tokens()`` is first asked for."""

    OPTIONS = ("tokenizer", "block_size", "val_size")
    paper_val = None

    def __init__(self, name: str, root: Path, *, download: bool = True,
                 path: str | None = None, tokenizer: str = "byte", block_size: int = 128,
                 val_size: int | None = None):
        if not path:
            raise FitnetsError("data.name=text needs data.path: a .txt file, a folder or "
                               ".zip of .txt/.py/.md files, or a .jsonl file with a 'text' "
                               "field.")
        self.name, self.root, self.path = name, Path(root), Path(path).expanduser()
        self.tokenizer_spec, self.block_size, self.val_size = tokenizer, block_size, val_size
        self._tokens: Tokens | None = None
        self._tok = None

    def tokenizer(self):
        if self._tok is None:
            self._tok = make_tokenizer(self.tokenizer_spec)
        return self._tok

    def tokens(self) -> Tokens:
        """The corpus's token file (built on first use)."""
        if self._tokens is None:
            docs, files = documents(self.path)
            self._tokens = token_file(self.root, docs, files, self.tokenizer(), self.val_size)
        return self._tokens

    def splits(self) -> tuple[str, ...]:
        return ("train", "val", "test")

    def classes(self) -> list[str]:
        return [str(i) for i in range(self.tokens().vocab_size)]  # a class per token id

    def arrays(self, split: str) -> Images:
        b = blocks(self.tokens().splits[split], self.block_size)
        return Images(b[:, :-1], b[:, 1:])

    def files(self, split: str) -> None:
        return None  # blocks are read from the token file, not streamed as image files

    def cache_key(self) -> None:
        return None  # the token file is its own cache (token_file)


@dataclass
class TextData(Data):
    """Token blocks in memory: ``Data`` whose inputs are (B, T) input ids and labels the
    (B, T) next ids; ``unigram_ppl``: the training split's unigram perplexity."""

    unigram_ppl: float | None = None
    # a masked LM's run (data/prepare.py): the training blocks are masked per batch from
    # the run's generator, validation and test once (fixed_masks); None: next-token targets
    masking: Masking | None = None

    @property
    def unit(self) -> tuple[str, int]:
        return ("token", self.train.x.shape[1])  # a row is a block of T predicted tokens

    def train_batches(self, generator: torch.Generator, start: int = 0,
                      epoch: int = 1) -> Iterator[Batch]:
        if self.masking is None:
            yield from super().train_batches(generator, start, epoch)
            return
        x = self.train.x  # the blocks themselves (not shifted): a masked LM's inputs
        for k, idx in enumerate(order(len(self.train), self.batch_size, generator)):
            # drawn for every batch, also those a resumed epoch skips: the generator is then
            # where an uninterrupted epoch would have it
            draws = mask_draws((len(idx), x.shape[1]), generator, self.masking)
            if k >= start:
                rows = idx.to(x.device, non_blocking=True)
                yield Batch(*_masked(x[rows], draws, self.masking), idx)

    def train_inputs(self) -> torch.Tensor | None:
        # a masked LM's inputs are masked afresh every epoch: no teacher bank over them
        return None if self.masking is not None else super().train_inputs()


def _masked(x: torch.Tensor, draws, m: Masking) -> tuple[torch.Tensor, torch.Tensor]:
    u, r, ids = (d.to(x.device, non_blocking=True) for d in draws)
    return apply_masks(x, u, r, ids, m)


class TokenBlocks:
    """One split's blocks read from its tokens on demand (data.mode=stream): row i is tokens
    ``[i * block_size, (i + 1) * block_size + 1)``, as ``blocks`` cuts them, but only the rows
    asked for are read from the token file (a memmap) and converted to int64; the first
    ``limit`` rows when ``limit`` (data.train_limit / test_limit)."""

    def __init__(self, tokens: np.ndarray, block_size: int, limit: int = 0, split: str = ""):
        self.tokens, self.block_size, self.split = tokens, block_size, split
        n = max((len(tokens) - 1) // block_size, 0)
        self.n = min(n, limit) if limit else n

    def __len__(self) -> int:
        return self.n

    def _view(self) -> np.ndarray:
        """(N, block_size + 1) over the token file: a view, nothing read."""
        t = self.tokens
        return np.lib.stride_tricks.as_strided(
            t, shape=(self.n, self.block_size + 1),
            strides=(t.strides[0] * self.block_size, t.strides[0]), writeable=False)

    def rows(self, idx: np.ndarray) -> torch.Tensor:
        """Blocks ``idx`` (in that order), (len(idx), block_size + 1) int64."""
        return torch.from_numpy(self._view()[np.asarray(idx)].astype(np.int64))

    def span(self, lo: int, hi: int) -> torch.Tensor:
        """Blocks ``lo`` to ``hi`` - 1: one contiguous read."""
        return torch.from_numpy(self._view()[lo:hi].astype(np.int64))


@dataclass
class StreamedTextData(TextData):
    """``TextData`` whose splits stay in the token file (``TokenBlocks``): each batch's
    blocks are read when it is drawn and copied to ``device``. The order is memory mode's
    (``memory.order`` on the same generator), so both modes train on the same batches, and
    a resumed epoch skips its first ``start`` batches without reading them."""

    device: torch.device = torch.device("cpu")
    layout: Callable[[torch.Tensor], torch.Tensor] = lambda x: x

    @property
    def unit(self) -> tuple[str, int]:
        return ("token", self.train.block_size)

    def _batch(self, b: torch.Tensor, idx: torch.Tensor | None = None) -> Batch:
        b = b.to(self.device, non_blocking=True)
        return Batch(self.layout(b[:, :-1]), b[:, 1:], idx)

    def _masked_batch(self, b: torch.Tensor, masks, idx: torch.Tensor | None = None,
                      ) -> Batch:
        """A masked LM's batch: the block's first T tokens, masked by ``masks`` (x, m) ->
        (inputs, labels)."""
        inputs, labels = masks(b.to(self.device, non_blocking=True)[:, :-1], self.masking)
        return Batch(self.layout(inputs), labels, idx)

    def train_batches(self, generator: torch.Generator, start: int = 0,
                      epoch: int = 1) -> Iterator[Batch]:
        for k, idx in enumerate(order(len(self.train), self.batch_size, generator)):
            draws = (None if self.masking is None else
                     mask_draws((len(idx), self.train.block_size), generator, self.masking))
            if k >= start:
                b = self.train.rows(idx.cpu().numpy())
                if draws is None:
                    yield self._batch(b, idx)
                else:
                    yield self._masked_batch(b, lambda x, m, d=draws: _masked(x, d, m), idx)

    def eval_batches(self, arrays: TokenBlocks, rows: tuple[int, int] | None = None,
                     ) -> Iterator[Batch]:
        lo, hi = rows or (0, len(arrays))
        for i in range(lo, hi, self.eval_batch_size):
            j = min(i + self.eval_batch_size, hi)
            if self.masking is None:
                yield self._batch(arrays.span(i, j))
            else:  # the split's fixed masks of rows i..j-1, as memory mode holds them
                yield self._masked_batch(arrays.span(i, j), lambda x, m, i=i, j=j: fixed_masks(
                    x, arrays.split, np.arange(i, j), m))

    def probe(self, n: int = 2) -> torch.Tensor:
        return self._batch(self.train.span(0, min(n, len(self.train)))).x

    def train_inputs(self) -> None:
        return None  # never all read at once (no teacher bank over its rows)

    def map_x(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.layout = fn  # applied to every batch as it is read


def stdlib_corpus(dest: str | os.PathLike, limit_bytes: int = 300_000,
                  largest: int = 40_000) -> Path:
    """Copy Python's own standard library sources (top-level .py files of at most ``largest``
    bytes, in name order, until ``limit_bytes``) into the folder ``dest``: a corpus nobody
    here wrote, the same on every machine with this Python version. Returns ``dest``."""
    import shutil
    import sysconfig

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        size = f.stat().st_size
        if size > largest or size == 0:
            continue
        shutil.copyfile(f, dest / f.name)
        total += size
        if total >= limit_bytes:
            break
    return dest
