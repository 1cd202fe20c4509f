"""Audio decoding, resampling and the checks a speech row must pass."""

import math
import wave

import numpy as np
import pytest
import soundfile

from specialize.data.audio import AudioLimits, audio_problems, inspect_audio, load_audio, read_audio
from specialize.data.records import detect_kind
from specialize.errors import UserFileError


def tone(seconds: float, rate: int, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_stereo_44k_is_mixed_down_and_resampled_to_16k(tmp_path):
    stereo = np.stack([tone(1.0, 44100), tone(1.0, 44100)], axis=1)
    soundfile.write(tmp_path / "s.flac", stereo, 44100)
    samples, rate, channels = read_audio(tmp_path / "s.flac")
    assert rate == 44100 and channels == 2 and samples.ndim == 1
    resampled = load_audio(tmp_path / "s.flac")
    assert abs(len(resampled) - 16000) <= 1
    assert math.isclose(float(np.sqrt((resampled**2).mean())), 0.3 / math.sqrt(2), rel_tol=0.05)


def test_stdlib_wave_file_decodes(tmp_path):
    with wave.open(str(tmp_path / "w.wav"), "wb") as handle:
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(16000)
        handle.writeframes((tone(0.5, 16000) * 32767).astype("<i2").tobytes())
    assert len(load_audio(tmp_path / "w.wav")) == 8000


def test_problems_name_rate_duration_and_silence(tmp_path):
    soundfile.write(tmp_path / "quiet.wav", tone(1.0, 16000, amplitude=1e-4), 16000)
    soundfile.write(tmp_path / "long.wav", tone(3.0, 22050), 22050)
    limits = AudioLimits(min_seconds=0.2, max_seconds=2.0, silence_dbfs=-50)
    quiet = {p[0] for p in audio_problems(inspect_audio(tmp_path / "quiet.wav"), limits)}
    long = {p[0]: p[2] for p in audio_problems(inspect_audio(tmp_path / "long.wav", 2.0), limits)}
    assert quiet == {"silent_audio"}
    assert long == {"resampled": "warning", "too_long_audio": "error"}


def test_undecodable_and_missing_files_raise_named_errors(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(UserFileError, match="cannot decode"):
        read_audio(tmp_path / "x.wav")
    with pytest.raises(UserFileError, match="not found"):
        inspect_audio(tmp_path / "nope.wav")


def test_speech_rows_are_detected_in_both_layouts():
    assert detect_kind({"audio": "a.wav", "text": "hi"}) == "speech"
    assert detect_kind({"file_name": "a.wav", "transcription": "hi"}) == "speech"
    assert detect_kind({"text": "hi"}) == "text"


def test_audio_parts_in_chat_rows_are_decoded_and_checked(tmp_path):
    from specialize.data.records import RowChecker

    soundfile.write(tmp_path / "q.wav", tone(1.0, 16000), 16000)
    soundfile.write(tmp_path / "hush.wav", np.zeros(16000, dtype=np.float32), 16000)

    def chat(audio: str) -> dict:
        return {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "audio", "path": audio},
                        {"type": "text", "text": "What did I say?"},
                    ],
                },
                {"role": "assistant", "content": "A question."},
            ]
        }

    good = RowChecker("multimodal", "f.jsonl:1", tmp_path)
    assert good.convert(chat("q.wav"))["audios"] == [str(tmp_path / "q.wav")]
    silent = RowChecker("multimodal", "f.jsonl:2", tmp_path)
    assert silent.convert(chat("hush.wav")) is None
    assert "dBFS" in silent.defects[0].message and silent.defects[0].field.endswith(
        "content[0].path"
    )
