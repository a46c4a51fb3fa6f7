"""The command line's contract, in process through ``main.main(argv)``: every subcommand
comes from one table and has its own ``--help``; ``--help`` imports no torch, open_clip
or timm; a wrong command line, an allocation that fails and a refused command each end
in one line ``error: ...`` (exit 2) of its own, after any progress bar; a refused
command leaves no empty log.txt; open_clip's notice about missing weights is silent
when no weights were asked for."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import open_clip
import pytest
import torch
from tqdm import tqdm

import main
from conftest import REPO, TINY_VIT, tiny_args
from finessl.errors import UserError, is_out_of_memory, out_of_memory_message
from finessl.models.clip import load_clip, resolve_model_name

# ---- one table, a help for each ---------------------------------------------------------


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main.main(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


def test_the_top_help_lists_every_subcommand_of_the_table_with_its_line(capsys):
    text = _help(["--help"], capsys)
    assert set(main.SUBCOMMANDS) == {"resume", "predict", "report", "select",
                                     "convert-checkpoint", "restore-checkpoint"}
    for name, command in main.SUBCOMMANDS.items():
        assert f"  {name:<20}{command.help}\n" in text
    assert "--dry-run" in text and "KEY VALUE" in text  # training, without a subcommand


@pytest.mark.parametrize("name", sorted(main.SUBCOMMANDS))
def test_each_subcommand_has_its_own_help(name, capsys):
    text = _help([name, "--help"], capsys)
    assert text.startswith(f"usage: main.py {name} ")
    assert "RUN_DIR" in text


def test_the_predict_example_uses_the_folders_runs_write(capsys):
    text = _help(["predict", "--help"], capsys)
    assert "--model-dir out/cifar100_N4/finessl/seed1 --images photos/" in text


@pytest.mark.parametrize("argv, expected", [
    (["resume", "out/r"], ("resume", ["resume", "out/r"], None, False)),
    (["resume", "out/r", "num_workers", "4", "gpu", "1"],
     ("resume", ["resume", "out/r", "num_workers", "4", "gpu", "1"], None, False)),
    (["resume", "out/r", "--dry-run", "num_workers", "4"],
     ("resume", ["resume", "out/r", "num_workers", "4"], None, True)),
    (["resume", "--cfg", "c.yaml", "out/r"], ("resume", ["resume", "out/r"], "c.yaml", False)),
    (["--cfg", "c.yaml", "vpt_deep", "True", "resume", "out/r"],
     (None, ["vpt_deep", "True", "resume", "out/r"], "c.yaml", False)),
    (["--cfg", "c.yaml", "vpt_deep", "True", "--dry-run", "seed", "1"],
     (None, ["vpt_deep", "True", "seed", "1"], "c.yaml", True)),
    (["lr", "-1e-3", "seed", "-1"], (None, ["lr", "-1e-3", "seed", "-1"], None, False)),
    (["eval_only", "True", "model_dir", "out/r"],
     (None, ["eval_only", "True", "model_dir", "out/r"], None, False)),
])
def test_training_command_lines_parse_as_they_always_did(argv, expected):
    """``resume RUN`` as a subcommand gives the very pairs ``resume RUN`` as KEY VALUE
    gave; the pairs keep their order around options, a value like -1e-3 included."""
    command, args = main.parse(argv)
    if command is main.SUBCOMMANDS["resume"]:
        name, opts = "resume", ["resume", args.run_dir, *args.opts]
    else:
        assert command is main.TRAIN
        name, opts = None, args.opts
    assert (name, opts, args.cfg, args.dry_run) == expected


def test_the_other_subcommands_parse_their_arguments():
    _, args = main.parse(["predict", "--model-dir", "out/r", "--images", "p/", "gpu", "0",
                          "--output", "x.csv", "num_workers", "2"])
    assert (args.model_dir, args.images, args.output, args.opts) == (
        "out/r", "p/", "x.csv", ["gpu", "0", "num_workers", "2"])
    _, args = main.parse(["report", "a", "b", "--out", "rep", "--epochs", "1", "3"])
    assert (args.run_dirs, args.out, args.epochs, args.metric) == (["a", "b"], "rep", [1, 3],
                                                                   "last")
    assert main.parse(["convert-checkpoint", "out/r", "--trust"])[1].trust is True
    assert main.parse(["restore-checkpoint", "out/r"])[1].run_dir == "out/r"


@pytest.mark.parametrize("argv, says", [
    (["predict", "--images", "p/"], "main.py predict: the following arguments are required: "
                                    "--model-dir"),
    (["report"], "main.py report: the following arguments are required: RUN_DIR"),
    (["restore-checkpoint", "a", "b"], "main.py restore-checkpoint: unrecognized arguments: b"),
    (["report", "r", "--metric", "worst"], "argument --metric: invalid choice: 'worst'"),
])
def test_a_wrong_command_line_is_one_error_line(argv, says, capsys):
    with pytest.raises(SystemExit) as done:
        main.main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err


@pytest.mark.slow  # the point is a fresh process's imports
def test_help_imports_neither_torch_nor_open_clip_nor_timm():
    """Every help text in one fresh process (runpy, as ``python main.py`` runs it); after
    them, none of the heavy packages is loaded."""
    probe = (
        "import contextlib, io, json, runpy, sys\n"
        "texts = []\n"
        "for argv in [['--help']] + [[n, '--help'] for n in sys.argv[1:]]:\n"
        "    sys.argv = ['main.py', *argv]\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            runpy.run_path('main.py', run_name='__main__')\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0, (argv, e.code)\n"
        "    texts.append(out.getvalue())\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', "
        "'timm'))\n"
        "print(json.dumps({'texts': texts, 'heavy': heavy}))\n")
    names = list(main.SUBCOMMANDS)
    proc = subprocess.run([sys.executable, "-c", probe, *names], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["heavy"] == []
    assert seen["texts"][0].startswith("usage: main.py ")
    for name, text in zip(names, seen["texts"][1:]):
        assert text.startswith(f"usage: main.py {name} "), text[:80]


# ---- out of memory -----------------------------------------------------------------------

def _cpu_allocation_failure() -> RuntimeError:
    try:
        torch.empty(1 << 50, dtype=torch.uint8)  # a pebibyte: no machine has it
    except RuntimeError as e:
        return e
    pytest.skip("this machine allocated a pebibyte")


def test_is_out_of_memory_on_real_exceptions():
    cpu = _cpu_allocation_failure()
    assert "DefaultCPUAllocator" in str(cpu) and type(cpu) is RuntimeError
    assert is_out_of_memory(cpu)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate "
                                                   "20.00 GiB"))
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))  # the same class
    try:
        bytearray(1 << 62)
    except MemoryError as e:
        assert is_out_of_memory(e)
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("not enough memory"))  # only the allocator's type
    assert not is_out_of_memory(UserError("DATA.BATCH_SIZE: expected an int"))


def test_the_out_of_memory_line_names_the_size_keys_and_stays_short():
    line = out_of_memory_message(torch.OutOfMemoryError("CUDA out of memory. " + "x " * 500))
    assert "\n" not in line and len(line) < 320
    assert line.startswith("out of memory (OutOfMemoryError: CUDA out of memory.")
    for key in ("DATA.BATCH_SIZE", "DATA.MU_U", "input_size", "vpt_len"):
        assert key in line


def test_a_run_out_of_memory_ends_in_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from finessl.engine import predict, run
    cpu = _cpu_allocation_failure()

    def out_of_memory(cfg, *rest):
        raise cpu
    monkeypatch.setattr(run, "train", out_of_memory)
    code = main.main(tiny_args(str(tmp_path), str(tmp_path / "out"), vpt_len=100000))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: out of memory (RuntimeError: [enforce fail")
    assert err.count("\n") == 1 and "lower DATA.BATCH_SIZE, DATA.MU_U, input_size, vpt_len" in err

    def cuda_out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 74.00 GiB")
    monkeypatch.setattr(predict, "predict", cuda_out_of_memory)
    assert main.main(["predict", "--model-dir", str(tmp_path), "--images", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (OutOfMemoryError: CUDA out of memory. Tried "
                          "to allocate 74.00 GiB): lower DATA.BATCH_SIZE")

    def a_bug(*args):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    monkeypatch.setattr(predict, "predict", a_bug)
    with pytest.raises(RuntimeError, match="mat1"):  # not memory: the traceback stays
        main.main(["predict", "--model-dir", str(tmp_path), "--images", str(tmp_path)])


# ---- the last line after a progress bar --------------------------------------------------

@pytest.mark.parametrize("close_first", [False, True])
def test_the_error_line_follows_a_progress_bar_on_a_line_of_its_own(close_first, tmp_path,
                                                                    monkeypatch, capsys):
    """stderr to a file: the bar's ``\\r`` lines must not swallow the error line, whether
    the bar is still open (main.py closes it) or was closed on the way out (its clearing
    ``\\r`` ends nothing)."""
    from finessl.engine import predict

    def fails_mid_bar(*args):
        bar = tqdm(total=10, desc="epoch 1/4", leave=False, mininterval=0)
        bar.update(3)
        if close_first:
            bar.close()
        raise UserError("DATA.DATAPATH: a file went missing")
    monkeypatch.setattr(predict, "predict", fails_mid_bar)
    assert main.main(["predict", "--model-dir", str(tmp_path), "--images", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "epoch 1/4" in err  # the bar was drawn on this stderr
    assert err.endswith("\n")
    lines = err.split("\n")
    assert lines[-2] == "error: DATA.DATAPATH: a file went missing"
    assert [line for line in lines if "error" in line] == [lines[-2]]
    assert not tqdm._instances  # no bar is left to draw over it


def test_a_stop_line_follows_a_progress_bar_too(tmp_path, monkeypatch, capsys):
    from finessl.engine import predict, signals

    def preempted(*args):
        tqdm(total=5, mininterval=0).update(1)
        raise signals.Preempted(15, "stopped by SIGTERM (nothing to save at this point)")
    monkeypatch.setattr(predict, "predict", preempted)
    assert main.main(["predict", "--model-dir", str(tmp_path), "--images", str(tmp_path)]) == 143
    err = capsys.readouterr().err
    assert err.split("\n")[-2] == "stopped by SIGTERM (nothing to save at this point)"
    assert sys.stderr is not None and type(sys.stderr).__name__ != "_LineEnds"  # given back


# ---- a refused command leaves no empty log.txt ------------------------------------------

def test_a_refused_resume_leaves_no_empty_log(cifar_root, tmp_path, capsys):
    """A resume refused in its setup (a damaged last checkpoint, found only when read)
    creates no log.txt in the run's folder, which existed before it."""
    from finessl.config_load import load_config
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = load_config(None, tiny_args(cifar_root, str(run_dir)))
    (run_dir / "config.yaml").write_text(cfg.dump())
    (run_dir / "checkpoint_last.pt").write_bytes(b"cut short")
    before = sorted(os.listdir(run_dir))
    assert main.main(["resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "checkpoint_last.pt" in err
    assert sorted(os.listdir(run_dir)) == before  # no log.txt, nothing else either
    logging.getLogger().info("after the refusal")  # its handler is detached
    assert not (run_dir / "log.txt").exists()


def test_the_run_log_is_made_by_its_first_record(tmp_path):
    from finessl.logs import detach_run_log, setup_logging
    setup_logging(str(tmp_path))
    try:
        assert not (tmp_path / "log.txt").exists()
        logging.getLogger("finessl.test").info("first line")
        assert "INFO first line" in (tmp_path / "log.txt").read_text()
    finally:
        detach_run_log(str(tmp_path))


# ---- open_clip's notice about missing weights --------------------------------------------

def test_no_weights_asked_for_no_notice_about_them(caplog):
    caplog.set_level(logging.WARNING)
    load_clip(TINY_VIT, "none")
    assert not [r for r in caplog.records if "No pretrained weights" in r.getMessage()]
    # Only while FineSSL builds without weights: open_clip's own call still warns.
    open_clip.create_model(resolve_model_name(TINY_VIT), pretrained=None)
    notices = [r for r in caplog.records if "No pretrained weights" in r.getMessage()]
    assert len(notices) == 1 and notices[0].levelno == logging.WARNING
