"""Bad input through every door (docs/ERRORS.md): a corpus of broken and odd-but-valid data files run through
`higgs-ds validate` and the seeds' `train.py --train_data F --validate_data_only`; each broken file gets one clean
message naming the file and line and exit code 65, each valid one exit 0; never a traceback."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from higgs_ds.cli import main as cli_main
from higgs_ds.data.samples import voice_cloning_sample
from higgs_ds.data.synthetic import speech_like
from higgs_ds.errors import EXIT_DATA, EXIT_NOINPUT
from higgs_ds.train import main as train_main
from tests.helpers import PYTHON, ROOT


def _wav(path, wave):
    sf.write(path, wave, 24000, subtype="FLOAT")
    return os.path.basename(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """{name: (path, expected line of the problem or None for a valid file, kind or, for a valid file, the number of
    samples it holds)}."""
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    ref, tgt = _wav(d / "ref.wav", speech_like(rng, 1.0)), _wav(d / "tgt.wav", speech_like(rng, 1.2))
    nan = speech_like(rng, 1.0)
    nan[100:200] = np.nan
    bad_wav = _wav(d / "nan.wav", nan)
    good = json.dumps(voice_cloning_sample(ref, "The reference.", tgt, "The target."))
    unanswered = voice_cloning_sample(ref, "The reference.", tgt, "The target.")
    unanswered["messages"].append({"role": "user", "content": "And now this, please."})
    four = voice_cloning_sample(ref, "r", tgt, "t")
    four = {"messages": four["messages"][:4], "start_index": 2}  # the seeds' form, trailing user turn unanswered
    files = {
        "empty": (b"", 0, "empty_data"),
        "blank_lines_only": (b"\n\n  \n", 0, "empty_data"),
        "malformed_json": ((good + "\n{oops\n").encode(), 2, "json"),
        "nan_audio": (json.dumps(voice_cloning_sample(ref, "r", bad_wav, "t")).encode() + b"\n", 1, "nonfinite_audio"),
        "unanswered_turn": ((good + "\n" + json.dumps(unanswered) + "\n").encode(), 2, "unanswered_turn"),
        "four_message_form": (json.dumps(four).encode() + b"\n", 1, "unanswered_turn"),
        "missing_audio": (json.dumps(voice_cloning_sample(ref, "r", "nope.wav", "t")).encode() + b"\n", 1,
                          "missing_audio"),
        "not_utf8": ((good + "\n").encode() + b'{"x": "\xff"}\n', 2, "encoding"),
        "bom": (b"\xef\xbb\xbf" + (good + "\n" + good + "\n").encode(), None, 2),
        "crlf": ((good + "\r\n" + good + "\r\n" + good + "\r\n").encode(), None, 3),
        "bom_crlf_blank_lines": (b"\xef\xbb\xbf" + (good + "\r\n\r\n" + good + "\r\n").encode(), None, 2),
    }
    out = {}
    for name, (content, line, kind) in files.items():
        path = d / f"{name}.jsonl"
        path.write_bytes(content)
        out[name] = (str(path), line, kind)
    list_path = d / "bom_list.json"
    list_path.write_bytes(b"\xef\xbb\xbf" + json.dumps([json.loads(good)] * 4).encode())
    out["bom_json_list"] = (str(list_path), None, 4)
    return out


def _check(rc, err, path, line, kind, logged=""):
    """`logged`: where the command's log went (the CLI logs to stderr, train.py to stdout)."""
    assert "Traceback" not in err, err
    if line is None:
        assert rc == 0, err
        n = kind  # every sample of the odd-but-valid file was read, and each one is good
        assert f"data: {n} samples read, {n} ok, 0 bad;" in logged, logged
        return
    assert rc == EXIT_DATA, (rc, err)
    assert err.count("error:") == 1 and err.startswith("error:"), err
    assert f"{path}:{line}" in err or (line == 0 and f"{path}: no samples" in err), err
    assert kind in err or kind == "empty_data", err


NAMES = ["empty", "blank_lines_only", "malformed_json", "nan_audio", "unanswered_turn", "four_message_form",
         "missing_audio", "not_utf8", "bom", "crlf", "bom_crlf_blank_lines", "bom_json_list"]


@pytest.mark.parametrize("name", NAMES)
def test_higgs_ds_validate(corpus, name, capsys):
    path, line, kind = corpus[name]
    rc = cli_main(["validate", "--data", path])
    err = capsys.readouterr().err
    _check(rc, err, path, line, kind, err)


@pytest.mark.parametrize("name", NAMES)
def test_train_py_validate_data_only(corpus, name, capsys):
    path, line, kind = corpus[name]
    rc = train_main(["--train_data", path, "--validate_data_only"])
    captured = capsys.readouterr()
    _check(rc, captured.err, path, line, kind, captured.out)


def test_debug_shows_the_traceback(corpus):
    with pytest.raises(Exception, match="malformed JSON"):
        cli_main(["validate", "--data", corpus["malformed_json"][0], "--debug"])


def test_missing_paths_are_user_errors(tmp_path, capsys):
    assert cli_main(["validate", "--data", str(tmp_path / "x.jsonl"), "--tokenizer_path", str(tmp_path / "no")]) \
        == EXIT_NOINPUT
    assert "--tokenizer_path: directory not found" in capsys.readouterr().err
    assert train_main(["--train_data", str(tmp_path / "x.jsonl"), "--validate_data_only",
                       "--model_path", str(tmp_path / "nomodel")]) == EXIT_NOINPUT
    err = capsys.readouterr().err
    assert err.startswith("error: --model_path: directory not found") and "Traceback" not in err


@pytest.mark.parametrize("form", ["train.py", "higgs-ds"])
def test_real_processes_exit_cleanly_without_the_model_stack(corpus, form):
    """As a user runs them: one message, exit 65, and validation imports neither DeepSpeed nor the model."""
    path = corpus["unanswered_turn"][0]
    probe = ("import runpy, sys; sys.argv = {argv!r}; "
             "rc = 0\ntry: runpy.run_path({script!r}, run_name='__main__')\n"
             "except SystemExit as e: rc = e.code\n"
             "bad = [m for m in ('deepspeed', 'boson_multimodal.model.higgs_audio', 'peft') if m in sys.modules]\n"
             "print('LOADED', bad, file=sys.stderr); sys.exit(rc)")
    if form == "train.py":
        script, argv = os.path.join(ROOT, "higgs_ds", "train.py"), ["train.py", "--train_data", path,
                                                                    "--validate_data_only"]
    else:
        script = os.path.join(os.path.dirname(PYTHON), "higgs-ds")
        argv = ["higgs-ds", "validate", "--data", path]
    proc = subprocess.run([sys.executable, "-c", probe.format(argv=argv, script=script)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == EXIT_DATA, proc.stderr
    assert "Traceback" not in proc.stderr and f"{path}:2" in proc.stderr
    assert "LOADED []" in proc.stderr, proc.stderr


@pytest.mark.parametrize("argv, code, says", [
    (["export", "--checkpoint", "/nonexistent/run", "--output", "/tmp/x"], EXIT_NOINPUT, "--checkpoint"),
    (["generate", "--model_path", "/nonexistent/model", "--audio_tokenizer_path", "/nonexistent/at",
      "--ref_audio", __file__, "--ref_text", "r", "--text", "t"], EXIT_NOINPUT, "--model_path"),
    (["evaluate", "--data", "/nonexistent/val.jsonl"], EXIT_DATA, "/nonexistent/val.jsonl: data file not found"),
])
def test_other_doors(argv, code, says, capsys):
    assert cli_main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("error:") and says in err and "Traceback" not in err, err


def test_generate_requests_file_errors_name_the_line(tmp_path, capsys):
    req = tmp_path / "req.jsonl"
    (tmp_path / "a.wav").write_bytes(b"")  # the request reader only checks that the file exists
    req.write_text('{"ref_audio": "a.wav", "ref_text": "r", "text": "t"}\n{"ref_audio": "a.wav"}\n')
    assert cli_main(["generate", "--model_path", "m", "--audio_tokenizer_path", "a", "--requests", str(req)]) \
        == EXIT_DATA
    assert f"{req}:2: missing or non-string field(s): ref_text, text" in capsys.readouterr().err
