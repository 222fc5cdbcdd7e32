"""One owner per run folder (lock files, stale locks, torchrun), and model folders built side by side safely."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import cli_args
from qpeft.cli import main
from qpeft.utils.atomic import build_folder_atomically
from qpeft.utils.errors import UsageError
from qpeft.utils.locks import LOCK_FILE, acquire, hold_lock, read_owner, release

HOLD_LOCK = ("import sys, time; from qpeft.utils.locks import acquire; acquire(sys.argv[1]); "
             "print('held', flush=True); time.sleep(120)")


def dead_pid() -> int:
    """The PID of a process that has ended (and was not reused since)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_process_is_refused_with_the_owner_named(tmp_path: Path, tiny_llama_dir: Path, toy_data_dir: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(output)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["train", "--method", "lora", "--output", str(output), *cli_args(tiny_llama_dir, toy_data_dir)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert f"is in use by process {holder.pid} on {socket.gethostname()}" in err
        assert not (output / "config.json").exists()  # nothing written into another process's folder
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path, tiny_llama_dir: Path,
                                                       toy_data_dir: Path) -> None:
    output = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(output)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()  # SIGKILL: no chance to remove its lock
    holder.wait()
    assert read_owner(output / LOCK_FILE)["pid"] == holder.pid
    assert main(["train", "--method", "lora", "--output", str(output), *cli_args(tiny_llama_dir, toy_data_dir)]) == 0
    assert (output / "metrics.json").exists() and not (output / LOCK_FILE).exists()  # let go when done


def test_a_reused_pid_is_not_taken_for_the_owner(tmp_path: Path) -> None:
    # The PID is alive (ours), but the process that took the lock started at another time: it is gone.
    lock = tmp_path / LOCK_FILE
    other = {"host": socket.gethostname(), "pid": os.getppid(), "started": "0"}
    lock.write_text(json.dumps(other))
    with hold_lock(tmp_path):
        assert read_owner(lock)["pid"] == os.getpid()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": dead_pid(), "started": None}))
    with pytest.raises(UsageError, match="in use by process .* on elsewhere.*remove .*qpeft.lock"):
        acquire(tmp_path)


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"pid": "x"}'])
def test_an_unreadable_lock_file_is_refused_in_one_line(tmp_path: Path, content: str) -> None:
    (tmp_path / LOCK_FILE).write_text(content)
    with pytest.raises(UsageError) as error:
        acquire(tmp_path)
    assert "\n" not in str(error.value)


def test_one_process_may_hold_its_lock_twice(tmp_path: Path) -> None:
    acquire(tmp_path)
    acquire(tmp_path)
    release(tmp_path)
    assert (tmp_path / LOCK_FILE).exists()  # the outer holder still has it
    release(tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()


def take_over_and_hold(folder: str, seen: multiprocessing.Queue) -> None:
    try:
        acquire(folder)
    except UsageError:
        seen.put("refused")
        return
    seen.put("took")
    time.sleep(2)  # hold it while the other process tries


@pytest.mark.multiprocess
def test_two_processes_taking_over_one_stale_lock_get_one_owner(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid(), "started": None}))
    context = multiprocessing.get_context("spawn")
    seen = context.Queue()
    workers = [context.Process(target=take_over_and_hold, args=(str(tmp_path), seen)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = sorted(seen.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join()
    assert outcomes == ["refused", "took"]


def slow_build(target: str, marker: str) -> None:
    def build(folder: Path) -> None:
        for index in range(5):
            (folder / f"part-{index}").write_text(marker)
            time.sleep(0.05)
        (folder / "config.json").write_text(json.dumps({"built_by": marker}))

    build_folder_atomically(Path(target), build)


@pytest.mark.multiprocess
def test_concurrent_first_builds_of_a_model_folder_leave_one_whole_folder(tmp_path: Path) -> None:
    target = tmp_path / "models" / "smollm2-135m"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=slow_build, args=(str(target), f"process-{i}")) for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    winner = json.loads((target / "config.json").read_text())["built_by"]
    assert {(target / f"part-{i}").read_text() for i in range(5)} == {winner}  # one builder's files, not a mix
    assert [p.name for p in target.parent.iterdir()] == ["smollm2-135m"]  # no partial folder left


@pytest.mark.multiprocess
def test_under_torchrun_only_the_main_process_claims_and_a_refusal_ends_every_process(
    tmp_path: Path, tiny_llama_dir: Path, toy_data_dir: Path
) -> None:
    output = tmp_path / "run"
    output.mkdir()
    (output / "config.json").write_text('{"method": "another experiment"}')
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "-m", "qpeft.cli", "train", "--method", "lora", "--output", str(output),
              *cli_args(tiny_llama_dir, toy_data_dir)]
    result = subprocess.run(launch, capture_output=True, text=True, timeout=240, check=False,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0
    # Both processes say it: the other one learnt the main one's refusal instead of waiting for it forever
    # (until the launcher's timeout). Their two lines may interleave on the shared stderr, so count the phrase.
    assert result.stderr.count("holds a different experiment; choose another output folder") == 2, result.stderr
    assert sorted(p.name for p in output.iterdir()) == ["config.json"]
