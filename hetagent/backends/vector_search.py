"""memory.vector_search on the CPU: an exact FAISS index (inner product over unit vectors = cosine).

An exact flat index reads every stored vector once per query, so its cost is index_size x dims
multiply-adds per query: memory-bandwidth bound for large indexes, which is how the calibration
prices it (seconds per stored float scanned).
"""
from __future__ import annotations

import time

import numpy as np

from hetagent.errors import HetagentError


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise HetagentError("vector search needs the package 'faiss-cpu'; install it with "
                            "`pip install faiss-cpu` or `pip install 'hetagent[models]'`") from e
    return faiss


class VectorIndex:
    """An exact inner-product index. Vectors are L2-normalized on the way in (normalize=True)."""

    def __init__(self, dims: int, normalize: bool = True):
        self.dims = int(dims)
        self.normalize = normalize
        self.index = _faiss().IndexFlatIP(self.dims)

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, normalize: bool = True) -> "VectorIndex":
        vectors = np.asarray(vectors, dtype=np.float32)
        idx = cls(vectors.shape[1], normalize=normalize)
        idx.add(vectors)
        return idx

    def __len__(self) -> int:
        return self.index.ntotal

    def _prep(self, vecs) -> np.ndarray:
        vecs = np.ascontiguousarray(np.atleast_2d(np.asarray(vecs, dtype=np.float32)))
        if vecs.shape[1] != self.dims:
            raise HetagentError(f"vectors have {vecs.shape[1]} dims, the index holds {self.dims}")
        if self.normalize:
            vecs = vecs.copy()
            _faiss().normalize_L2(vecs)
        return vecs

    def add(self, vectors) -> float:
        """Adds vectors; returns the seconds it took."""
        t = time.perf_counter()
        self.index.add(self._prep(vectors))
        return time.perf_counter() - t

    def search(self, query_vecs, top_k: int = 5) -> tuple[np.ndarray, np.ndarray, float]:
        """(scores [n, k], ids [n, k], seconds). ids are -1 where the index holds fewer than k."""
        q = self._prep(query_vecs)
        t = time.perf_counter()
        scores, ids = self.index.search(q, int(top_k))
        return scores, ids, time.perf_counter() - t


def random_index(index_size: int, dims: int, seed: int = 0) -> VectorIndex:
    """A synthetic index of random unit vectors (for calibration: cost depends on sizes only)."""
    rng = np.random.default_rng(seed)
    return VectorIndex.from_vectors(rng.standard_normal((index_size, dims), dtype=np.float32))
