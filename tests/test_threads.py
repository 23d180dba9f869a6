"""The thread tuner (nn/threads.py): with a fake clock that makes one thread count slow, it finds
the fast one, re-explores when the machine changes, restores the count, and stays out of the way
when the count is fixed; generate and the trainer run under it and give the same results."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tatlas.nn.threads import ThreadTuner, thread_tuner, tuning_wanted


class FakeMachine:
    """A clock whose step length depends on torch's thread count: ``cost[n]`` seconds a step."""

    def __init__(self, cost: dict[int, float]) -> None:
        self.cost, self.now = dict(cost), 0.0

    def clock(self) -> float:
        return self.now

    def run_step(self) -> None:
        self.now += self.cost[torch.get_num_threads()]


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _run(tuner: ThreadTuner, machine: FakeMachine, steps: int) -> list[int]:
    used = []
    for _ in range(steps):
        tuner.tick()
        used.append(torch.get_num_threads())
        machine.run_step()
    return used


def test_finds_the_faster_count_and_follows_the_machine(two_threads):
    machine = FakeMachine({1: 0.010, 2: 0.030})  # a busy machine: the second thread waits
    tuner = ThreadTuner(clock=machine.clock, period=16)
    used = _run(tuner, machine, 60)
    assert tuner.choices[0][2] == 1 and tuner.choices[0][1] == pytest.approx({1: 0.010, 2: 0.030})
    assert used[10:26].count(1) == 16  # after the first round (5 + 5 steps) it runs on one thread
    # the next round tries the choice first, then gives the slow count one warm-up and one timed step
    assert used[26:33] == [1] * 5 + [2] * 2 and used[33] == 1
    assert used.count(1) > 0.8 * len(used)
    machine.cost = {1: 0.010, 2: 0.004}  # the other process ended: two threads are faster now
    used = _run(tuner, machine, 80)
    assert tuner.chosen == 2 and used[-20:].count(2) >= 16
    tuner.close()
    assert torch.get_num_threads() == 2


def test_a_slowdown_starts_a_new_round_early(two_threads):
    machine = FakeMachine({1: 0.010, 2: 0.005})
    tuner = ThreadTuner(clock=machine.clock, period=400, patience=3)
    _run(tuner, machine, 12)
    assert tuner.chosen == 2
    machine.cost = {1: 0.010, 2: 0.050}  # someone else took a core
    _run(tuner, machine, 20)  # 3 slow steps, then a round of 10: well before the 400-step period ends
    assert tuner.chosen == 1 and len(tuner.choices) == 2


def test_a_clearly_slower_count_is_given_up_after_one_timed_step(two_threads):
    machine = FakeMachine({1: 0.010, 2: 0.005})  # a quiet machine: one thread takes twice as long
    tuner = ThreadTuner(clock=machine.clock, period=16)
    used = _run(tuner, machine, 24)
    assert used[:7] == [2] * 5 + [1] * 2  # the live count first; one thread: its warm-up and one timed step
    assert tuner.chosen == 2 and used[7:23] == [2] * 16
    machine = FakeMachine({1: 0.010, 2: 0.014})  # slower, but within `abandon`: the full trial
    used = _run(ThreadTuner(clock=machine.clock, abandon=1.5), machine, 10)
    assert used == [2] * 5 + [1] * 5


def test_only_a_clear_win_leaves_the_default(two_threads):
    machine = FakeMachine({1: 0.010, 2: 0.011})  # one thread 9 % faster: within the noise margin
    tuner = ThreadTuner(clock=machine.clock, margin=0.15)
    _run(tuner, machine, 30)
    assert tuner.chosen == 2
    machine.cost = {1: 0.010, 2: 0.025}
    tuner = ThreadTuner(clock=machine.clock, margin=0.15)
    _run(tuner, machine, 30)
    assert tuner.chosen == 1


def test_loops_of_one_key_go_on_with_one_schedule(two_threads, monkeypatch):
    """Short loops of one kind (a transcription's windows): the second goes on with the first's
    choice instead of timing the slow count again; another key, another thread or a long pause
    starts afresh."""
    import threading

    from tatlas.nn import threads

    monkeypatch.setattr(threads, "_SHARED", threads.OrderedDict())
    machine = FakeMachine({1: 0.010, 2: 0.030})

    def loop(key, steps=14):
        tuner = thread_tuner("cpu", key=key, clock=machine.clock, period=32)
        try:
            return tuner, _run(tuner, machine, steps)
        finally:
            tuner.close()

    first, used = loop("whisper")
    assert used[:5] == [2] * 5 and first.chosen == 1  # explored: 5 steps on 2 threads, then on 1
    assert torch.get_num_threads() == 2  # restored between loops
    second, used = loop("whisper")
    assert second is first and used == [1] * 14  # went on with one thread: no step on the slow count
    other, used = loop("llm")
    assert other is not first and used[:5] == [2] * 5
    machine.now += threads.RESUME_SECONDS + 1  # a pause: the machine may have changed
    third, used = loop("whisper")
    assert third is not first and used[:5] == [2] * 5
    seen = []
    worker = threading.Thread(target=lambda: seen.append(thread_tuner("cpu", key="whisper", clock=machine.clock)))
    worker.start()
    worker.join()
    assert seen[0] is not third  # one schedule per thread


def test_off_when_fixed(monkeypatch, two_threads):
    monkeypatch.setenv("TATLAS_THREADS", "2")
    assert not tuning_wanted("cpu")
    monkeypatch.delenv("TATLAS_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert not tuning_wanted("cpu")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert tuning_wanted("cpu") and not tuning_wanted("meta")
    on = thread_tuner("cpu")
    assert isinstance(on, ThreadTuner)
    on.close()
    off = thread_tuner("cpu", enabled=False)
    off.tick()
    off.close()
    assert torch.get_num_threads() == 2


def test_generate_under_the_tuner_is_unchanged(two_threads, monkeypatch):
    import tatlas
    from tatlas.generate import GenerationConfig, generate

    torch.manual_seed(0)
    model = tatlas.create("llm", "tiny").eval()
    prompt = [[5, 6, 7, 8]]
    tuned = generate(model, prompt, GenerationConfig(max_new_tokens=24)).as_lists()
    assert torch.get_num_threads() == 2  # restored
    monkeypatch.setenv("TATLAS_THREADS", "2")
    fixed = generate(model, prompt, GenerationConfig(max_new_tokens=24)).as_lists()
    assert tuned == fixed


def test_a_failing_training_run_restores_the_threads(two_threads, tmp_path):
    from tatlas.train import TrainConfig, Trainer

    model = torch.nn.Linear(4, 1)
    data = [{"x": torch.randn(4)} for _ in range(8)]

    def loss_fn(m, batch):
        raise RuntimeError("boom")  # the first step fails, while the tuner has 1 thread set

    with pytest.raises(RuntimeError, match="boom"):
        Trainer(model, loss_fn, data, TrainConfig(steps=3, batch_size=2, progress=False)).fit()
    assert torch.get_num_threads() == 2


# --- how long idle OpenMP threads spin (tatlas/_openmp.py) ---------------------------------------------

def test_the_spin_setting_leaves_the_users_own_alone():
    from tatlas._openmp import SPIN_COUNT, spin_setting

    assert spin_setting({}) == str(SPIN_COUNT)
    assert spin_setting({"TATLAS_SPIN": "500"}) == "500"
    assert spin_setting({"TATLAS_SPIN": " Default "}) is None
    assert spin_setting({"GOMP_SPINCOUNT": "10"}) is None and spin_setting({"OMP_WAIT_POLICY": "active"}) is None
    for bad in ("x", "-1", "1.5"):
        want = f"TATLAS_SPIN: expected a whole number of spins or 'default', got {bad!r}"
        with pytest.raises(ValueError, match=want):
            spin_setting({"TATLAS_SPIN": bad})


_WORKER_CPU = """
import sys, time
{first}
import torch
torch.set_num_threads(2)
x = torch.randn(4_000_000)
for _ in range(3):
    x.add_(1.0)
p0, t0 = time.process_time(), time.thread_time()
for _ in range(20):
    x.add_(1.0)  # one parallel region, then the other thread waits for the next one while we sleep
    time.sleep(0.02)
import os
print(os.environ.get("GOMP_SPINCOUNT"), (time.process_time() - p0) - (time.thread_time() - t0))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: libgomp spins briefly anyway")
def test_import_tatlas_first_and_idle_threads_stop_spinning_soon():
    """The CPU time torch's second thread burns between parallel regions 20 ms apart: with libgomp's
    default spin it holds its core for milliseconds after each (~170 ms in all on an AVX-512 EPYC),
    after `import tatlas` for ~75 us (~13 ms, most of it the regions' work). Torch imported first, the
    setting comes too late, and tatlas leaves the environment as it was."""

    def worker_cpu(first: str, **env) -> tuple[str, float]:
        environ = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "TATLAS_SPIN")}
        out = subprocess.run([sys.executable, "-c", _WORKER_CPU.format(first=first)], capture_output=True, text=True,
                             check=True, env={**environ, **env}).stdout.split()
        return out[0], float(out[1])

    spin, tuned = worker_cpu("import tatlas")
    off, default = worker_cpu("import tatlas", TATLAS_SPIN="default")
    late, _ = worker_cpu("import torch, tatlas")
    assert (spin, off, late) == ("3000", "None", "None")
    assert tuned < default / 4, (tuned, default)
