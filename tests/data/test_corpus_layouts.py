"""Corpora laid out exactly as they ship (docs/DATA.md, "Sources"), built here from real espeak-ng speech: each
source finds the right speakers, pairs every target with another utterance of the same speaker, and loses
nothing. The truth is kept apart from the layouts: every file written is registered by the sha256 of its bytes
with the voice and sentence it holds."""
import hashlib
import io
import json
import os
import subprocess
import tarfile

import numpy as np
import pytest
import soundfile as sf

from higgs_ds.data.sources import open_sources
from higgs_ds.errors import DataError, UnknownLayout

from .espeak import SENTENCES, VOICES, espeak_speech

SENTENCES = SENTENCES[:3]


def _sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return espeak_speech(tmp_path_factory.mktemp("espeak"), len(SENTENCES))


class Truth:
    """What each written file holds: {sha256 of its bytes: (voice, sentence)}."""

    def __init__(self, speech):
        self.speech, self.by_hash = speech, {}

    def audio(self, v, s, fmt="WAV", rate=None):
        """The bytes of utterance (v, s) in `fmt` (resampled by index to `rate` when given), registered."""
        wav, sr = self.speech[(v, s)]
        if rate:
            wav = np.interp(np.arange(int(len(wav) * rate / sr)) * sr / rate, np.arange(len(wav)), wav)
        buf = io.BytesIO()
        sf.write(buf, wav.astype(np.float32), rate or sr, format=fmt)
        self.by_hash[_sha(buf.getvalue())] = (v, s)
        return buf.getvalue()

    def write(self, path, v, s, **kw):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(self.audio(v, s, **kw))

    def of(self, path):
        with open(path, "rb") as f:
            return self.by_hash[_sha(f.read())]


def _read(path):
    (src,) = open_sources([path])
    items = list(src.iter_items())
    return type(src).__name__, [i for i in items if not isinstance(i, DataError)], \
        [i for i in items if isinstance(i, DataError)]


def _check_pairs(truth, samples, speaker_of_voice):
    """Every sample: reference and target of one voice, two different sentences, labelled with that voice's
    speaker id; returns the (voice, sentence) of the targets."""
    targets = []
    for it in samples:
        m = it.sample.messages
        ref, tgt = truth.of(m[2].content.audio_url), truth.of(m[4].content.audio_url)
        assert ref[0] == tgt[0] and ref[1] != tgt[1], (it.where, ref, tgt)
        assert it.sample.speaker == speaker_of_voice[tgt[0]]
        assert m[3].content.text == SENTENCES[tgt[1]] and m[1].content.text == SENTENCES[ref[1]]
        targets.append(tgt)
    return targets


ALL = sorted((v, s) for v in range(len(VOICES)) for s in range(len(SENTENCES)))

# LibriTTS: speaker ids and two chapters per speaker; voice 2's speaker is in another subset
LTTS_SPK, LTTS_SUBSET = {0: "19", 1: "26", 2: "87"}, {0: "train-clean-100", 1: "train-clean-100", 2: "dev-clean"}


@pytest.fixture(scope="module")
def libritts(tmp_path_factory, speech):
    truth, root = Truth(speech), tmp_path_factory.mktemp("ltts") / "LibriTTS_R"
    root.mkdir()
    for name in ("SPEAKERS.txt", "CHAPTERS.txt", "BOOKS.txt", "LICENSE.txt", "NOTE.txt", "speakers.tsv",
                 "reader_book.tsv"):
        (root / name).write_text("; metadata\n")
    for v, s in ALL:
        spk, chap = LTTS_SPK[v], str(100 + 10 * int(v) + (s % 2))
        d = root / LTTS_SUBSET[v] / spk / chap
        uid = f"{spk}_{chap}_{s:06d}_000001"
        truth.write(str(d / f"{uid}.wav"), v, s, rate=24000)
        (d / f"{uid}.normalized.txt").write_text(SENTENCES[s])
        (d / f"{uid}.original.txt").write_text(SENTENCES[s].upper())
        with open(d / f"{spk}_{chap}.trans.tsv", "a") as f:
            f.write(f"{uid}\t{SENTENCES[s]}\t{SENTENCES[s]}\n")
        (d / f"{spk}_{chap}.book.tsv").write_text("book\n")
    return truth, root


@pytest.mark.parametrize("level", ["root", "subset", "speaker"])
def test_libritts_at_its_root_a_subset_or_a_speaker_dir(libritts, level):
    truth, root = libritts
    path = {"root": root, "subset": root / "train-clean-100", "speaker": root / "train-clean-100" / "26"}[level]
    voices = {"root": [0, 1, 2], "subset": [0, 1], "speaker": [1]}[level]
    name, samples, problems = _read(str(path))
    assert name == "LibriTTSSource" and problems == []
    assert {it.sample.speaker for it in samples} == {LTTS_SPK[v] for v in voices}
    assert sorted(_check_pairs(truth, samples, LTTS_SPK)) == [(v, s) for v, s in ALL if v in voices]


# VCTK 0.92: speaker p315 ships without transcripts; every utterance has a mic1 and a mic2 recording
VCTK_SPK = {0: "p225", 1: "p226", 2: "s5"}


def test_vctk_reads_mic1_with_its_transcripts_and_leaves_untranscribed_out(tmp_path, speech, caplog):
    truth, root = Truth(speech), tmp_path / "VCTK-Corpus-0.92"
    (root / "speaker-info.txt").parent.mkdir()
    (root / "speaker-info.txt").write_text("ID  AGE  GENDER  ACCENTS\n")
    for v, s in ALL:
        spk, uid = VCTK_SPK[v], f"{VCTK_SPK[v]}_{s + 1:03d}"
        for mic in (1, 2):  # mic2: a second copy of the same utterance, never a reference of mic1's
            truth.write(str(root / "wav48_silence_trimmed" / spk / f"{uid}_mic{mic}.flac"), v, s, fmt="FLAC",
                        rate=48000 if mic == 1 else 16000)
        (root / "txt" / spk).mkdir(parents=True, exist_ok=True)
        (root / "txt" / spk / f"{uid}.txt").write_text(SENTENCES[s] + "\n")
    truth.write(str(root / "wav48_silence_trimmed" / "p315" / "p315_001_mic1.flac"), 0, 0, fmt="FLAC")
    name, samples, problems = _read(str(root))
    assert name == "VCTKSource" and problems == []
    assert sorted(_check_pairs(truth, samples, VCTK_SPK)) == ALL
    assert all(it.sample.messages[k].content.audio_url.endswith("_mic1.flac") for it in samples for k in (2, 4))
    assert "1 utterance(s) have no transcript" in caplog.text and "p315_001" in caplog.text


def test_ljspeech_is_one_speaker_and_keeps_quotes(tmp_path, speech):
    truth, root = Truth(speech), tmp_path / "LJSpeech-1.1"
    lines = []
    for n, s in enumerate(range(len(SENTENCES)), start=1):
        truth.write(str(root / "wavs" / f"LJ001-{n:04d}.wav"), 0, s)
        lines.append(f"LJ001-{n:04d}|raw \"{n}\"|{SENTENCES[s]}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    name, samples, problems = _read(str(root))
    assert name == "LJSpeechSource" and problems == []
    assert sorted(_check_pairs(truth, samples, {0: "LJ"})) == [(0, s) for s in range(len(SENTENCES))]
    (root / "metadata.csv").write_text(f"LJ001-0001|{SENTENCES[0]}\nLJ001-0002|raw \"2\"|\n")  # no normalized
    _, samples, _ = _read(str(root))
    texts = {it.sample_id: it.sample.messages[3].content.text for it in samples}
    assert texts == {"LJ001-0001": SENTENCES[0], "LJ001-0002": 'raw "2"'}


def test_common_voice_speakers_are_client_ids(tmp_path, speech):
    truth, root = Truth(speech), tmp_path / "cv-corpus" / "en"
    clients = {v: hashlib.sha1(str(v).encode()).hexdigest() * 3 for v in range(len(VOICES))}
    rows = ["client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender"]
    for v, s in ALL:
        clip = f"common_voice_en_{v}{s}.mp3"
        truth.write(str(root / "clips" / clip), v, s, fmt="MP3", rate=48000)
        rows.append(f"{clients[v]}\t{clip}\tx\t{SENTENCES[s]}\t\t2\t0\t\t")
    (root / "validated.tsv").write_text("\n".join(rows) + "\n")
    (root / "train.tsv").write_text("\n".join(rows[:1] + [r for r in rows[1:] if clients[2] not in r]) + "\n")
    name, samples, problems = _read(str(root))
    assert name == "CommonVoiceSource" and problems == []
    assert sorted(_check_pairs(truth, samples, clients)) == ALL
    _, samples, _ = _read(str(root / "train.tsv"))
    assert sorted(_check_pairs(truth, samples, clients)) == [(v, s) for v, s in ALL if v != 2]


def _hf_table(truth, audio_column="audio", speaker=True):
    """A `datasets`-style table (libritts_r's schema) whose features metadata marks `audio_column` as Audio."""
    import pyarrow as pa

    rows = [{audio_column: {"bytes": truth.audio(v, s), "path": f"{v}_{s}.wav"}, "text_normalized": SENTENCES[s],
             "text_original": SENTENCES[s], "speaker_id": str(v), "id": f"{v}_{s}"} for v, s in ALL]
    if not speaker:
        rows = [{k: x for k, x in r.items() if k != "speaker_id"} for r in rows]
    features = {audio_column: {"_type": "Audio", "sampling_rate": 24000}}
    table = pa.Table.from_pylist(rows)
    return table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})


def _write_stream(path, table):
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
        w.write_table(table)


def test_datasets_save_to_disk_dir_and_arrow_file(tmp_path, speech):
    truth = Truth(speech)
    table = _hf_table(truth, audio_column="speech")  # the Audio column found from the features, not its name
    d = tmp_path / "ds"
    d.mkdir()
    _write_stream(d / "data-00000-of-00002.arrow", table.slice(0, 4))
    _write_stream(d / "data-00001-of-00002.arrow", table.slice(4))
    (d / "dataset_info.json").write_text(json.dumps({"features": {}}))
    (d / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00002.arrow"},
                                                              {"filename": "data-00001-of-00002.arrow"}]}))
    speakers = {v: str(v) for v in range(len(VOICES))}
    for path, expect in ((d, ALL), (d / "data-00001-of-00002.arrow", ALL[4:])):  # one cache file: its rows
        name, samples, problems = _read(str(path))
        assert name == "ArrowSource" and problems == []
        assert sorted(_check_pairs(truth, samples, speakers)) == expect
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    (tmp_path / "dd" / "train").mkdir()
    with pytest.raises(DataError, match="DatasetDict; pass one split dir \\(train\\)"):
        _read(str(tmp_path / "dd"))


def test_a_table_without_a_speaker_column_says_so(tmp_path, speech):
    import pyarrow.parquet as pq

    pq.write_table(_hf_table(Truth(speech), speaker=False), tmp_path / "t.parquet")
    _, samples, problems = _read(str(tmp_path / "t.parquet"))
    assert samples == [] and len(problems) == 1 and "cannot be told apart" in str(problems[0])


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_webdataset_made_with_tar_c_dot_keeps_every_utterance(tmp_path, speech, layout):
    """Emilia-style members `./<key>.mp3` + `./<key>.json`, written by `tar -C dir -cf x.tar .`; nested: under
    dirs with dots (`EN/B000.v1/...`)."""
    truth, src, keys = Truth(speech), tmp_path / "src", set()
    for v, s in ALL:
        key = f"EN_B00000_S{v:05d}_W{s:06d}"
        sub = ("EN/B000.v1/" if v != 1 else "EN.2/x/") if layout == "nested" else ""
        keys.add(f"./{sub}{key}")
        d = src / sub
        d.mkdir(parents=True, exist_ok=True)
        truth.write(str(d / f"{key}.mp3"), v, s, fmt="MP3", rate=24000)
        meta = {"id": key, "wav": f"{key}.mp3", "text": SENTENCES[s], "duration": 2.0,
                "speaker": f"EN_B00000_S{v:05d}", "language": "en", "dnsmos": 3.2}
        (d / f"{key}.json").write_text(json.dumps(meta))
    shard = tmp_path / "EN-B000000.tar"
    subprocess.run(["tar", "-C", str(src), "-cf", str(shard), "."], check=True)
    assert all(n == "." or n.startswith("./") for n in tarfile.open(shard).getnames())
    name, samples, problems = _read(str(shard))
    assert name == "WebDatasetSource" and problems == []
    speakers = {v: f"EN_B00000_S{v:05d}" for v in range(len(VOICES))}
    assert sorted(_check_pairs(truth, samples, speakers)) == ALL
    assert {it.sample_id for it in samples} == keys


def test_webdataset_without_speaker_says_so(tmp_path, speech):
    truth, shard = Truth(speech), tmp_path / "x.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("a.wav", truth.audio(0, 0)), ("a.json", json.dumps({"text": "hi"}).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    _, samples, problems = _read(str(shard))
    assert samples == [] and [(p.kind, p.line) for p in problems] == [("schema", 1)]
    assert "cannot be told apart" in str(problems[0])


def test_an_unknown_directory_layout_is_refused_not_guessed(tmp_path, speech):
    truth = Truth(speech)
    for v, s in ALL:  # <speaker>/<utt>.wav with free names: the directory level would only be a guess
        truth.write(str(tmp_path / "corpus" / f"voice{v}" / f"utt{s}.wav"), v, s)
        (tmp_path / "corpus" / f"voice{v}" / f"utt{s}.txt").write_text(SENTENCES[s])
    with pytest.raises(UnknownLayout, match="cannot be told apart") as e:
        open_sources([str(tmp_path / "corpus")])
    assert str(e.value).startswith(str(tmp_path / "corpus"))


def test_malformed_metadata_names_file_and_line(tmp_path, speech):
    truth, lj, cv = Truth(speech), tmp_path / "LJSpeech-1.1", tmp_path / "cv"
    truth.write(str(lj / "wavs" / "LJ001-0001.wav"), 0, 0)
    (lj / "metadata.csv").write_text(f"LJ001-0001|{SENTENCES[0]}|{SENTENCES[0]}\nno separator here\n")
    _, _, problems = _read(str(lj))
    assert [(p.kind, p.file, p.line) for p in problems if p.kind != "no_reference"] == [
        ("schema", str(lj / "metadata.csv"), 2)]
    truth.write(str(cv / "clips" / "a.mp3"), 0, 0, fmt="MP3")
    (cv / "validated.tsv").write_text(f"path\tsentence\na.mp3\t{SENTENCES[0]}\n")
    _, _, problems = _read(str(cv))
    assert [(p.kind, p.line) for p in problems] == [("schema", 1)] and "client_id" in str(problems[0])
    (tmp_path / "junk.arrow").write_bytes(os.urandom(256))
    with pytest.raises(DataError, match="junk.arrow: not an Arrow IPC stream"):
        _read(str(tmp_path / "junk.arrow"))


def test_prepare_of_an_unknown_layout_is_one_error_line(tmp_path, speech, capsys):
    from higgs_ds.cli import main
    from higgs_ds.errors import EXIT_DATA

    Truth(speech).write(str(tmp_path / "corpus" / "alice" / "one.wav"), 0, 0)
    assert main(["prepare", "--data", str(tmp_path / "corpus"), "--output", str(tmp_path / "p")]) == EXIT_DATA
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'corpus'}: not a data source")
    assert "Traceback" not in err[0] and "--pair_by_speaker" in err[0]
