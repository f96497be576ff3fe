"""`minigpt-tui generate` through cli.main and as a real process."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt_tui.cli import main
from minigpt_tui.commands.generate import unescape
from minigpt_tui.generation import Generation, load_backend
from minigpt_tui.sampling import SamplingSettings
from model import checkpoint, modeldir
from model.config import GPTConfig
from model.gpt import GPT
from model.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parent.parent
CORPUS = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n.,:;!?'-"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    tok = CharTokenizer.from_text([CORPUS])
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16)
    model = GPT(cfg)
    with torch.no_grad():  # varied greedy text from random weights
        for name, p in model.named_parameters():
            if "ln" not in name:
                p.normal_(0.0, 0.15)
    path = tmp_path_factory.mktemp("cli") / "tiny"
    checkpoint.save(path, model, modeldir.make_meta(cfg, tok, name="tiny"))
    return path


def gen(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `minigpt-tui generate ...`; return (exit code, stdout, stderr)."""
    try:
        main(["generate", *argv])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def reference(model_dir: Path, prompt: str, n: int) -> str:
    backend = load_backend(model_dir, backend="torch")
    tok = backend.info.tokenizer()
    g = Generation(
        backend, tok, tok.encode(prompt), SamplingSettings(temperature=0, max_new_tokens=n)
    )
    list(g)
    return g.text


def test_greedy_output_is_the_engine_continuation(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = gen(["hello", "-m", str(model_dir), "-n", "40", "--temperature", "0"], capsys)
    assert code == 0 and err == ""
    assert out == reference(model_dir, "hello", 40)  # only the continuation, no prompt
    assert len(out) == 40


def test_echo_prints_the_prompt_first(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = gen(["hello", "-m", str(model_dir), "-n", "10", "-t", "0", "--echo"], capsys)
    assert code == 0 and out == "hello" + reference(model_dir, "hello", 10)


def test_seeded_runs_repeat(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["hi", "-m", str(model_dir), "-n", "50", "--temperature", "1.0", "--top-p", "0.95"]
    a = gen([*args, "--seed", "5"], capsys)[1]
    b = gen([*args, "--seed", "5"], capsys)[1]
    c = gen([*args, "--seed", "6"], capsys)[1]
    assert a == b and a != c and len(a) == 50


def test_prompt_from_stdin(
    model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = reference(model_dir, "hello\n", 12)
    for argv in (["-"], []):
        stdin = io.TextIOWrapper(io.BytesIO(b"hello\n"), encoding="utf-8")
        monkeypatch.setattr(sys, "stdin", stdin)
        code, out, _ = gen([*argv, "-m", str(model_dir), "-n", "12", "-t", "0"], capsys)
        assert code == 0 and out == expected
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe bad")))
    code, out, err = gen(["-", "-m", str(model_dir)], capsys)
    assert code != 0 and "not UTF-8" in err and out == ""


def test_empty_prompt_is_not_an_error(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = gen(["", "-m", str(model_dir), "-n", "15", "--seed", "1"], capsys)
    assert code == 0 and len(out) == 15 and err == ""


def test_stop_strings(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = reference(model_dir, "hello", 60)
    stop = full[20:23]
    cut = full.find(stop)
    code, out, _ = gen(
        ["hello", "-m", str(model_dir), "-n", "60", "-t", "0", "--stop", "QQQ", "--stop", stop],
        capsys,
    )
    assert code == 0 and out == full[:cut]


def test_unescape_for_stop_strings() -> None:
    assert unescape(r"\n\nROMEO:") == "\n\nROMEO:"
    assert unescape(r"a\tb\\n\x") == "a\tb\\n\\x"


def test_stats_go_to_stderr(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = gen(["hello", "-m", str(model_dir), "-n", "20", "--stats"], capsys)
    assert code == 0 and len(out) == 20
    assert "time to first token" in err and "tokens/s" in err and "truncated" not in err
    long = "hello world " * 10  # 120 characters > block_size 32
    code, out, err = gen([long, "-m", str(model_dir), "-n", "5", "--stats"], capsys)
    assert code == 0 and len(out) == 5
    assert "truncated to its last 32" in err


def test_unknown_characters(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = gen(["héllo", "-m", str(model_dir)], capsys)
    assert code != 0 and out == ""
    assert "'é'" in err and "U+00E9" in err and "--unknown-chars drop" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = gen(
        ["héllo", "-m", str(model_dir), "-n", "8", "-t", "0", "--unknown-chars", "drop"], capsys
    )
    assert code == 0 and out == reference(model_dir, "hllo", 8)
    code, _, err = gen(["x", "-m", str(model_dir), "--unknown-chars", "maybe"], capsys)
    assert code != 0 and "--unknown-chars" in err


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--temperature", "-0.5", "temperature"),
        ("--top-k", "-1", "top-k"),
        ("--top-p", "0", "top-p"),
        ("--top-p", "1.5", "top-p"),
        ("--max-tokens", "-3", "max tokens"),
        ("--repetition-penalty", "0", "repetition penalty"),
        ("--backend", "tensorflow", "unknown backend"),
        ("--temperature", "warm", "temperature"),
    ],
)
def test_bad_settings_are_one_line_errors(
    model_dir: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    code, out, err = gen(["hello", "-m", str(model_dir), option, value], capsys)
    assert code != 0 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_bad_models_are_one_line_errors(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    cases = [
        (str(tmp_path / "nope"), "not found"),
        (str(tmp_path), "not a model directory"),
        (str(tmp_path / "notes.txt"), "not a model directory"),
    ]
    for model, message in cases:
        code, out, err = gen(["hello", "-m", model], capsys)
        assert code != 0 and out == "" and message in err, err
        assert len(err.strip().splitlines()) == 1
    code, _, err = gen(["hello", "-m", str(model_dir), "--backend", "onnx"], capsys)
    assert code != 0 and "model.onnx" in err


def test_the_onnx_backend_refuses_a_torch_device(capsys: pytest.CaptureFixture[str]) -> None:
    """ONNX runs on the CPU: --device cuda with it is refused, never silently ignored."""
    from minigpt_tui.models import BUNDLED_DIR, DEFAULT_MODEL

    onnx_file = BUNDLED_DIR / DEFAULT_MODEL / "model.onnx"
    for argv in (["--backend", "onnx"], ["-m", str(onnx_file)]):
        code, out, err = gen(["hi", *argv, "--device", "cuda", "-n", "2"], capsys)
        assert code != 0 and out == "" and "--device cuda" in err, err
        assert len(err.strip().splitlines()) == 1


def test_run_directory_and_file_inside_model_dir(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "step-000001").symlink_to(model_dir, target_is_directory=True)
    modeldir.point_latest(run_dir, run_dir / "step-000001")
    expected = reference(model_dir, "hi", 6)
    for model in (run_dir, model_dir / "model.safetensors", model_dir / "config.json"):
        code, out, _ = gen(["hi", "-m", str(model), "-n", "6", "-t", "0"], capsys)
        assert code == 0 and out == expected


def test_bundled_model_by_default_and_by_name(
    tmp_path: Path,
    model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    (bundled / "shakespeare-char").symlink_to(model_dir, target_is_directory=True)
    monkeypatch.setattr("minigpt_tui.models.BUNDLED_DIR", bundled)
    monkeypatch.chdir(tmp_path)  # no ./shakespeare-char here to shadow the bundled one
    expected = reference(model_dir, "hi", 6)
    for argv in ([], ["-m", "shakespeare-char"]):
        code, out, _ = gen(["hi", *argv, "-n", "6", "-t", "0"], capsys)
        assert code == 0 and out == expected


def test_help_says_only_the_continuation_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = gen(["--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    assert "Only the generated continuation is printed" in text and "--echo" in text


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _endless_generate(model_dir: Path) -> subprocess.Popen[bytes]:
    """`generate` in a subprocess that would run for a million tokens."""
    cmd = [
        sys.executable,
        "-m",
        "minigpt_tui",
        "generate",
        "hello",
        "-m",
        str(model_dir),
        "-n",
        "1000000",
        "--threads",
        "1",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())


def test_stdout_closed_early_exits_quietly(model_dir: Path) -> None:
    """`minigpt-tui generate ... | head -c 10`: no traceback, no error line."""
    proc = _endless_generate(model_dir)
    assert proc.stdout is not None and proc.stderr is not None
    head = proc.stdout.read(10)
    proc.stdout.close()  # the reader goes away
    code = proc.wait(timeout=120)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert len(head) == 10
    assert err == "", err
    assert code in (0, 1)  # quiet either way: typer turns EPIPE into exit status 1


def test_generate_module_and_help_do_not_import_torch() -> None:
    code = (
        "import sys; import minigpt_tui.commands.generate, minigpt_tui.generation; "
        "from minigpt_tui.cli import main\n"
        "try:\n    main(['generate', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "--max-tokens" in res.stdout


@pytest.mark.slow
def test_onnx_model_file_runs_without_torch(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--model dir/model.onnx` picks the ONNX backend, prints what torch prints, and the
    process never imports torch."""
    onnx_export = pytest.importorskip("export.onnx_export")
    out_dir = tmp_path / "exported"
    onnx_export.export_onnx(model_dir, out_dir)
    expected = reference(model_dir, "hello", 30)
    code = (
        "import sys\nfrom minigpt_tui.cli import main\n"
        f"try:\n    main(['generate', 'hello', '-m', {str(out_dir / 'model.onnx')!r}, "
        "'-n', '30', '-t', '0', '--stats'])\nexcept SystemExit as e:\n    assert not e.code, e\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == expected
    assert "backend onnx" in res.stderr
    code, out, err = gen(["hello", "-m", str(out_dir), "--backend", "torch"], capsys)
    assert code != 0 and out == "" and "model.safetensors" in err


def test_ctrl_c_stops_quietly(model_dir: Path) -> None:
    proc = _endless_generate(model_dir)
    assert proc.stdout is not None
    assert len(proc.stdout.read(20)) == 20  # it is streaming
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"Traceback" not in err
