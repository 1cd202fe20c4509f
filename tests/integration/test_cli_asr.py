"""Speech end to end on a tiny random Whisper: synthesised Nordvik speech, data prepare, train
(method asr) through the CLI, resume, eval.json with WER per item, transcribe, speech rows' defects.

One module-scope run is shared by the assertions; the real model is not used here.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "nordvik" / "speech"


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    from specialize.models.tiny import save_tiny_whisper

    return save_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"), seed=1)


@pytest.fixture(scope="module")
def speech_data(tmp_path_factory) -> Path:
    """The shipped example's generator, small: 10 train/val and 3 test utterances."""
    folder = tmp_path_factory.mktemp("nordvik-speech")
    data = folder / "data"
    subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "generate.py"),
            "--out",
            str(data),
            "--train",
            "10",
            "--test",
            "3",
            "--questions",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    config = yaml.safe_load((EXAMPLE / "data.yaml").read_text())
    config["model"] = None
    (folder / "data.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture(scope="module")
def trained(tiny_whisper: Path, speech_data: Path, tmp_path_factory) -> dict:
    """Prepare the data and train 4 steps through the CLI; return paths and outputs."""
    from specialize.cli.main import main

    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPECIALIZE_HOME", str(home))
        patch.setenv("HF_HUB_OFFLINE", "1")
        prepared = speech_data / "prepared"
        assert (
            main(["data", "prepare", str(speech_data / "data.yaml"), "--out", str(prepared)]) == 0
        )
        recipe = {
            "model": str(tiny_whisper),
            "method": "asr",
            "data": {"train": [str(prepared)]},
            "adaptation": {"kind": "lora", "lora": {"r": 4, "alpha": 8}},
            "training": {
                "max_steps": 4,
                "batch_size": 4,
                "learning_rate": 3e-3,
                "max_length": 48,
                "seed": 3,
            },
            "eval": {"every_steps": 2, "patience": None},
            # General real speech is measured at each evaluation (the probe) and before/after.
            "retention": {"suite": "core", "budget_points": 1000},
            "output": {"dir": str(speech_data / "run")},
        }
        (speech_data / "asr.yaml").write_text(yaml.safe_dump(recipe))
        code = main(["train", str(speech_data / "asr.yaml"), "--no-progress"])
        return {"code": code, "run": speech_data / "run", "prepared": prepared, "home": home}


def test_prepare_counts_recordings_and_keeps_test_voice_apart(trained) -> None:
    manifest = json.loads((trained["prepared"] / "manifest.json").read_text())
    assert manifest["counts"]["kept_by_split"]["test"] == 3
    assert manifest["audio"]["test"]["recordings"] == 3
    assert manifest["audio"]["train"]["sample_rates"] == {
        "22050": manifest["audio"]["train"]["recordings"]
    }
    assert manifest["counts"]["warnings_by_category"]["resampled"] >= 13
    test_rows = [
        json.loads(line) for line in (trained["prepared"] / "test.jsonl").read_text().splitlines()
    ]
    train_rows = [
        json.loads(line) for line in (trained["prepared"] / "train.jsonl").read_text().splitlines()
    ]
    assert {r["voice"].split("+")[0] for r in test_rows} == {"en-029"}
    assert not {r["audio_sha256"] for r in test_rows} & {r["audio_sha256"] for r in train_rows}
    assert "Recordings" in (trained["prepared"] / "report.html").read_text()


def test_asr_run_directory_adapter_and_eval(trained) -> None:
    assert trained["code"] == 0
    run = trained["run"]
    for name in (
        "config.yaml",
        "env.json",
        "run.json",
        "metrics.jsonl",
        "report.html",
        "adapter/adapter_config.json",
        "adapter/preprocessor_config.json",
        "eval.json",
    ):
        assert (run / name).is_file(), name
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(m["loss"]) for m in metrics if "loss" in m)
    assert any("val_loss" in m for m in metrics)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["adapter_name"]
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["metric"] == "wer" and len(evaluation["items"]) == 3
    wer = evaluation["summary"]["tuned"]["wer"]
    assert wer["n"] == 3 and wer["ci95"][0] <= wer["mean"] <= wer["ci95"][1]
    item = evaluation["items"][0]
    assert {"reference", "hypothesis", "base_hypothesis", "wer", "audio"} <= set(item)
    assert [p["step"] for p in record["speech_probe"]] == [2, 4]
    # Each probed checkpoint carries its verdict, so the choice is the text recipes' one.
    assert any("probe_general_wer" in m for m in metrics)
    chosen = record["outcome"]["chosen"]
    assert "within the retention budget" in chosen["why"], chosen
    assert "general-speech WER" in chosen["why"] and chosen["probe"]["within_budget"]
    retention = json.loads((run / "speech_retention.json").read_text())
    assert len(retention["items"]) == 10 and retention["per_item_delta"]["n"] == 10
    assert record["outcome"]["retention"]["verdict"] in ("kept", "forgot")
    assert record["outcome"]["test_wer"]["verdict"] in (
        "improved",
        "regressed",
        "no significant change",
    )


def test_lora_changed_only_the_adapter(trained, tiny_whisper: Path) -> None:
    from safetensors.torch import load_file

    adapter = load_file(trained["run"] / "adapter" / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert any(float(t.abs().sum()) > 0 for k, t in adapter.items() if "lora_B" in k)


def test_resume_continues_from_the_last_checkpoint(trained, tmp_path: Path, monkeypatch) -> None:
    from specialize.cli.main import main

    monkeypatch.setenv("SPECIALIZE_HOME", str(trained["home"]))
    copy = tmp_path / "run"
    shutil.copytree(trained["run"], copy)
    checkpoints = sorted((copy / "checkpoints").glob("checkpoint-*"))
    assert checkpoints
    for later in checkpoints[1:]:
        shutil.rmtree(later)  # as if killed after the first checkpoint
    assert main(["train", "--resume", str(copy), "--no-progress"]) == 0
    record = json.loads((copy / "run.json").read_text())
    assert record["status"] == "finished" and record["outcome"]["steps"] == 4


def test_transcribe_command_with_adapter(trained, speech_data: Path, cli, tiny_whisper) -> None:
    wav = sorted((speech_data / "data" / "audio").glob("test-*.wav"))[0]
    code, out, err = cli(
        "transcribe", wav, "--model", tiny_whisper, "--adapter", trained["run"], "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["file"] == str(wav) and isinstance(result["text"], str) and result["seconds"] > 0


def test_bad_recordings_are_named_defects(cli, tmp_path: Path) -> None:
    soundfile.write(
        tmp_path / "ok.wav", np.sin(np.linspace(0, 800, 16000)).astype(np.float32) * 0.3, 16000
    )
    soundfile.write(tmp_path / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    soundfile.write(tmp_path / "long.wav", np.full(16000 * 40, 0.1, dtype=np.float32), 16000)
    soundfile.write(tmp_path / "low.wav", np.full(4000 * 2, 0.1, dtype=np.float32), 4000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    rows = [
        {"audio": "ok.wav", "text": "a tone"},
        {"audio": "silent.wav", "text": "nothing"},
        {"audio": "long.wav", "text": "too long"},
        {"audio": "low.wav", "text": "low rate"},
        {"audio": "corrupt.wav", "text": "broken"},
        {"audio": "absent.wav", "text": "missing"},
        {"audio": "ok.wav", "text": "   "},
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "data.yaml").write_text(
        "sources: [{path: rows.jsonl, split: train}]\nmodel: null\n"
    )
    code, out, err = cli("data", "prepare", tmp_path / "data.yaml", "--out", tmp_path / "out")
    assert code == 0, err
    rejects = {
        json.loads(line)["where"].rsplit(":", 1)[1]: json.loads(line)
        for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()
    }
    assert {k: v["reason"] for k, v in rejects.items()} == {
        "2": "silent_audio",
        "3": "too_long_audio",
        "4": "low_sample_rate",
        "5": "unreadable_media",
        "6": "missing_media",
        "7": "empty_content",
    }
    assert (
        "rows.jsonl:3" in rejects["3"]["where"] and "40.0 s > max 30.0 s" in rejects["3"]["detail"]
    )


@pytest.fixture(scope="module")
def speech_server(trained, tiny_whisper: Path):
    """The audio endpoint on a real uvicorn server: base tiny Whisper + the trained adapter."""
    import socket
    import threading
    import time

    import uvicorn

    from specialize.serve.app import create_app
    from specialize.serve.audio_api import AudioLimits, SpeechHost

    host = SpeechHost(str(tiny_whisper), {"nordvik": str(trained["run"])})
    app = create_app(speech=(host, AudioLimits(max_bytes=400_000, max_seconds=8, api_key="k")))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


def test_openai_client_transcribes_with_base_and_adapter(speech_server, speech_data: Path) -> None:
    import openai

    client = openai.OpenAI(base_url=speech_server, api_key="k")
    wav = sorted((speech_data / "data" / "audio").glob("test-*.wav"))[0]
    with open(wav, "rb") as handle:
        plain = client.audio.transcriptions.create(model="base", file=handle)
    assert isinstance(plain.text, str)
    with open(wav, "rb") as handle:
        text = client.audio.transcriptions.create(
            model="nordvik", file=handle, response_format="text"
        )
    assert isinstance(text, str)
    with open(wav, "rb") as handle:
        verbose = client.audio.transcriptions.create(
            model="nordvik", file=handle, response_format="verbose_json"
        )
    assert verbose.duration > 0.5 and len(verbose.segments) == 1


def test_audio_endpoint_refuses_bad_uploads(speech_server, tmp_path: Path) -> None:
    import openai

    client = openai.OpenAI(base_url=speech_server, api_key="k", max_retries=0)
    (tmp_path / "notes.wav").write_text("this is not audio")
    soundfile.write(tmp_path / "long.wav", np.full(8000 * 12, 0.1, dtype=np.float32), 8000)
    soundfile.write(
        tmp_path / "big.wav", np.full(16000 * 7, 0.1, dtype=np.float32), 16000, subtype="FLOAT"
    )
    cases = [
        ("notes.wav", "base", 400),
        ("long.wav", "base", 413),
        ("big.wav", "base", 413),
        ("long.wav", "../etc", 404),
    ]
    for name, model, status in cases:
        with pytest.raises(openai.APIStatusError) as caught, open(tmp_path / name, "rb") as handle:
            client.audio.transcriptions.create(model=model, file=handle)
        assert caught.value.status_code == status, name
    wrong_key = openai.OpenAI(base_url=speech_server, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError), open(tmp_path / "long.wav", "rb") as handle:
        wrong_key.audio.transcriptions.create(model="base", file=handle)


def test_cascade_scores_spoken_beside_typed(
    cli, tiny_whisper: Path, tiny_model_dir: Path, speech_data: Path, tmp_path: Path
) -> None:
    spoken = speech_data / "data" / "spoken_test.jsonl"  # the generator voiced 2 policy questions
    rows = [json.loads(line) for line in spoken.read_text().splitlines()]
    assert len(rows) == 2 and all((spoken.parent / r["audio"]).is_file() for r in rows)
    code, out, err = cli(
        "cascade",
        spoken,
        "--model",
        tiny_model_dir,
        "--speech-model",
        tiny_whisper,
        "--metric",
        "contains",
        "--out",
        tmp_path / "cascade.json",
        "--json",
    )
    assert code == 0, err
    result = json.loads((tmp_path / "cascade.json").read_text())
    assert json.loads(out) == result  # --json prints cascade.json's content, nothing else
    assert result["question_wer"]["n"] == 2 and result["spoken_minus_typed"]["contains"]["n"] == 2
    assert result["typed"]["contains"]["n"] == 2 and len(result["items"]) == 2
    item = result["items"][0]
    assert item["question"] == rows[0]["messages"][1]["content"] and isinstance(
        item["transcript"], str
    )
    assert "question_wer" in out and "typed" in out


def test_eval_scores_a_speech_adapter_beside_its_base(
    trained, cli, tiny_whisper: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("SPECIALIZE_HOME", str(trained["home"]))
    test_split = trained["prepared"] / "test.jsonl"
    out = tmp_path / "eval.json"
    # The base comes from the run's own recipe; --model is not needed.
    code, stdout, err = cli("eval", "--adapter", trained["run"], "--data", test_split, "--out", out)
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["metric"] == "wer" and report["model"] == str(tiny_whisper)
    for system in ("base", "tuned"):
        wer = report["summary"][system]["wer"]
        assert wer["n"] == 3 and wer["ci95"][0] <= wer["mean"] <= wer["ci95"][1]
    change = report["summary"]["change"]
    assert change["per_item_delta"]["n"] == 3 and change["corpus_delta"]["n"] == 3
    tuned, base = report["summary"]["tuned"]["wer"], report["summary"]["base"]["wer"]
    assert math.isclose(change["corpus_delta"]["delta"], tuned["mean"] - base["mean"])
    assert len(report["items"]) == 3
    assert {"reference", "hypothesis", "base_hypothesis", "wer", "base_wer"} <= set(
        report["items"][0]
    )
    # The same numbers as the training run's own eval.json (same items, same greedy decoding).
    trained_eval = json.loads((trained["run"] / "eval.json").read_text())
    assert [i["hypothesis"] for i in trained_eval["items"]] == [
        i["hypothesis"] for i in report["items"]
    ]
    assert "WER" in stdout and "paired bootstrap" in stdout and "significant" in stdout

    # By its registered name, as JSON.
    name = json.loads((trained["run"] / "run.json").read_text())["adapter_name"]
    code, stdout, err = cli(
        "eval", "--adapter", name, "--data", test_split, "--out", tmp_path / "e2.json", "--json"
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["summary"]["tuned"]["wer"] == tuned and "items" not in summary


def test_eval_scores_the_base_speech_model_alone(
    cli, tiny_whisper: Path, trained, tmp_path
) -> None:
    out = tmp_path / "eval.json"
    code, stdout, err = cli(
        "eval", "--model", tiny_whisper, "--data", trained["prepared"] / "test.jsonl", "--out", out
    )
    assert code == 0, err
    report = json.loads(out.read_text())
    assert set(report["summary"]) == {"base"} and report["summary"]["base"]["wer"]["n"] == 3
    assert all("hypothesis" in item for item in report["items"])


def test_eval_names_rows_a_speech_model_cannot_score(
    cli, tiny_whisper: Path, tiny_model_dir: Path, trained, tmp_path: Path
) -> None:
    typed = tmp_path / "typed.jsonl"
    typed.write_text(json.dumps({"question": "Opening hours?", "answer": "Nine to five"}) + "\n")
    code, _, err = cli("eval", "--model", tiny_whisper, "--data", typed)
    assert code != 0 and "typed.jsonl:1" in err and "audio" in err
    assert len(err.strip().splitlines()) <= 4 and "Traceback" not in err

    rows = [
        json.loads(line) for line in (trained["prepared"] / "test.jsonl").read_text().splitlines()
    ]
    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        json.dumps({"audio": rows[0]["audio"], "text": rows[0]["text"]})
        + "\n"
        + json.dumps({"audio": "gone.wav", "text": "where did it go"})
        + "\n"
        + json.dumps({"audio": rows[1]["audio"], "text": ""})
        + "\n"
    )
    code, _, err = cli("eval", "--adapter", trained["run"], "--data", broken)
    assert code != 0 and "broken.jsonl:2" in err and "broken.jsonl:3" in err
    code, _, err = cli("eval", "--model", tiny_whisper, "--suite", "core")
    assert code != 0 and "--data" in err
    # Spoken rows given to a text model: named, with the models that score them.
    code, _, err = cli(
        "eval", "--model", tiny_model_dir, "--data", trained["prepared"] / "test.jsonl"
    )
    assert code != 0 and "test.jsonl:1" in err and "is a text model" in err and "cascade" in err


@pytest.fixture(scope="module")
def main_server(trained, tiny_whisper: Path, tiny_model_dir: Path, tmp_path_factory):
    """`specialize serve` in its own process: the tiny text model, plus speech (the trained
    adapter by NAME=RUN, its base from the run's recipe) on /v1/audio/transcriptions."""
    import os
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("main-serve")
    command = [
        *(sys.executable, "-m", "specialize.cli.main", "serve", "--model", str(tiny_model_dir)),
        *("--speech-adapter", f"nordvik={trained['run']}", "--api-key", "k"),
        *("--port", str(port), "--max-audio-mb", "1.5", "--max-audio-seconds", "25"),
    ]
    env = os.environ | {"SPECIALIZE_HOME": str(folder / "home"), "HF_HUB_OFFLINE": "1"}
    with (folder / "serve.log").open("w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                break
        except OSError:
            assert server.poll() is None, (folder / "serve.log").read_text()
            assert time.monotonic() < deadline, (folder / "serve.log").read_text()
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}/v1", folder / "serve.log"
    server.terminate()
    server.wait(15)


def test_main_serve_hosts_text_and_speech_behind_one_key(main_server, speech_data: Path) -> None:
    import openai

    url, log = main_server
    client = openai.OpenAI(base_url=url, api_key="k", max_retries=0)
    chat = client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert chat.choices[0].message.content is not None
    wav = sorted((speech_data / "data" / "audio").glob("test-*.wav"))[0]
    for model in ("base", "nordvik"):
        with open(wav, "rb") as handle:
            result = client.audio.transcriptions.create(
                model=model, file=handle, response_format="verbose_json"
            )
        assert isinstance(result.text, str) and result.duration > 0.5, model
    wrong = openai.OpenAI(base_url=url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError), open(wav, "rb") as handle:
        wrong.audio.transcriptions.create(model="base", file=handle)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="base", messages=[{"role": "user", "content": "Hi"}])


def test_main_serve_audio_route_has_its_own_size_and_duration_limits(
    main_server, tmp_path: Path
) -> None:
    import openai

    url, log = main_server
    client = openai.OpenAI(base_url=url, api_key="k", max_retries=0)
    # 1.28 MB of audio (20 s, float32): over the JSON routes' 1 MB, under the audio route's 1.5 MiB.
    tone = np.sin(np.linspace(0, 20 * 2 * np.pi * 220, 16000 * 20)).astype(np.float32) * 0.2
    soundfile.write(tmp_path / "twenty.wav", tone, 16000, subtype="FLOAT")
    assert 1_000_000 < (tmp_path / "twenty.wav").stat().st_size < 1.5 * 2**20
    with open(tmp_path / "twenty.wav", "rb") as handle:
        assert isinstance(client.audio.transcriptions.create(model="base", file=handle).text, str)
    # The JSON routes keep their 1 MB limit.
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "x" * 1_100_000}], max_tokens=1
        )
    assert caught.value.status_code == 413
    # 13 s (under the 25 s limit) in float64: 1.66 MB, over 1.5 MiB.
    soundfile.write(tmp_path / "big.wav", tone[: 16000 * 13], 16000, subtype="DOUBLE")
    soundfile.write(tmp_path / "long.wav", np.tile(tone, 2)[: 16000 * 30], 16000)  # 0.96 MB, 30 s
    (tmp_path / "notes.wav").write_text("not a recording")
    cases = (("big.wav", 413, "bytes"), ("long.wav", 413, "25 s"), ("notes.wav", 400, "readable"))
    for name, status, words in cases:
        with pytest.raises(openai.APIStatusError) as caught, open(tmp_path / name, "rb") as handle:
            client.audio.transcriptions.create(model="base", file=handle)
        assert caught.value.status_code == status, (name, caught.value.message)
        assert words in caught.value.message, (name, caught.value.message)
    with pytest.raises(openai.NotFoundError), open(tmp_path / "long.wav", "rb") as handle:
        client.audio.transcriptions.create(model="nobody", file=handle)


def test_main_serve_refuses_a_text_adapter_as_speech(cli, trained, tiny_model_dir) -> None:
    code, _, err = cli(
        "serve", "--model", tiny_model_dir, "--speech-adapter", f"x={tiny_model_dir}"
    )
    assert code != 0 and "not a speech adapter" in err


def test_ladder_climbs_on_spoken_questions(
    cli, tiny_whisper: Path, tiny_model_dir: Path, speech_data: Path, tmp_path: Path
) -> None:
    spoken = speech_data / "data" / "spoken_test.jsonl"
    config = {
        "model": str(tiny_model_dir),
        "tasks": [{"name": "policy", "data": str(spoken), "max_new_tokens": 4}],
        "rungs": ["base"],
        "speech": {"model": str(tiny_whisper)},
    }
    (tmp_path / "ladder.yaml").write_text(yaml.safe_dump(config))
    code, out, err = cli("ladder", tmp_path / "ladder.yaml", "--out", tmp_path / "ladder")
    assert code == 0, err
    report = json.loads((tmp_path / "ladder" / "ladder.json").read_text())
    wer = report["speech"]["question_wer"]["policy"]
    assert wer["n"] == 2 and wer["ci95"][0] <= wer["mean"] <= wer["ci95"][1]
    assert report["tasks"]["policy"]["rungs"]["base"]["score"]["n"] == 2
    # The rung was asked what the speech model heard, not the typed question.
    rung = json.loads((tmp_path / "ladder" / "rungs" / "base" / "eval.json").read_text())
    asked = [row["prompt"][-1]["content"] for row in rung["tasks"]["policy"]["items"]]
    typed = [json.loads(line)["messages"][1]["content"] for line in spoken.read_text().splitlines()]
    assert asked != typed and "question WER" in out

    # Rows without recordings are named.
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"question": "Opening hours?", "answer": "nine"}) + "\n")
    config["tasks"][0]["data"] = str(plain)
    (tmp_path / "ladder.yaml").write_text(yaml.safe_dump(config))
    code, _, err = cli("ladder", tmp_path / "ladder.yaml", "--out", tmp_path / "ladder2")
    assert code != 0 and "no 'audio' field" in err and "plain.jsonl" in err
