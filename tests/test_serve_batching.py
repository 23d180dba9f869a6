"""Continuous batching (tatlas.generate.continuous, the engine behind ``tatlas serve``): sequences that
join and leave a running batch at different steps decode exactly as each would alone, through
slot shifts both ways, row moves, and sliding-window layers."""

import pytest
import torch

import tatlas
from tatlas.generate import GenerationConfig, generate
from tatlas.generate.continuous import ContinuousBatch

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**kw):
    torch.manual_seed(0)
    return tatlas.create("llm", "tiny", vocab_size=64, dim=32, heads=4, kv_heads=2, mlp_hidden=48, **kw).eval()


def _alone(model, prompt, n):
    return generate(model, [prompt], GenerationConfig(max_new_tokens=n)).as_lists(include_stop=True)[0]


def _run_schedule(model, schedule, *, rows, max_len):
    """``schedule``: (step at which it joins, prompt, new tokens) -> each sequence's greedy tokens."""
    batch = ContinuousBatch(model, rows=rows, max_len=max_len)
    out: dict[int, list[int]] = {}
    want = {i: n for i, (_, _, n) in enumerate(schedule)}
    waiting = sorted(range(len(schedule)), key=lambda i: schedule[i][0])
    step, shifts = 0, set()
    while waiting or len(batch):
        while waiting and schedule[waiting[0]][0] <= step and batch.free:
            i = waiting.pop(0)
            _, prompt, n = schedule[i]
            out[i] = [int(batch.join(i, prompt, n).argmax())]
            if len(out[i]) == n:
                batch.leave(i)
        before = batch.cur
        logits = batch.step({k: out[k][-1] for k in batch.keys})
        if batch.cur != before + 1:
            shifts.add("left")
        for k, row in logits.items():
            out[k].append(int(row.argmax()))
            if len(out[k]) == want[k]:
                batch.leave(k)
        step += 1
    return [out[i] for i in range(len(schedule))], shifts


def test_joining_and_leaving_equals_each_alone():
    model = _model()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 64, (n,), generator=g).tolist() for n in (3, 9, 1, 14, 5, 7)]
    # (join at step, prompt, new tokens): late long prompts move the running rows right; a small
    # cache forces left shifts; 3 rows for 6 sequences force waiting and row moves
    schedule = [(0, prompts[0], 12), (2, prompts[1], 6), (3, prompts[2], 9), (4, prompts[3], 10),
                (5, prompts[4], 1), (6, prompts[5], 8)]
    got, shifts = _run_schedule(model, schedule, rows=3, max_len=24)
    assert got == [_alone(model, p, n) for _, p, n in schedule]
    assert "left" in shifts


def test_sliding_window_rows_equal_alone():
    model = _model(sliding_window=4)
    g = torch.Generator().manual_seed(2)
    schedule = [(i, torch.randint(1, 64, (2 + 3 * i,), generator=g).tolist(), 7) for i in range(4)]
    got, _ = _run_schedule(model, schedule, rows=4, max_len=20)
    assert got == [_alone(model, p, n) for _, p, n in schedule]


def test_refuses_what_does_not_fit():
    batch = ContinuousBatch(_model(), rows=1, max_len=8)
    with pytest.raises(ValueError, match="at most 9 tokens"):
        batch.join("a", [1] * 6, 4)
    batch.join("a", [1, 2], 3)
    with pytest.raises(ValueError, match="all 1 rows are in use"):
        batch.join("b", [1], 1)
    with pytest.raises(ValueError, match="expected a token for each of 1 rows"):
        batch.step({})
    batch.leave("a")
    assert batch.free == 1 and batch.step({}) == {}
