"""embed.encode on the CPU: all-MiniLM-L6-v2 through sentence-transformers, loaded from site-packages."""
from __future__ import annotations

import os
import time

import numpy as np

from hetagent.backends import models
from hetagent.errors import HetagentError


class Embedder:
    """Loads MiniLM once; encode(texts) -> (unit vectors [n, 384] float32, seconds)."""

    model_id = models.MINILM_ID

    def __init__(self, threads: int | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = models.minilm_dir()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise HetagentError("embed.encode needs the package 'sentence-transformers'; install it "
                                "with `pip install sentence-transformers`") from e
        if threads:
            import torch
            torch.set_num_threads(threads)
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        t = time.perf_counter()
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.load_seconds = time.perf_counter() - t
        dim = getattr(self.model, "get_embedding_dimension", None) \
            or self.model.get_sentence_embedding_dimension
        self.dims = int(dim())

    def count_tokens(self, texts: list[str]) -> int:
        """Word-piece tokens the model actually reads (with [CLS]/[SEP], truncated as encode does)."""
        limit = self.model.max_seq_length
        return sum(min(len(ids), limit) for ids in self.model.tokenizer(list(texts))["input_ids"])

    def encode(self, texts: list[str], batch_size: int = 32) -> tuple[np.ndarray, float]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        t = time.perf_counter()
        vecs = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32), time.perf_counter() - t
