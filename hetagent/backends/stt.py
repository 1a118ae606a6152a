"""speech.frontend / speech.encode / speech.decode on the CPU: whisper tiny.en through faster-whisper.

The three stages are three separate library calls, timed one by one (no estimate involved):
  frontend  faster_whisper.FeatureExtractor: 16 kHz waveform -> 80-bin log-mel frames (numpy)
  encode    CTranslate2 Whisper.encode: one 30 s window of frames -> encoder states
  decode    CTranslate2 Whisper.generate on those encoder states (greedy, no timestamps; redone
            with beam search if the greedy text loops) -> tokens
Whisper's encoder always reads a whole 30 s window (shorter audio is padded), so encode costs the
same for 1 s and for 30 s of audio: audio longer than 30 s is cut into consecutive 30 s windows,
each encoded and decoded on its own (no overlap, no previous-text prompt: simple and
deterministic). Encode cost therefore grows with the number of started windows.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np

from hetagent.backends import models
from hetagent.errors import HetagentError

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30


@dataclass
class TranscriptionResult:
    text: str
    audio_seconds: float
    windows: int
    output_tokens: int
    frontend_seconds: float
    encode_seconds: float
    decode_seconds: float

    @property
    def seconds(self) -> float:
        return self.frontend_seconds + self.encode_seconds + self.decode_seconds


class WhisperSTT:
    """Loads whisper tiny.en (int8 CTranslate2) once; transcribe(audio) -> TranscriptionResult."""

    model_id = models.WHISPER_ID

    def __init__(self, threads: int | None = None, compute_type: str = "int8"):
        path = models.whisper_dir()
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
        except ImportError as e:
            raise HetagentError("speech recognition needs the package 'faster-whisper'; install "
                                "it with `pip install faster-whisper`") from e
        threads = threads or len(os.sched_getaffinity(0))
        t = time.perf_counter()
        self.model = WhisperModel(str(path), device="cpu", compute_type=compute_type,
                                  cpu_threads=threads, local_files_only=True)
        self.load_seconds = time.perf_counter() - t
        self.tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual,
                                   task="transcribe", language="en")
        self.fe = self.model.feature_extractor
        self.prompt = list(self.tokenizer.sot_sequence) + [self.tokenizer.no_timestamps]

    def frontend(self, audio: np.ndarray) -> tuple[np.ndarray, float]:
        """16 kHz float32 mono -> log-mel features [80, frames]."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        t = time.perf_counter()
        feats = self.fe(audio)
        return feats, time.perf_counter() - t

    def windows(self, feats: np.ndarray) -> list[np.ndarray]:
        """Cuts features into 30 s windows, the last one padded (the encoder's fixed input)."""
        from faster_whisper.audio import pad_or_trim
        n = self.fe.nb_max_frames
        content = max(feats.shape[-1] - 1, 1)
        return [pad_or_trim(feats[:, i:i + n]) for i in range(0, content, n)]

    def encode(self, window: np.ndarray):
        """One 30 s window -> (encoder output, seconds)."""
        t = time.perf_counter()
        out = self.model.encode(window)
        return out, time.perf_counter() - t

    def decode(self, encoder_output, max_length: int = 224) -> tuple[list[int], float]:
        """Greedy decoding of one window -> (text tokens, seconds).

        A greedy pass that loops (its tokens end in a short pattern repeated, or the gzip
        compression ratio of its text exceeds 2.4, faster-whisper's threshold; typical when a
        window ends inside a word) is redone once with beam search (5 beams, no repeated 3-grams);
        a repeated tail that survives is cut to one copy. Both passes count in the seconds."""
        t = time.perf_counter()
        ids = self._generate(encoder_output, max_length, beam_size=1)
        if self._loops(ids):
            ids = self._generate(encoder_output, max_length, beam_size=5, no_repeat_ngram_size=3)
            ids = _cut_repeated_tail(ids)
        return ids, time.perf_counter() - t

    def _loops(self, ids: list[int]) -> bool:
        from faster_whisper.transcribe import get_compression_ratio
        return (len(_cut_repeated_tail(ids)) < len(ids)
                or get_compression_ratio(self.tokenizer.decode(ids)) > 2.4)

    def _generate(self, encoder_output, max_length: int, **kw) -> list[int]:
        res = self.model.model.generate(encoder_output, [self.prompt], max_length=max_length,
                                        suppress_blank=True, suppress_tokens=[-1],
                                        return_scores=False, **kw)
        return [tok for tok in res[0].sequences_ids[0] if tok < self.tokenizer.eot]

    def transcribe(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> TranscriptionResult:
        if sample_rate != SAMPLE_RATE:
            raise HetagentError(f"whisper reads {SAMPLE_RATE} Hz audio, got {sample_rate} Hz: "
                                f"resample first (hetagent.backends.tts.resample)")
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        feats, fe_s = self.frontend(audio)
        enc_s = dec_s = 0.0
        texts, n_tokens = [], 0
        wins = self.windows(feats)
        for w in wins:
            out, s = self.encode(w)
            enc_s += s
            ids, s = self.decode(out)
            dec_s += s
            n_tokens += len(ids)
            texts.append(self.tokenizer.decode(ids).strip())
        return TranscriptionResult(" ".join(t for t in texts if t), len(audio) / SAMPLE_RATE,
                                   len(wins), n_tokens, fe_s, enc_s, dec_s)


def _cut_repeated_tail(ids: list[int], max_period: int = 8, min_tokens: int = 16) -> list[int]:
    """Drops a tail where a pattern of <= max_period tokens repeats to >= min_tokens tokens."""
    for p in range(1, max_period + 1):
        if len(ids) < 2 * p:
            break
        pattern, reps, end = ids[-p:], 1, len(ids) - p
        while end - p >= 0 and ids[end - p:end] == pattern:
            reps, end = reps + 1, end - p
        if reps >= 4 and reps * p >= min_tokens:
            return ids[:end + p]
    return ids


def windows_for(audio_seconds: float) -> int:
    return max(1, math.ceil(audio_seconds / WINDOW_SECONDS))
