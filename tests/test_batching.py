"""The batching and precision policy of explanation passes (explain/batching.py)."""
import pytest
import torch
import torch.nn as nn

from explain.batching import (CPU_BATCH, activation_bytes, batch_sizes, chunks, cuda_rows, cudnn_autotune, pad_rows,
                              pad_sizes, tf32)
from explain.evaluate import predict_probs


def test_activation_bytes_count_every_leaf_output_and_the_input():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 4, 7))
    total, largest = activation_bytes(model, torch.zeros(1, 1, 5, 4))
    # float32: conv and ReLU 3 x 5 x 4 each, Flatten the same, Linear 7, and the input 5 x 4
    assert total == 4 * (3 * 60 + 7 + 20)
    assert largest == 4 * 60


def test_batch_sizes_on_a_cpu_are_fixed_and_on_cuda_follow_the_budget_not_free_memory():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    assert batch_sizes(model, torch.zeros(1, 1, 16, 16)) == {"forward": CPU_BATCH, "backward": CPU_BATCH}
    # 1 MB per input: 8 GB hold 8192, capped at 1024; 64 MB per input: 128; never below 8
    assert cuda_rows(2**20, 8.0) == 1024
    assert cuda_rows(64 * 2**20, 8.0) == 128
    assert cuda_rows(100 * 2**20, 8.0) == 80  # 81.92 -> a multiple of 8
    assert cuda_rows(10 * 2**30, 8.0) == 8
    assert cuda_rows(64 * 2**20, 16.0) == 2 * cuda_rows(64 * 2**20, 8.0)


def test_chunks_pad_the_last_to_one_shape_and_the_results_keep_only_the_real_rows():
    x = torch.arange(10.0).view(10, 1)
    parts = list(chunks(4, x, pad=True))
    assert [rows for rows, _ in parts] == [4, 4, 2]
    assert all(c.shape == (4, 1) for _, c in parts)
    assert torch.equal(parts[-1][1], torch.tensor([[8.0], [9.0], [8.0], [8.0]]))
    assert [c.shape[0] for _, c in chunks(4, x)] == [4, 4, 2]  # on a CPU unpadded by default
    assert pad_rows(x[:3], 8, pad=False).shape[0] == 3


def test_predicted_probabilities_are_the_same_padded_or_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).eval()
    x = torch.randn(11, 1, 3, 4)
    want = model(x).softmax(-1)
    padded = torch.cat([model(c).softmax(-1)[:rows] for rows, c in chunks(4, x, pad=True)])
    assert torch.allclose(padded, want, atol=1e-6)
    assert torch.allclose(predict_probs(model, x, 4), want, atol=1e-6)


def test_a_short_chunk_is_padded_to_the_smallest_fixed_size_that_holds_it_and_its_rows_do_not_move():
    # a batch of 32 calls in shapes 32, 16 and 8 (halvings down to 8)
    assert pad_sizes(32) == [8, 16, 32]
    x = torch.randn(32 + 9, 1, 3, 4)
    assert [(rows, c.shape[0]) for rows, c in chunks(32, x, pad=True)] == [(32, 32), (9, 16)]
    assert [len(pad_rows(x[:n], 32, pad=True)) for n in (1, 8, 9, 16, 17, 31)] == [8, 8, 16, 16, 32, 32]
    assert torch.equal(pad_rows(x[:3], 32, pad=True)[3:], x[:1].expand(5, 1, 3, 4))  # copies of the first row
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 5)).eval()
    with torch.no_grad():
        want = model(x).softmax(-1)
        got = torch.cat([model(c).softmax(-1)[:rows] for rows, c in chunks(32, x, pad=True)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_cudnn_autotuning_is_for_cuda_runs_only_and_restored_after():
    before = torch.backends.cudnn.benchmark
    with cudnn_autotune(torch.device("cpu")):
        assert torch.backends.cudnn.benchmark == before
    with cudnn_autotune(torch.device("cuda")):  # only the flag: nothing runs on the device
        assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark == before


@pytest.mark.parametrize("enabled", [True, False])
def test_tf32_is_set_inside_the_block_and_restored_after(enabled):
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with tf32(enabled):
        assert torch.backends.cudnn.allow_tf32 is enabled and torch.backends.cuda.matmul.allow_tf32 is enabled
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_the_callback_refuses_a_memory_budget_that_is_not_a_positive_number():
    from callbacks import ExplainCallback
    from audio_xai.errors import UsageValueError
    for bad in (0, -1.0, float("nan"), "8", True):
        with pytest.raises(UsageValueError, match="--explainer.memory_gb"):
            ExplainCallback("saliency", memory_gb=bad)
    assert ExplainCallback("saliency", memory_gb=2).memory_gb == 2.0


def test_an_unknown_precision_is_refused_by_name_before_anything_runs():
    from callbacks import ExplainCallback
    from audio_xai.errors import UsageValueError
    from explain.pipeline import ExplanationPipeline
    with pytest.raises(UsageValueError, match="precision must be one of 32, bf16, got 'fp8'"):
        ExplanationPipeline(nn.Linear(2, 2), ["saliency"], precision="fp8")
    with pytest.raises(UsageValueError, match="--explainer.precision must be one of 32, bf16, got '16'"):
        ExplainCallback("saliency", precision="16")
