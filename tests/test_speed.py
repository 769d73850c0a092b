"""The speed benchmark's surface (its timings are printed, never asserted: tests stay fast)."""
import pytest
import torch

from bench import speed
from backbones.layers import QConv2d


def test_speed_times_each_pad_mode_against_float(capsys):
    speed.main(["--batch", "2", "--input", "8", "--steps", "1", "--pad-mode", "both"])
    out = capsys.readouterr().out
    assert out.count("ms/step") == 3
    assert "ratio binary/float, binary, pad border:" in out and "ratio binary/float, binary, pad explicit:" in out
    assert QConv2d.pad_mode == "border"  # the benchmark leaves the layer's default as it found it


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_speed_on_cuda_without_a_gpu_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        speed.main(["--device", "cuda"])
    assert e.value.code == 2
    assert "no CUDA device" in capsys.readouterr().err
