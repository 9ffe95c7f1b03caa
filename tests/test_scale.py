"""Training where users run it at scale: the progress watchdog, torchrun's restarts, the loopback launcher."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist

from conftest import MAIN, SMOKE, free_port, run_main, smoke_env
from pixelface.core import distributed, local_launcher
from pixelface.core.watchdog import STALL_EXIT_CODE, LocalBoard, StoreBoard, Watchdog
from pixelface.networks.checkpoint import load_checkpoint
from pixelface.training.runs import latest_checkpoint


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _two_ranks(timeout=60.0):
    """Two watchdogs (ranks 0 and 1) on one board and one clock, collecting what they report."""
    board, clock, reports = LocalBoard(), FakeClock(), []
    dogs = [Watchdog(timeout, rank, 2, board, reports.append, clock=clock) for rank in (0, 1)]
    return dogs, clock, reports


def test_watchdog_waits_while_any_rank_progresses_then_names_the_one_that_stopped_first():
    (rank0, rank1), clock, _ = _two_ranks()
    rank0.beat("step 7: G main")
    rank1.beat("step 7: D R1")                     # rank 1 freezes here (a hung GPU, SIGSTOP)
    for t in range(0, 200, 10):                    # rank 0 keeps going (its evaluation, say), rank 1 waits
        clock.now = t
        rank0.beat(f"evaluation batch {t}")
        assert rank0.check() is None and rank1.check() is None
    for t in range(200, 250, 10):                  # rank 0 now waits for rank 1 in a collective
        clock.now = t
        assert rank0.check() is None and rank1.check() is None
    clock.now = 251
    message = rank0.check()   # rank 0 first saw rank 1's beat at t = 10 (rank 1 published after rank 0 read)
    assert message.startswith("rank 1 made no progress for 241 s (last: step 7: D R1)")
    assert "no rank has progressed for 61 s" in message and "TRAIN.STALL_TIMEOUT_S=60" in message
    assert "--resume auto" in message


def test_watchdog_names_a_frozen_rank_before_one_waiting_for_it():
    (rank0, rank1), clock, _ = _two_ranks()
    rank1.beat("step 3: G main")
    rank1.check()                                  # rank 1 freezes (SIGSTOP): neither beats nor polls
    rank0.beat("step 3: G main")                   # rank 0's last beat comes later, then it waits
    for t in range(0, 70, 10):
        clock.now = t
        rank0.check()
    message = rank0.check()
    assert message.startswith("rank 1 stopped responding 60 s ago (last: step 3: G main)"), message


def test_watchdog_counts_a_rank_that_never_beat_from_its_start():
    (rank0, _), clock, _ = _two_ranks(timeout=5)
    rank0.beat("step 0: D main")
    assert rank0.check() is None
    clock.now = 6                                  # both silent since t = 0: the one that never beat is named
    assert rank0.check().startswith("rank 1 stopped responding 6 s ago (last: not started)")


def test_watchdog_thread_reports_once_and_stops():
    reports = []
    dog = Watchdog(0.3, 0, 1, LocalBoard(), reports.append, poll_s=0.02).start()
    for _ in range(10):                            # progress: no report
        dog.beat("working")
        time.sleep(0.05)
    assert reports == []
    time.sleep(1.0)                                # no beats for more than the timeout
    dog.stop()
    assert len(reports) == 1 and reports[0].startswith("rank 0 made no progress")
    with pytest.raises(ValueError, match="timeout must be > 0"):
        Watchdog(0, 0, 1, LocalBoard(), reports.append)


def test_store_board_round_trips_through_a_file_store(tmp_path):
    store = torch_dist.FileStore(str(tmp_path / "store"), 1)
    board = StoreBoard(store, "pixelface/watchdog")
    assert board.read(1) is None
    board.publish(1, "3|step 2: G main")
    assert board.read(1) == "3|step 2: G main"


def test_a_restarted_rank_skips_the_previous_attempts_store_for_the_one_rank_0_posts_now():
    """torchrun's agent store outlives an attempt (pytorch/pytorch#135712): a rank must not take the store rank 0
    posted last time (its port closed, or reused by another store) for this attempt's."""
    agent = torch_dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    dead = free_port()                                     # the previous attempt's store: nobody listens now
    agent.set(distributed.ATTEMPT_KEY, f"{dead} stale-nonce")
    other = torch_dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    other.set(distributed.NONCE_KEY, "another-attempt")    # a live store that is not this attempt's
    fresh = torch_dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    fresh.set(distributed.NONCE_KEY, "this-attempt")

    def rank0_posts_late():
        time.sleep(0.5)
        agent.set(distributed.ATTEMPT_KEY, f"{other.port} this-attempt")
        time.sleep(0.5)
        agent.set(distributed.ATTEMPT_KEY, f"{fresh.port} this-attempt")
    threading.Thread(target=rank0_posts_late).start()
    store = distributed._posted_store(agent, "127.0.0.1")
    assert store.port == fresh.port
    store.set("from rank 1", "hello")
    assert fresh.get("from rank 1") == b"hello"


def test_nproc_workers_import_the_launchers_own_package(tmp_path, monkeypatch):
    """Another checkout's package first on the user's path (or owning the editable install) must not train
    in place of the one launched: a worker's environment puts the launcher's package first."""
    decoy = tmp_path / "other_checkout"
    (decoy / "pixelface").mkdir(parents=True)
    (decoy / "pixelface" / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(decoy))
    env = local_launcher.worker_env(0, 2, tmp_path / "store", "lo")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(local_launcher.PACKAGE_ROOT), str(decoy)]
    found = subprocess.run([sys.executable, "-c", "import pixelface; print(pixelface.__file__)"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(found).parent.parent == local_launcher.PACKAGE_ROOT


def _workers(agent: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of the worker processes a torchrun agent started (Linux /proc)."""
    found = {}
    for child in Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split():
        env = dict(item.split("=", 1) for item in Path(f"/proc/{child}/environ").read_bytes().decode().split("\0")
                   if "=" in item)
        if "RANK" in env:
            found[int(env["RANK"])] = int(child)
    return found


def _wait_for(predicate, seconds=300, what=""):
    deadline = time.time() + seconds
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker processes through /proc")
def test_a_stopped_rank_stops_every_rank_with_one_line_and_a_loadable_checkpoint(smoke_root, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(MAIN), "--cfg", str(SMOKE), "--out", str(tmp_path), "--no-progress",
           "--set", f"DATA.ROOT={smoke_root}", "--set", "DATA.SYNTHESIZE=false", "--set", "TRAIN.TOTAL_KIMG=1",
           "--set", "TRAIN.SNAPSHOT_KIMG=0.008", "--set", "TRAIN.STALL_TIMEOUT_S=4"]
    agent = subprocess.Popen(cmd, env=smoke_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = tmp_path / "smoke-00000"
    try:
        _wait_for(lambda: (run / "checkpoints" / "latest").exists(), what="a first checkpoint")
        stopped = _workers(agent)[1]
        os.kill(stopped, signal.SIGSTOP)              # rank 1 freezes mid-step
        started = time.time()
        out = agent.communicate(timeout=120)[0]
        waited = time.time() - started
    finally:
        agent.kill()
        for pid in _workers(agent).values() if agent.poll() is None else ():
            os.kill(pid, signal.SIGKILL)
    assert agent.returncode != 0
    assert waited < 60, f"the job took {waited:.0f} s to stop"
    verdict = "rank 0: rank 1 stopped responding"
    assert verdict in out and f"exitcode  : {STALL_EXIT_CODE}" in out, out     # torchrun's report of rank 0
    assert verdict in (run / "log.txt").read_text()
    assert load_checkpoint(latest_checkpoint(run))["progress"]["nimg"] > 0


def _listening(pid: int) -> list[str]:
    """Local addresses (hex, as /proc/net shows them) of the TCP sockets process `pid` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:       # state LISTEN, owned by the process
                found.append(fields[1].rsplit(":", 1)[0])
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads listening sockets from /proc")
def test_nproc_trains_with_every_socket_on_loopback_and_forwards_sigterm(smoke_root, tmp_path):
    cmd = [sys.executable, str(MAIN), "--nproc", "2", "--cfg", str(SMOKE), "--out", str(tmp_path), "--no-progress",
           "--set", f"DATA.ROOT={smoke_root}", "--set", "DATA.SYNTHESIZE=false", "--set", "TRAIN.TOTAL_KIMG=1",
           "--set", "TRAIN.SNAPSHOT_KIMG=0.008"]
    launcher = subprocess.Popen(cmd, env=smoke_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = tmp_path / "smoke-00000"
    try:
        _wait_for(lambda: (run / "checkpoints" / "latest").exists(), what="a first checkpoint")
        workers = _workers(launcher)
        assert sorted(workers) == [0, 1]
        addresses = [a for pid in workers.values() for a in _listening(pid)]
        assert addresses and set(addresses) <= LOOPBACK, addresses      # gloo listens, on 127.0.0.1 only
        assert _listening(launcher.pid) == []                            # no rendezvous server at all
        launcher.send_signal(signal.SIGTERM)                             # as a scheduler stops a job
        out = launcher.communicate(timeout=120)[0]
    finally:
        launcher.kill()
    assert launcher.returncode == 0, out
    assert "stopped by SIGTERM" in out
    ckpt = load_checkpoint(latest_checkpoint(run))
    assert ckpt["world_size"] == 2 and 0 < ckpt["progress"]["nimg"] < 1000


def test_nproc_refuses_zero_and_a_launcher_around_it(tmp_path, monkeypatch, capsys):
    from pixelface.commands.launch import launch
    assert launch("train", ["--nproc", "0", "--cfg", str(SMOKE), "--out", str(tmp_path)]) == 2
    assert "--nproc 0 must be at least 1" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    assert launch("train", ["--nproc", "2", "--cfg", str(SMOKE), "--out", str(tmp_path)]) == 2
    assert "under a launcher (RANK is set)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _two_node_job(root, out, port: int) -> list[subprocess.Popen]:
    """Two torchrun agents of one process each, meeting through c10d rendezvous on 127.0.0.1:port, restarting
    their worker group up to twice, each worker resuming the newest run (the fault-tolerant command)."""
    agents = []
    for _ in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "pixelface-test",
               "--max-restarts", "2", "--monitor-interval", "0.5",
               str(MAIN), "--cfg", str(SMOKE), "--out", str(out), "--no-progress", "--resume", "auto",
               "--set", f"DATA.ROOT={root}", "--set", "DATA.SYNTHESIZE=false",
               "--set", "TRAIN.TOTAL_KIMG=0.04", "--set", "TRAIN.SNAPSHOT_KIMG=0.008"]
        agents.append(subprocess.Popen(cmd, env=smoke_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, start_new_session=True))   # killpg reaches its workers
    return agents


def _kill_jobs(agents: list[subprocess.Popen]) -> None:
    """Each agent with the workers it started (their own session): no orphan outlives the test."""
    for a in agents:
        try:
            os.killpg(a.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _finish(agents: list[subprocess.Popen]) -> str:
    try:
        outs = [a.communicate(timeout=300)[0] for a in agents]
    finally:
        _kill_jobs(agents)
    assert [a.returncode for a in agents] == [0, 0], "\n".join(outs)
    return "\n".join(outs)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker processes through /proc")
def test_torchrun_restarts_a_killed_node_and_the_run_ends_as_an_uninterrupted_one(smoke_root, tmp_path):
    _finish(_two_node_job(smoke_root, tmp_path / "straight", free_port()))

    agents = _two_node_job(smoke_root, tmp_path / "killed", free_port())
    ckpts = tmp_path / "killed" / "smoke-00000" / "checkpoints"
    try:
        _wait_for(lambda: (ckpts / "ckpt-000000016.pt").exists(), what="a second checkpoint")
        victim = _workers(agents[1])
        os.kill(next(iter(victim.values())), signal.SIGKILL)       # node 1's worker dies mid-run
    except BaseException:
        _kill_jobs(agents)
        raise
    out = _finish(agents)
    assert not (tmp_path / "killed" / "smoke-00001").exists()       # the same run continued, no new one
    log = (ckpts.parent / "log.txt").read_text()
    assert "exitcode: -9" in out                                      # torchrun saw the kill, restarted the group
    assert "resumed from" in log and log.count("training to 40 images") == 2
    straight, killed = (load_checkpoint(latest_checkpoint(tmp_path / name / "smoke-00000")) for name in ("straight", "killed"))
    assert killed["progress"]["nimg"] == straight["progress"]["nimg"] == 40
    for part in ("G", "D", "G_ema"):
        for key, tensor in straight[part].items():
            assert torch.equal(tensor, killed[part][key]), f"{part}.{key}"


def test_torchrun_two_processes_then_resume_on_one(smoke_root, tmp_path):
    """2 -> 1 processes: images shown kept, the epoch's sampler re-sharded, one notice (1 -> 2: below)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), str(MAIN), "--cfg", str(SMOKE), "--out", str(tmp_path), "--no-progress",
           "--set", f"DATA.ROOT={smoke_root}", "--set", "DATA.SYNTHESIZE=false"]
    done = subprocess.run(cmd, env=smoke_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    run = tmp_path / "smoke-00000"
    ckpt = load_checkpoint(latest_checkpoint(run))
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["progress"]["nimg"] == 16
    assert (run / "config.yaml").is_file()

    # The same run resumed on one process (2 -> 1): images shown kept, the epoch's sampler re-sharded, one notice.
    resumed = run_main(smoke_root, tmp_path, "--resume", "auto", "--set", "TRAIN.TOTAL_KIMG=0.032")
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    assert "resumed with 1 process(es) x batch 2 from a checkpoint of 2 x 2: images shown (16)" in log
    assert "each rank's random stream restarted from the run's seed" in log
    assert load_checkpoint(latest_checkpoint(run))["progress"]["nimg"] == 32


def test_a_one_process_run_resumes_on_two_with_one_notice(smoke_root, tmp_path):
    """1 -> 2 processes, through --nproc: images shown kept, the sampler re-sharded, a notice."""
    first = run_main(smoke_root, tmp_path)
    assert first.wait(timeout=300) == 0, first.stdout.read()
    run = tmp_path / "smoke-00000"
    assert load_checkpoint(latest_checkpoint(run))["progress"]["nimg"] == 16
    resumed = run_main(smoke_root, tmp_path, "--nproc", "2", "--resume", "auto", "--set", "TRAIN.TOTAL_KIMG=0.032")
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    assert "resumed with 2 process(es) x batch 2 from a checkpoint of 1 x 2: images shown (16)" in log
    ckpt = load_checkpoint(latest_checkpoint(run))
    assert ckpt["world_size"] == 2 and ckpt["progress"]["nimg"] == 32
