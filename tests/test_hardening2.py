"""Hardening, round two (issue 17): text from files is never interpreted by the terminal or by
rich, thread counts and memory are bounded by the machine and the weights, hostile Hugging Face
directories and mismatched ONNX exports are refused in one line, and chat history survives a
read-only or unusable data directory.

tests/README.md lists what each test proves.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from test_convert import write_hf_gpt2

from minigpt_tui.history import Conversation, HistoryStore
from minigpt_tui.safe_text import markup, plain
from model import checkpoint, modeldir
from model.backend import available_cpus, check_threads
from model.config import GPTConfig
from model.gpt import GPT
from model.tokenizer import CharTokenizer
from tests.helpers import EVIL, TEXT, cli, expect_one_line_error, make_data, make_model
from tests.helpers import assert_inert as _inert


def test_plain_and_markup_show_controls_and_keep_text() -> None:
    assert plain("tab\tand\nline") == "tab\tand\nline"  # ordinary text is unchanged
    assert plain("a\tb\nc", one_line=True) == "a\\tb\\nc"
    assert plain(EVIL) == "\\x1b]0;PWNED\\x07\\x1b[2J[/][old]\\x9b31m\\u202eevil"
    from rich.console import Console

    console = Console(record=True, width=200)
    drive = "C:\\"  # a path ending in a backslash
    console.print(f"[bold]name:[/] {markup(EVIL)} at {markup(drive)}")
    shown = console.export_text()
    _inert(shown)
    assert "[/][old]" in shown and shown.endswith(" at C:\\\n")


# ------------------------------------------------------------------ escapes through every command


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model called EVIL whose character vocabulary holds ESC and BEL, in a directory whose
    name holds rich markup; its data; and its ONNX export (made once, through the CLI)."""
    root = tmp_path_factory.mktemp("evil") / "runs [old] [" / "]"  # a path holding "[/]"
    root.mkdir(parents=True)
    text = TEXT + "\x1b[2J\x07" * 20
    torch.manual_seed(0)
    tok = CharTokenizer.from_text([text])
    cfg = GPTConfig(
        vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16, tie_weights=False
    )
    model = GPT(cfg)
    with torch.no_grad():  # ESC is the likeliest next token everywhere
        model.ln_f.weight.zero_()
        model.ln_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.encode("\x1b")[0]] = 5.0
    path = root / "model"
    training = {"command": EVIL, "data_sha256": EVIL, "data_source": EVIL}
    meta = modeldir.make_meta(cfg, tok, name=EVIL, summary={EVIL: EVIL}, training=training)
    checkpoint.save(path, model, meta)
    data = make_data(root, text=text)
    assert cli("export", "onnx", path, "--out", root / "onnx", "--no-verify") == 0
    return {"root": root, "model": path, "data": data, "onnx": root / "onnx"}


class _Terminal:
    """sys.stdout as a terminal: generate shows what it writes there."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.parts.append(s)
        return len(s)

    def flush(self) -> None:
        pass


def test_escapes_and_markup_from_files_reach_no_terminal_in_any_command(
    evil: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, model, data = evil["root"], evil["model"], evil["data"]
    out = tmp_path / "out [old] [" / "]"  # outputs under a path holding "[/]"
    out.mkdir(parents=True)
    monkeypatch.setenv("COLUMNS", "1000")  # rich wraps at this width: keep each line whole
    runs: list[tuple[str, ...]] = [
        ("info", str(model)),
        ("info", str(evil["onnx"])),
        ("eval", str(model), "--data", str(data), "--device", "cpu"),
        ("generate", "-m", str(model), "--backend", "torch", "-n", "8", "--stats", "hi"),
        ("generate", "-m", str(evil["onnx"]), "-n", "8", "--echo", "--stats", "hi"),
        ("data", "prepare", str(root / "corpus.txt"), "--out", str(out / "data")),
        (
            "train",
            "--data",
            str(data),
            "--out",
            str(out / "run"),
            "--device",
            "cpu",
            "--max-iters",
            "2",
            "--block-size",
            "8",
            "--n-layer",
            "1",
            "--n-head",
            "2",
            "--n-embd",
            "16",
            "--eval-interval",
            "1",
            "--eval-iters",
            "1",
            "--batch-size",
            "2",
            "--no-final-eval",
        ),
        ("export", "onnx", str(model), "--out", str(out / "x"), "--no-verify"),
    ]
    for argv in runs:
        terminal = _Terminal()  # generate writes to a terminal; rich's commands to a capture,
        with monkeypatch.context() as m:  # where rich adds no styles of its own
            if argv[0] == "generate":
                m.setattr("sys.stdout", terminal)
            code = cli(*argv)
        captured = capsys.readouterr()
        shown = "".join(terminal.parts) + captured.out + captured.err
        assert code == 0, (argv, shown)
        _inert(shown)
        assert "Traceback" not in shown
        if argv[0] in ("info", "eval"):
            assert "[/][old]" in shown, shown  # the name, as it is, markup and all
        if argv[0] not in ("generate", "eval"):
            assert "[old] [/]" in shown, (argv, shown)  # paths are printed as they are
        if argv[0] == "generate":
            assert "\\x1b" in shown  # ESC was generated and shown as its escape
    # A bad file's text in an error line is inert too.
    bad = tmp_path / "bad"
    shutil.copytree(model, bad)
    (bad / modeldir.CONFIG_FILE).write_text(json.dumps({"format": EVIL}))
    line = expect_one_line_error(capsys, "info", bad)
    _inert(line)


def test_generate_into_a_pipe_keeps_the_text_as_generated(
    evil: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("generate", "-m", evil["model"], "--backend", "torch", "-n", "4", "hi") == 0
    assert "\x1b" in capsys.readouterr().out  # a pipe is data, not a terminal


def _turn(text: str) -> Any:
    from minigpt_tui.dialogue import Turn

    return Turn("user", text)


# ------------------------------------------------------------------ threads


def test_thread_counts_are_capped_to_the_machine(
    evil: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cpus = available_cpus()
    assert check_threads(None) == (None, "")
    assert check_threads(cpus) == (cpus, "")
    for huge in (100_000, 99_999_999_999):
        threads, note = check_threads(huge)
        assert threads == cpus and str(huge) in note and f"using {cpus}" in note
    from export.ort_backend import OrtBackend
    from model.torch_backend import TorchBackend

    onnx_engine = OrtBackend(modeldir.read(evil["onnx"]), threads=100_000)
    assert onnx_engine.model.session.get_session_options().intra_op_num_threads == cpus
    TorchBackend(modeldir.read(evil["model"]), threads=99_999_999_999)
    assert torch.get_num_threads() <= cpus
    torch.set_num_threads(1)
    for backend, model in (("onnx", evil["onnx"]), ("torch", evil["model"])):
        argv = ["generate", "-m", model, "--backend", backend, "-n", "3", "--threads"]
        assert cli(*argv, "99999999999", "hi") == 0
        err = capsys.readouterr().err
        assert f"more than the {cpus} CPUs available; using {cpus}" in err and "Trace" not in err
    torch.set_num_threads(1)


# ------------------------------------------------------------------ export


def test_opsets_the_installed_tools_cannot_handle_are_refused_up_front(
    evil: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from export.options import newest_opset

    newest = newest_opset()
    assert 23 <= newest <= onnx.defs.onnx_opset_version()
    for opset in (newest + 1, 10**9):
        line = expect_one_line_error(
            capsys, "export", "onnx", evil["model"], "--out", tmp_path / "o", "--opset", str(opset)
        )
        assert f"between 18 and {newest}" in line
    assert not (tmp_path / "o").exists()


def test_a_graph_onnxruntime_cannot_load_is_refused_in_one_line(
    evil: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A graph onnxruntime cannot load (here: stamped with an opset no onnxruntime has) is
    refused, verified or not, and nothing is written."""
    import export.onnx_export as ex

    graph = onnx.load(str(evil["onnx"] / modeldir.ONNX_FILE))
    for o in graph.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 99
    monkeypatch.setattr(ex, "build_graph", lambda model, quantize, opset: graph)
    monkeypatch.setattr(ex, "check_opset", lambda opset: opset)
    for verify in ("--verify", "--no-verify"):
        out = tmp_path / f"o{verify}"
        line = expect_one_line_error(
            capsys, "export", "onnx", evil["model"], "--out", out, "--opset", "22", verify
        )
        assert "onnxruntime cannot load the exported graph" in line
        assert not out.exists()


def test_verification_treats_nan_as_failure(evil: dict[str, Path]) -> None:
    from export.onnx_export import ExportError, verify_export

    model, _ = checkpoint.load(evil["model"])
    with torch.no_grad():
        model.lm_head.weight.fill_(math.nan)  # torch gives NaN; onnxruntime's graph does not
    data = (evil["onnx"] / modeldir.ONNX_FILE).read_bytes()
    with pytest.raises(ExportError, match="verification failed"):
        verify_export(model, data, "none")


def test_non_finite_weights_are_refused_by_every_command(
    evil: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "nan"
    shutil.copytree(evil["model"], model)
    weights = load_numpy(str(model / modeldir.WEIGHTS_FILE))
    weights["ln_f.weight"][:] = np.nan
    save_numpy(weights, str(model / modeldir.WEIGHTS_FILE))
    for argv in (
        ["generate", "-m", model, "--backend", "torch", "-n", "2", "hi"],
        ["eval", model, "--data", evil["data"], "--device", "cpu"],
        ["export", "onnx", model, "--out", tmp_path / "o"],
        [
            "train",
            "--data",
            evil["data"],
            "--out",
            tmp_path / "ft",
            "--init-from",
            model,
            "--max-iters",
            "1",
            "--device",
            "cpu",
        ],
    ):
        line = expect_one_line_error(capsys, *argv)
        assert "non-finite" in line, line
    # An ONNX model that computes NaN: the sampler says so instead of printing garbage.
    from minigpt_tui.sampling import SamplingError, SamplingSettings, distribution

    with pytest.raises(SamplingError, match="not finite"):
        distribution(np.array([0.0, math.nan]), SamplingSettings())


# ------------------------------------------------------------------ shapes before memory


def test_a_config_claiming_a_huge_context_is_refused_before_allocating(
    evil: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "huge"
    shutil.copytree(evil["model"], model)
    meta = json.loads((model / modeldir.CONFIG_FILE).read_text())
    meta["model"]["block_size"] = 10**8  # 1.6e9 parameters: under the cap, 6.4 GB to build
    (model / modeldir.CONFIG_FILE).write_text(json.dumps(meta))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for argv in (
        ["generate", "-m", model, "--backend", "torch", "-n", "2", "hi"],
        ["eval", model, "--data", evil["data"], "--device", "cpu"],
    ):
        line = expect_one_line_error(capsys, *argv)
        assert "wpe.weight has shape (32, 16), config says (100000000, 16)" in line, line
    expect_one_line_error(capsys, "export", "onnx", model, "--out", tmp_path / "o")
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024 < 200


def test_an_onnx_export_of_another_context_is_refused_before_generating(
    evil: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m"
    shutil.copytree(evil["onnx"], model)
    meta = json.loads((model / modeldir.CONFIG_FILE).read_text())
    meta["model"]["block_size"] = 64  # exported at 32
    (model / modeldir.CONFIG_FILE).write_text(json.dumps(meta))
    line = expect_one_line_error(capsys, "generate", "-m", model, "-n", "40", "hi")
    assert "past_key_0" in line and "re-export it" in line
    assert capsys.readouterr().out == ""  # refused before a single character


# ------------------------------------------------------------------ convert hf


def _hf_weights(change: Callable[[dict[str, np.ndarray]], Any]) -> Callable[[Path], None]:
    def apply(src: Path) -> None:
        w = load_numpy(str(src / "model.safetensors"))
        change(w)
        save_numpy(w, str(src / "model.safetensors"))

    return apply


def _hf_config(**values: Any) -> Callable[[Path], None]:
    def apply(src: Path) -> None:
        cfg = json.loads((src / "config.json").read_text())
        cfg.update(values)
        (src / "config.json").write_text(json.dumps(cfg))

    return apply


def _extra_layer(w: dict[str, np.ndarray]) -> None:
    for k in [k for k in w if k.startswith("h.1.")]:
        w["h.2." + k[4:]] = w[k]


HOSTILE_HF: dict[str, tuple[Callable[[Path], None], str]] = {
    "3-D c_attn.weight": (
        _hf_weights(lambda w: w.update({"h.0.attn.c_attn.weight": np.zeros((2, 32, 96), "f")})),
        "h.0.attn.c_attn.weight has shape (2, 32, 96)",
    ),
    "3 layers of weights, n_layer 2": (_hf_weights(_extra_layer), "h.2.attn.c_attn.bias"),
    "vocab_size 100": (_hf_config(vocab_size=100), "expected (100, 32)"),
    "tie_word_embeddings 'false'": (
        _hf_config(tie_word_embeddings="false"),
        "tie_weights must be true or false",
    ),
    "n_layer 2.7": (_hf_config(n_layer=2.7), "n_layer must be a positive integer, got 2.7"),
    "n_layer true": (_hf_config(n_layer=True), "n_layer must be a positive integer, got True"),
    "n_embd '32'": (_hf_config(n_embd="32"), "n_embd must be a positive integer"),
    "config a list": (lambda s: (s / "config.json").write_text("[]"), "not a GPT-2"),
    "NaN weights": (
        _hf_weights(lambda w: w["h.1.mlp.c_fc.bias"].__setitem__(0, np.nan)),
        "non-finite",
    ),
    "infinite weights": (_hf_weights(lambda w: w["wte.weight"].fill(np.inf)), "non-finite"),
    "integer weights": (
        _hf_weights(lambda w: w.update({"ln_f.bias": np.zeros(32, np.int32)})),
        "not floating point",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HF))
def test_hostile_hugging_face_dirs_are_refused_in_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "hf"
    write_hf_gpt2(src)
    spoil, words = HOSTILE_HF[case]
    spoil(src)
    line = expect_one_line_error(capsys, "convert", "hf", src, "--out", tmp_path / "out")
    assert words in line, line
    assert not (tmp_path / "out").exists()


def test_convert_hf_keeps_an_untied_head_and_ignores_attention_masks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "hf"
    w = write_hf_gpt2(src)
    _hf_config(tie_word_embeddings=False)(src)
    head = np.random.default_rng(1).standard_normal(w["wte.weight"].shape).astype(np.float32)
    _hf_weights(lambda w: w.update({"lm_head.weight": head, "h.0.attn.bias": np.ones((1, 1))}))(src)
    assert cli("convert", "hf", src, "--out", tmp_path / "out") == 0
    model, info = checkpoint.load(tmp_path / "out")
    assert info.config.tie_weights is False
    assert np.array_equal(model.lm_head.weight.detach().numpy(), head)


# ------------------------------------------------------------------ history


def _saved(path: Path) -> int:
    store = HistoryStore(path)
    conv_id = store.save(Conversation(None, "", "chat", "tiny", [_turn("kept")]))
    store.close()
    return conv_id


def test_an_unusable_data_dir_keeps_history_in_memory_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MINIGPT_TUI_DATA_DIR", "/proc/self")
    store = HistoryStore.default()
    assert not store.persistent and "/proc/self/history.db cannot be created" in store.notice
    store.save(Conversation(None, "", "chat", "tiny", [_turn("in memory")]))
    assert [c.title for c in store.list()] == ["in memory"]


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Any:
    """A directory that cannot be written, with a healthy history.db saved in it first: a
    read-only tmpfs when we are root (root ignores file modes), else chmod."""
    where = tmp_path / "ro"
    where.mkdir()
    if os.geteuid() != 0:
        conv_id = _saved(where / "history.db")
        (where / "history.db").chmod(0o444)
        where.chmod(0o555)
        yield where, conv_id
        where.chmod(0o755)
        return
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here")
    try:
        conv_id = _saved(where / "history.db")
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, timeout=10)
        yield where, conv_id
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def test_a_read_only_history_opens_read_only_and_is_never_moved_aside(
    read_only_dir: tuple[Path, int],
) -> None:
    where, conv_id = read_only_dir
    before = sorted(p.name for p in where.iterdir())
    store = HistoryStore(where / "history.db")
    assert store.read_only and store.persistent and "is read-only" in store.notice
    loaded = store.load(conv_id)
    assert loaded is not None and loaded.turns[0].text == "kept"
    store.save(Conversation(None, "", "chat", "tiny", [_turn("not saved")]))  # no error
    store.delete(conv_id)
    assert [c.id for c in store.list()] == [conv_id]
    store.close()
    assert sorted(p.name for p in where.iterdir()) == before  # nothing moved aside


def test_a_data_dir_that_cannot_be_written_keeps_history_in_memory(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories; /proc covers this case as root")
    where = tmp_path / "empty-ro"
    where.mkdir()
    where.chmod(0o555)
    try:
        store = HistoryStore(where / "history.db")
        assert not store.persistent and "cannot be created" in store.notice
    finally:
        where.chmod(0o755)


# ------------------------------------------------------------------ small things


def test_cosmetic_refusals_and_fixes(
    evil: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = make_model(tmp_path)
    # A huge repetition penalty works without numpy overflow warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            cli(
                "generate",
                "-m",
                tiny,
                "--backend",
                "torch",
                "--repetition-penalty",
                "1e39",
                "-n",
                "20",
                "--seed",
                "1",
                "ROMEO",
            )
            == 0
        )
        assert (
            cli("generate", "-m", tiny, "--backend", "torch", "-t", "1e-300", "-n", "5", "hi") == 0
        )
    line = expect_one_line_error(capsys, "generate", "-m", tiny, "-t", "inf", "hi")
    assert "temperature must be >= 0 and finite, got inf" in line
    # --echo prints the prompt the model was given: without the dropped characters.
    capsys.readouterr()
    assert (
        cli("generate", "-m", tiny, "--echo", "--unknown-chars", "drop", "-n", "0", "hi ¥ROMEO")
        == 0
    )
    assert capsys.readouterr().out == "hi ROMEO"
    # A FIFO config.json is called what it is.
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / modeldir.CONFIG_FILE)
    line = expect_one_line_error(capsys, "info", fifo)
    assert "config.json is a FIFO, not a regular file" in line
    # Weights are written with the usual file mode, like every other file.
    mask = os.umask(0o022)
    try:
        model, info = checkpoint.load(tiny)
        checkpoint.save(tmp_path / "modes", model, info.meta)
    finally:
        os.umask(mask)
    assert (tmp_path / "modes" / modeldir.WEIGHTS_FILE).stat().st_mode & 0o777 == 0o644
    # chat and watch without a terminal: one line, no full-screen app.
    line = expect_one_line_error(capsys, "chat", "-m", tiny, "--no-history")
    assert "needs a terminal" in line
    line = expect_one_line_error(capsys, "watch", tmp_path)
    assert "needs a terminal" in line


def test_a_raw_pickle_trainer_state_is_one_plain_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pickle

    tiny = make_model(tmp_path)
    data = make_data(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(tiny, run / "step-000005")
    modeldir.point_latest(run, run / "step-000005")
    (run / "step-000005" / modeldir.TRAINER_FILE).write_bytes(
        pickle.dumps({"step": 5, "x": os.sep})
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = expect_one_line_error(capsys, "train", "--data", data, "--out", run, "--resume")
    assert not caught, [str(w.message) for w in caught]  # no advice to unpickle it unsafely
    assert "trainer.pt" in line and "weights_only" not in line


# ------------------------------------------------------------------ training runs

RUN_FLAGS = ["--device", "cpu", "--no-samples", "--no-final-eval", "--batch-size", "4"]
RUN_FLAGS += ["--eval-iters", "1"]
SHAPE = ["--block-size", "16", "--n-layer", "1", "--n-head", "2"]


def _train(data: Path, out: Path, *extra: str, width: int = 16) -> list[str]:
    shape = [] if "--resume" in extra else [*SHAPE, "--n-embd", str(width)]
    return ["train", "--data", str(data), "--out", str(out), *RUN_FLAGS, *shape, *extra]


def test_trainer_state_of_another_shape_is_refused_before_torch_sees_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_data(tmp_path)
    for width in (16, 32):
        out = tmp_path / f"w{width}"
        assert cli(*_train(data, out, "--max-iters", "2", width=width)) == 0
    narrow = tmp_path / "w16" / "step-000002" / modeldir.TRAINER_FILE
    wide = tmp_path / "w32" / "step-000002" / modeldir.TRAINER_FILE
    shutil.copyfile(narrow, wide)
    line = expect_one_line_error(capsys, *_train(data, tmp_path / "w32", "--resume"))
    assert "belongs to a model of another shape" in line
    state = torch.load(narrow, weights_only=True)
    state["rng_data"] = torch.zeros(3, dtype=torch.uint8)  # an RNG state of the wrong length
    torch.save(state, tmp_path / "w16" / "step-000002" / modeldir.TRAINER_FILE)
    line = expect_one_line_error(capsys, *_train(data, tmp_path / "w16", "--resume"))
    assert "cannot resume from trainer.pt" in line


def test_a_diverging_run_never_saves_non_finite_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = make_data(tmp_path), tmp_path / "run"
    ckpt = ["--ckpt-interval", "3", "--eval-interval", "3", "--log-interval", "1000"]
    assert cli(*_train(data, out, "--max-iters", "3", *ckpt)) == 0
    good = (out / "latest" / modeldir.WEIGHTS_FILE).read_bytes()
    line = expect_one_line_error(
        capsys, *_train(data, out, "--resume", "--max-iters", "60", "--lr", "1e9", *ckpt)
    )
    assert "training diverged" in line and "step-000003 is still latest" in line
    assert os.readlink(out / "latest") == "step-000003"
    assert (out / "latest" / modeldir.WEIGHTS_FILE).read_bytes() == good
    for step in out.glob("step-*"):  # every checkpoint left loads and is finite
        checkpoint.load(step)


def test_a_run_directory_is_held_by_one_run_and_a_killed_holder_does_not_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    data, out = make_data(tmp_path), tmp_path / "run"
    assert cli(*_train(data, out, "--max-iters", "2")) == 0
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from model import rundir\n"
         "with rundir.locked(Path(sys.argv[1])) as claim:\n"
         "    claim(); print('held', flush=True); time.sleep(120)",
         str(out)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1],
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])),
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for extra in (["--resume", "--max-iters", "4"], ["--force", "--max-iters", "2"]):
            line = expect_one_line_error(capsys, *_train(data, out, *extra))
            assert f"being written by another training run (process {holder.pid})" in line
        (out / ".train.pid").unlink()  # the kernel's lock table still names the holder
        line = expect_one_line_error(capsys, *_train(data, out, "--resume"))
        assert f"(process {holder.pid})" in line
    finally:
        holder.kill()
        holder.wait(10)
    (out / ".train.pid").write_text(f"{holder.pid}\n")  # a stale id, as kill -9 leaves it
    assert cli(*_train(data, out, "--resume", "--max-iters", "4")) == 0
    assert os.readlink(out / "latest") == "step-000004"
    assert not (out / ".train.pid").exists()


def test_a_tiny_time_budget_still_leaves_a_run_that_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = make_data(tmp_path), tmp_path / "run"
    assert cli(*_train(data, out, "--time-budget", "1e-9", "--max-iters", "50")) == 0
    assert os.readlink(out / "latest") == "step-000001"
    assert cli(*_train(data, out, "--resume", "--time-budget", "600", "--max-iters", "3")) == 0
    assert os.readlink(out / "latest") == "step-000003"
    # A run that stopped before its first checkpoint: --resume says what to do.
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "metrics.jsonl").write_text('{"event": "start", "iter": 0}\n')
    line = expect_one_line_error(capsys, *_train(data, tmp_path / "early", "--resume"))
    assert "stopped before saving a checkpoint; start it over with --force" in line


def test_eval_refuses_a_batch_whose_logits_exceed_the_memory(
    evil: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["eval", evil["model"], "--data", evil["data"], "--device", "cpu"]
    assert cli(*argv, "--batch-size", "100000000000") == 0  # tiny data: a batch holds it all
    real = os.sysconf
    monkeypatch.setattr(  # a machine of 32 KB: the same batch no longer fits
        os, "sysconf", lambda name: 8 if name == "SC_PHYS_PAGES" else real(name)
    )
    line = expect_one_line_error(capsys, *argv, "--batch-size", "100000000000")
    assert "for the logits alone" in line
