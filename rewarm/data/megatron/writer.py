"""Write an MMIDIDX ``.bin`` + ``.idx`` pair (layout in rewarm.data.megatron.format): one sequence per document,
``doc_idx`` = 0, 1, ..., N as gpt-neox's ``preprocess_data.py`` writes it. Both files are written under
temporary names and renamed when complete, so a reader never sees a partial pair."""

from __future__ import annotations

import os
import struct
from array import array
from types import TracebackType

import numpy as np

from rewarm.data.megatron.format import MAGIC, VERSION, code_of


class TokenWriter:
    """``with TokenWriter(prefix, np.uint16) as w: w.add_documents(flat, starts)``; the pair appears at exit
    (nothing does if the block raises)."""

    def __init__(self, prefix: str, dtype: type) -> None:
        self.prefix, self.dtype = prefix, np.dtype(dtype)
        self._code = code_of(dtype)
        self._suffix = f".{os.getpid()}.tmp"
        self._sizes = array("q")
        self.n_tokens = 0
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        self._bin = open(prefix + ".bin" + self._suffix, "wb")

    def add_documents(self, flat: np.ndarray, starts: np.ndarray) -> None:
        """Documents ``flat[starts[d]:starts[d+1]]`` (ids must fit the dtype)."""
        if flat.size and (int(flat.max()) > np.iinfo(self.dtype).max or int(flat.min()) < 0):
            raise ValueError(f"token ids {int(flat.min())}..{int(flat.max())} do not fit {self.dtype.name}")
        self._bin.write(flat.astype(self.dtype, copy=False).tobytes())
        self._sizes.extend(np.diff(starts).tolist())
        self.n_tokens += int(flat.size)

    @property
    def n_docs(self) -> int:
        return len(self._sizes)

    def commit(self) -> None:
        """Write the index and rename both files into place."""
        self._bin.flush()
        os.fsync(self._bin.fileno())
        self._bin.close()
        sizes = np.frombuffer(self._sizes, np.int64) if self._sizes else np.zeros(0, np.int64)
        pointers = np.zeros(len(sizes), np.int64)
        np.cumsum(sizes[:-1] * self.dtype.itemsize, out=pointers[1:])
        doc_idx = np.arange(len(sizes) + 1, dtype=np.int64)
        with open(self.prefix + ".idx" + self._suffix, "wb") as fh:
            fh.write(MAGIC + struct.pack("<Q", VERSION) + struct.pack("<B", self._code))
            fh.write(struct.pack("<QQ", len(sizes), len(doc_idx)))
            for arr in (sizes.astype(np.int32), pointers, doc_idx):
                fh.write(arr.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(self.prefix + ".bin" + self._suffix, self.prefix + ".bin")
        os.replace(self.prefix + ".idx" + self._suffix, self.prefix + ".idx")

    def abort(self) -> None:
        self._bin.close()
        for ext in (".bin", ".idx"):
            if os.path.exists(self.prefix + ext + self._suffix):
                os.remove(self.prefix + ext + self._suffix)

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()
