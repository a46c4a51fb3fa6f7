"""Two gloo processes on CPU against one process with the same global batch: the same
parameters, memories and loss trajectory; resume works under torchrun."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import REPO, main_inprocess, tiny_args, wait_for_text
from finessl.config_load import load_config
from finessl.distributed import init_distributed
from finessl.engine.trainer import Trainer

SETTINGS = dict(num_epochs=2, total_steps=4, print_freq=1)

pytestmark = pytest.mark.slow  # worker processes: mp.spawn and torchrun


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(opts, out, dist=None):
    torch.set_num_threads(1)
    kwargs = {"dist": dist} if dist is not None else {}
    trainer = Trainer(load_config(None, opts), out, seed=4, **kwargs)
    trainer.fit()
    return {"model": trainer.model.trainable_state_dict(),
            "algorithm": trainer.algorithm.state_dict(), "history": trainer.history}


def _rank(rank, world, port, runs):
    """One rank: every (opts, out) of ``runs`` in turn, in one process group (one spawn
    for all the algorithms: a spawn is seconds of imports per process)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist = init_distributed()
    for opts, out in runs:
        torch.save(_run(opts, out, dist), os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def _losses(run_dir):
    events = EventAccumulator(os.path.join(run_dir, "tensorboard"))
    events.Reload()
    return [e.value for e in events.Scalars("train/loss/total")]


# state of each kind: a pace memory, a label memory, EMAs with a loss of their own, and a
# labeled set that grows from the gathered predictions of the unlabeled set (CReST)
ALGORITHMS = {"finessl": {}, "flexmatch": {}, "freematch": {},
              "fixmatch+crest": {"imb": "crest", "CREST.NUM_GENS": 2, "DATA.IMB_L": 4}}


def _keys(method: str) -> dict:
    return {**SETTINGS, "algorithm": method.partition("+")[0], **ALGORITHMS[method]}


@pytest.mark.long  # one spawn of two processes for the four methods
def test_two_processes_match_one_with_the_same_global_batch(cifar_root, tmp_path):
    multi = {}
    for method in ALGORITHMS:
        multi[method] = str(tmp_path / method / "multi")
        os.makedirs(multi[method])
    runs = [(tiny_args(cifar_root, multi[m], **_keys(m)), multi[m]) for m in ALGORITHMS]
    mp.spawn(_rank, args=(2, _free_port(), runs), nprocs=2, join=True)
    for algorithm in ALGORITHMS:
        single_dir, multi_dir = str(tmp_path / algorithm / "single"), multi[algorithm]
        single = _run(tiny_args(cifar_root, single_dir, **_keys(algorithm)), single_dir)
        rank0, rank1 = (torch.load(os.path.join(multi_dir, f"rank{r}.pt"), weights_only=False)
                        for r in range(2))
        _assert_ranks_match_one_process(algorithm, single, rank0, rank1, single_dir, multi_dir)


def _assert_ranks_match_one_process(algorithm, single, rank0, rank1, single_dir, multi_dir):
    for name in rank0["model"]:  # ranks: bit-identical
        assert torch.equal(rank0["model"][name], rank1["model"][name]), (algorithm, name)
    for key in rank0["algorithm"]:
        assert torch.equal(rank0["algorithm"][key], rank1["algorithm"][key]), (algorithm, key)
    assert (rank0["algorithm"]["selected"] >= 0).any(), algorithm  # the pace memory was used
    if "crest" in algorithm:  # the labeled set really grew
        assert (rank0["algorithm"]["crest_labels"] >= 0).any()

    for name in single["model"]:  # against one process: equal up to float summation order
        assert torch.allclose(single["model"][name], rank0["model"][name], atol=1e-5), \
            (algorithm, name)
    for key in single["algorithm"]:
        assert torch.allclose(single["algorithm"][key].float(),
                              rank0["algorithm"][key].float(), atol=1e-5), (algorithm, key)
    assert _losses(multi_dir) == pytest.approx(_losses(single_dir), abs=1e-5), algorithm
    assert len(_losses(multi_dir)) == 8
    assert [r["top1"] for r in rank0["history"]] == [r["top1"] for r in single["history"]]


def _torchrun(args, out_log):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", os.path.join(REPO, "main.py"), *args]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, stdout=out_log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                            start_new_session=True)


@pytest.mark.long
def test_torchrun_run_killed_mid_epoch_resumes_to_the_same_parameters(cifar_root, tmp_path):
    """A torchrun run SIGKILLed inside epoch 2, resumed under torchrun, ends where one
    process with the same global batch ends (equal up to float summation order, as in
    the test above; resume's bit-exactness is tested in-process: tests/engine). The
    reference runs in this process: a third torchrun launch was ~20 s of imports."""
    settings = dict(num_epochs=2, total_steps=16, seed=6, print_freq=5)
    killed = str(tmp_path / "killed")
    ckpt = os.path.join(killed, "checkpoint_last.pt")
    with open(tmp_path / "killed.log", "w") as f:
        proc = _torchrun(tiny_args(cifar_root, killed, **settings), f)
        # the progress line of step 5 of epoch 2 is in log.txt: kill inside epoch 2
        wait_for_text(os.path.join(killed, "log.txt"), "epoch 2/2 step 5/16")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1, "kill came too late"
    with open(tmp_path / "resumed.log", "w") as f:
        resumed = _torchrun(tiny_args(cifar_root, killed, **settings) + ["resume", killed], f)
        reference = str(tmp_path / "reference")  # while the resumed run trains
        code, _, err = main_inprocess(tiny_args(cifar_root, reference, **settings),
                                      rasterise=False)
        assert code == 0, err[-3000:]
        assert resumed.wait(300) == 0, open(tmp_path / "resumed.log").read()[-3000:]
    a = torch.load(os.path.join(reference, "checkpoint_last.pt"), weights_only=False)
    b = torch.load(ckpt, weights_only=False)
    assert b["epoch"] == 2
    for name in a["model"]:
        assert torch.allclose(a["model"][name], b["model"][name], atol=1e-5, rtol=0), name
    assert os.path.exists(os.path.join(killed, "results.json"))
