"""The bundled corpus for memory.search: hetagent's own documentation, chunked into passages.

Sources: README.md and docs/*.md at the repository root (the folder above the `hetagent` package),
or any folder given as `root`. Each markdown file is cut at its headings, and each section into
passages of whole paragraphs of at most `max_words` words (a longer paragraph is cut by words).
A passage remembers its file and heading; the text embedded is "heading: passage".
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hetagent.errors import HetagentError

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")


@dataclass(frozen=True)
class Passage:
    source: str      # path relative to the root, e.g. "docs/calibration.md"
    heading: str     # the nearest heading above the passage ("" before the first one)
    text: str

    def embed_text(self) -> str:
        return f"{self.heading}: {self.text}" if self.heading else self.text


def doc_files(root: str | Path | None = None) -> list[Path]:
    root = Path(root) if root else REPO_ROOT
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    files += sorted((root / "docs").glob("*.md"))
    return files


def _split_words(text: str, max_words: int) -> list[str]:
    words = text.split()
    return [" ".join(words[i:i + max_words]) for i in range(0, len(words), max_words)]


def chunk_markdown(text: str, source: str, max_words: int = 120) -> list[Passage]:
    """Cuts one markdown document into passages (headings never end up inside a passage)."""
    passages: list[Passage] = []
    heading, paras, cur = "", [], []

    def flush_section():
        buf: list[str] = []
        for para in paras:
            for piece in _split_words(para, max_words):
                if buf and len(" ".join(buf).split()) + len(piece.split()) > max_words:
                    passages.append(Passage(source, heading, " ".join(buf)))
                    buf = []
                buf.append(piece)
        if buf:
            passages.append(Passage(source, heading, " ".join(buf)))

    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
        m = None if in_code else _HEADING.match(line)
        if m:
            if cur:
                paras.append(" ".join(cur))
            flush_section()
            heading, paras, cur = m.group(2).strip(), [], []
        elif line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    flush_section()
    return passages


def load_passages(root: str | Path | None = None, max_words: int = 120) -> list[Passage]:
    files = doc_files(root)
    base = Path(root) if root else REPO_ROOT
    passages = [p for f in files
                for p in chunk_markdown(f.read_text(encoding="utf-8"), str(f.relative_to(base)),
                                        max_words)]
    if not passages:
        raise HetagentError(f"no documentation to index under {base}: expected README.md or "
                            f"docs/*.md there")
    return passages


def build_index(root: str | Path | None = None, embedder=None, max_words: int = 120):
    """(VectorIndex over the passages' MiniLM embeddings, passages). Row i of the index is passage i.

    Pass an Embedder to reuse a loaded model; otherwise one is loaded here.
    """
    from hetagent.backends.vector_search import VectorIndex
    if embedder is None:
        from hetagent.backends.embed import Embedder
        embedder = Embedder()
    passages = load_passages(root, max_words)
    vecs, _ = embedder.encode([p.embed_text() for p in passages])
    return VectorIndex.from_vectors(vecs), passages
