"""`make bench-gpu` on a machine without CUDA: one line saying so, exit 0."""

from __future__ import annotations

import torch

from benchmarks import gpu


def test_without_cuda_it_says_so_in_one_line_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main([]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and "no CUDA GPU" in printed[0]
