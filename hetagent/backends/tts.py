"""speech.phonemize / speech.synthesize on the CPU: Piper (espeak-ng phonemes + a VITS ONNX voice).

The two stages are separate calls of the library: `PiperVoice.phonemize` (espeak-ng, text ->
phonemes per sentence) and `phoneme_ids_to_audio` (the ONNX model, phoneme ids -> waveform), so
their times are measured directly, one sentence at a time as Piper itself does.

text_tokens (the unit of the IR's speech.* attributes) are counted as words and punctuation marks,
`count_text_tokens`; about what a BPE tokenizer gives for plain English.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np

from hetagent.backends import models
from hetagent.errors import HetagentError

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_text_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


@dataclass
class SynthesisResult:
    audio: np.ndarray          # float32 mono in [-1, 1]
    sample_rate: int
    phonemize_seconds: float
    synthesize_seconds: float
    text_tokens: int

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / self.sample_rate

    @property
    def seconds(self) -> float:
        return self.phonemize_seconds + self.synthesize_seconds


class PiperTTS:
    """Loads the Piper voice once; synthesize(text) -> SynthesisResult."""

    model_id = models.PIPER_ID

    def __init__(self, threads: int | None = None):
        model, config = models.piper_voice()
        try:
            import onnxruntime
            from piper import PiperVoice, SynthesisConfig
        except ImportError as e:
            raise HetagentError("speech synthesis needs the package 'piper-tts'; install it with "
                                "`pip install piper-tts`") from e
        t = time.perf_counter()
        self.voice = PiperVoice.load(model, config_path=config)
        if threads:
            opts = onnxruntime.SessionOptions()
            opts.intra_op_num_threads = threads
            self.voice.session = onnxruntime.InferenceSession(
                str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        self.load_seconds = time.perf_counter() - t
        # no noise: the same text gives the same audio (calibration and tests repeat runs)
        self.syn_config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        self.sample_rate = int(self.voice.config.sample_rate)

    def phonemize(self, text: str) -> tuple[list[list[str]], float]:
        t = time.perf_counter()
        phonemes = self.voice.phonemize(text)
        return phonemes, time.perf_counter() - t

    def synthesize_phonemes(self, sentences: list[list[str]]) -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        pieces = []
        for phonemes in sentences:
            if not phonemes:
                continue
            ids = self.voice.phonemes_to_ids(phonemes)
            audio = np.asarray(self.voice.phoneme_ids_to_audio(ids, self.syn_config),
                               dtype=np.float32).reshape(-1)
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            pieces.append(audio / peak if peak > 1e-8 else audio)
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        return np.clip(audio, -1.0, 1.0).astype(np.float32), time.perf_counter() - t

    def synthesize(self, text: str) -> SynthesisResult:
        """Text -> (float32 audio at self.sample_rate, with phonemize and synthesize seconds)."""
        sentences, ph_s = self.phonemize(text)
        audio, syn_s = self.synthesize_phonemes(sentences)
        return SynthesisResult(audio, self.sample_rate, ph_s, syn_s, count_text_tokens(text))


def resample(audio: np.ndarray, rate: int, target: int = 16000) -> np.ndarray:
    """FFT resampling (band-limited: no aliasing); Piper voices are 22.05 kHz, whisper wants 16 kHz."""
    audio = np.asarray(audio, dtype=np.float32)
    if rate == target or len(audio) == 0:
        return audio
    n = int(round(len(audio) * target / rate))
    spec = np.fft.rfft(audio)
    keep = n // 2 + 1
    spec = spec[:keep] if len(spec) >= keep else np.pad(spec, (0, keep - len(spec)))
    return (np.fft.irfft(spec, n) * (n / len(audio))).astype(np.float32)
