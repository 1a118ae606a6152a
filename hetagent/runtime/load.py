"""Load generators (open-loop Poisson at a rate, closed-loop with C in flight) and request inputs.

Voice workflows take audio: `speech_clip()` makes a spoken question with Piper (the bundled voice)
at 16 kHz, cached under the model cache folder so it is made once per machine.
"""
from __future__ import annotations

import random
import threading
import time
from concurrent.futures import Future, wait

import numpy as np

QUESTION = "How does hetagent choose the hardware for a voice agent?"


def speech_clip(text: str = QUESTION) -> np.ndarray:
    """float32 mono 16 kHz speech of `text`, synthesized with Piper (cached)."""
    import hashlib

    from hetagent.backends.models import cache_dir
    f = cache_dir() / f"clip-{hashlib.sha256(text.encode()).hexdigest()[:12]}.npy"
    if f.exists():
        return np.load(f)
    from hetagent.backends.tts import PiperTTS, resample
    res = PiperTTS(threads=1).synthesize(text)
    audio = resample(res.audio, res.sample_rate, 16000)
    f.parent.mkdir(parents=True, exist_ok=True)
    np.save(f, audio)
    return audio


def request_input(graph, text: str = QUESTION) -> dict:
    """A request payload fitting the workflow: audio when it starts with speech recognition."""
    first = {graph.operators[n].kind for n in graph.order if not graph.preds[n]}
    if "speech.frontend" in first:
        return {"audio": speech_clip(text), "sample_rate": 16000}
    return {"text": text, "question": text}


def open_loop(submit, payload, n: int, rate: float, seed: int = 0, stop=None) -> list[Future]:
    """n requests with exponential gaps (Poisson arrivals at `rate`/s), not waiting for answers."""
    rng = random.Random(seed)
    futs = []
    t = time.perf_counter()
    for i in range(n):
        if stop is not None and stop.is_set():
            break
        futs.append(submit(payload))
        if i + 1 < n:
            t += rng.expovariate(rate) if rate > 0 else 0.0
            delay = t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    return futs


def closed_loop(submit, payload, n: int, concurrency: int) -> list[Future]:
    """n requests, `concurrency` in flight: a new one is sent when one is answered."""
    futs: list[Future] = []
    sem = threading.Semaphore(max(1, concurrency))
    for _ in range(n):
        sem.acquire()
        f = submit(payload)
        f.add_done_callback(lambda _f: sem.release())
        futs.append(f)
    return futs


def drain(futs: list[Future], timeout: float | None = None) -> None:
    wait(futs, timeout=timeout)
