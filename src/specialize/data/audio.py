"""Audio files: decode, mix down, resample to 16 kHz, and the checks a speech row must pass.

Decoding uses soundfile (wav, flac, ogg) and falls back to the standard library's `wave` for
PCM wav; resampling is scipy's polyphase filter. torchaudio is not used: its wheels are tied to
one torch build.
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from specialize.artifacts import sha256_file
from specialize.errors import UserFileError

TARGET_RATE = 16000
MIN_SOURCE_RATE = (
    8000  # below telephone quality the words are gone; resampling cannot bring them back
)


@dataclass(frozen=True)
class AudioLimits:
    """What a usable training recording looks like."""

    min_seconds: float = 0.2
    max_seconds: float = 30.0  # Whisper hears 30 s windows; longer rows would be cut silently
    silence_dbfs: float = -50.0  # a recording whose loudest 50 ms stays below this is silence


@dataclass(frozen=True)
class AudioInfo:
    """A decoded recording's facts, kept with the row."""

    path: str
    sha256: str
    sample_rate: int
    channels: int
    seconds: float
    peak_dbfs: float


def read_audio(path: str | Path) -> tuple[np.ndarray, int, int]:
    """Return (float32 samples in [-1, 1] mixed to mono, sample rate, channels) of an audio file."""
    path = Path(path)
    if not path.is_file():
        raise UserFileError("audio file not found", where=str(path), fix="check the path")
    try:
        import soundfile

        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except ImportError:
        samples, rate = _read_wave(path)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError on bad input
        raise UserFileError(
            f"cannot decode audio ({str(exc)[:100]})",
            where=str(path),
            fix="use a wav, flac or ogg file",
        ) from None
    if samples.shape[0] == 0:
        raise UserFileError(
            "audio file has no samples", where=str(path), fix="re-record or drop it"
        )
    return samples.mean(axis=1).astype(np.float32), int(rate), int(samples.shape[1])


def _read_wave(path: Path) -> tuple[np.ndarray, int]:
    try:
        with wave.open(str(path)) as handle:
            width, channels, rate = (
                handle.getsampwidth(),
                handle.getnchannels(),
                handle.getframerate(),
            )
            frames = handle.readframes(handle.getnframes())
    except (wave.Error, EOFError) as exc:
        raise UserFileError(
            f"cannot decode audio ({exc})", where=str(path), fix="use PCM wav"
        ) from None
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None:
        raise UserFileError(f"{8 * width}-bit wav is not supported", where=str(path))
    data = np.frombuffer(frames, dtype=dtype).astype(np.float32)
    data = (data - 128) / 128 if width == 1 else data / float(2 ** (8 * width - 1))
    return data.reshape(-1, channels), rate


def resample(samples: np.ndarray, rate: int, target: int = TARGET_RATE) -> np.ndarray:
    """Return `samples` at `target` Hz (polyphase filtering; unchanged when already there)."""
    if rate == target:
        return samples
    from scipy.signal import resample_poly

    ratio = Fraction(target, rate).limit_denominator(1000)
    return resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)


def load_audio(path: str | Path, target: int = TARGET_RATE) -> np.ndarray:
    """Return a recording as float32 mono samples at 16 kHz (what Whisper's front end expects)."""
    samples, rate, _ = read_audio(path)
    return resample(samples, rate, target)


def peak_dbfs(samples: np.ndarray, rate: int, window_seconds: float = 0.05) -> float:
    """Return the loudness (dBFS, RMS) of the loudest 50 ms window: -inf for digital silence."""
    window = max(1, int(rate * window_seconds))
    usable = samples[: len(samples) // window * window] if len(samples) >= window else samples
    frames = usable.reshape(-1, min(window, len(usable)))
    rms = float(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)).max())
    return -math.inf if rms == 0 else 20 * math.log10(rms)


def inspect_audio(path: str | Path, max_decode_seconds: float | None = None) -> AudioInfo:
    """Return the facts of a recording; raise UserFileError when it cannot be decoded.

    A file whose header says it is longer than `max_decode_seconds` is not decoded (a two-hour
    recording would fill memory only to be rejected); its loudness is then NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise UserFileError("audio file not found", where=str(path), fix="check the path")
    header = _header(path)
    digest = sha256_file(path)
    if header is not None and max_decode_seconds is not None and header[0] > max_decode_seconds:
        seconds, rate, channels = header
        return AudioInfo(str(path), digest, rate, channels, seconds, math.nan)
    samples, rate, channels = read_audio(path)
    return AudioInfo(
        str(path), digest, rate, channels, len(samples) / rate, peak_dbfs(samples, rate)
    )


def _header(path: Path) -> tuple[float, int, int] | None:
    """Return (seconds, rate, channels) from the file header, or None when it cannot be read."""
    try:
        import soundfile

        info = soundfile.info(str(path))
        return info.frames / info.samplerate, int(info.samplerate), int(info.channels)
    except Exception:
        return None


def audio_problems(info: AudioInfo, limits: AudioLimits) -> list[tuple[str, str, str]]:
    """Return (category, message, severity) for each way `info` breaks `limits`."""
    problems = []
    if info.sample_rate < MIN_SOURCE_RATE:
        problems.append(
            ("low_sample_rate", f"{info.sample_rate} Hz is below {MIN_SOURCE_RATE} Hz", "error")
        )
    elif info.sample_rate != TARGET_RATE:
        problems.append(
            (
                "resampled",
                f"{info.sample_rate} Hz, resampled to {TARGET_RATE} Hz when used",
                "warning",
            )
        )
    if info.seconds < limits.min_seconds:
        problems.append(
            ("too_short_audio", f"{info.seconds:.2f} s < min {limits.min_seconds} s", "error")
        )
    if info.seconds > limits.max_seconds:
        problems.append(
            ("too_long_audio", f"{info.seconds:.1f} s > max {limits.max_seconds} s", "error")
        )
    if not math.isnan(info.peak_dbfs) and info.peak_dbfs < limits.silence_dbfs:
        problems.append(
            (
                "silent_audio",
                f"loudest 50 ms is {info.peak_dbfs:.0f} dBFS (< {limits.silence_dbfs})",
                "error",
            )
        )
    return problems
