"""faster-whisper on the speech-to-text benchmark's audio (earshot-bench asr).

Run through scripts/faster-whisper-peer.sh, which installs faster-whisper. Transcribes
each 16 kHz mono 16-bit WAV given, one pass per file, with the settings the local engine
uses (greedy: beam size 1, no timestamps, no temperature fallback, no VAD, no previous
text), and prints one JSON object per file on stdout:
{"file", "text", "audio_s", "decode_s"}. decode_s covers features, encoder and decoder
(the segment generator is consumed inside the timing). One untimed warm-up pass first.
"""

import argparse
import json
import sys
import time
import wave

import numpy as np
from faster_whisper import WhisperModel


def read_wav(path):
    with wave.open(path, "rb") as w:
        if (w.getnchannels(), w.getframerate(), w.getsampwidth()) != (1, 16000, 2):
            sys.exit(f"{path}: want 16 kHz mono 16-bit PCM")
        pcm = w.readframes(w.getnframes())
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def transcribe(model, audio, beam_size):
    segments, _ = model.transcribe(
        audio,
        language="en",
        beam_size=beam_size,
        best_of=1,
        temperature=0.0,
        without_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=False,
    )
    return " ".join(s.text.strip() for s in segments).strip()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--compute-type", default="float32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("files", nargs="+")
    a = p.parse_args()
    model = WhisperModel(
        a.model, device="cpu", compute_type=a.compute_type, cpu_threads=a.threads, num_workers=1
    )
    audio = [read_wav(f) for f in a.files]
    transcribe(model, audio[0], a.beam_size)
    for path, samples in zip(a.files, audio):
        t = time.perf_counter()
        text = transcribe(model, samples, a.beam_size)
        took = time.perf_counter() - t
        print(
            json.dumps(
                {"file": path, "text": text, "audio_s": len(samples) / 16000.0, "decode_s": took}
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
