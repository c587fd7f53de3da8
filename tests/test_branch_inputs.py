"""Per-branch inputs: model([x_0, x_1]) with one batch per branch (other crops, sizes, channel counts)."""

import pytest
import torch
import torch.nn.functional as F

import crossvit


def test_the_same_batch_for_every_branch_is_todays_forward():
    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_9_240").eval()
    x = torch.randn(2, 3, 240, 240)
    small = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False)  # what the L-branch sees
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(model([x, x]), expected, rtol=0, atol=0)
        torch.testing.assert_close(model((x, small)), expected, rtol=0, atol=0)  # the branch's own size as is
        features = model.forward_features([x, small])
    torch.testing.assert_close(model.forward_head(features), expected, rtol=0, atol=0)


def test_other_channel_counts_per_branch_build_train_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_micro_32", in_chans=(3, 1), num_classes=4)
    assert model.config.branch_chans() == [3, 1]
    assert model.tokenizers[1].proj.weight.shape[1] == 1
    rgb, depth = torch.randn(4, 3, 32, 32), torch.randn(4, 1, 32, 32)
    labels = torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model([rgb, depth]), labels)
    loss.backward()
    optimizer.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()) if p.grad is not None)
    path = tmp_path / "two_inputs.safetensors"
    crossvit.save_checkpoint(model.eval(), path)
    loaded = crossvit.create_model(checkpoint=path).eval()
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded([rgb, depth]), model([rgb, depth]), rtol=0, atol=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 inference takes lists too
        assert loaded([rgb, depth]).shape == (4, 4)


@pytest.mark.parametrize("inputs, message", [
    (lambda: [torch.zeros(1, 3, 32, 32)], "has 2 branches: give one input per branch, got 1"),
    (lambda: [torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)], r"branch 1 takes images of shape \(batch, 1, S, S\)"),
    (lambda: [torch.zeros(1, 3, 32, 32), torch.zeros(2, 1, 32, 32)], "the batch of branch 0"),
    (lambda: torch.zeros(1, 3, 32, 32), r"take \[3, 1\] channels: give a list with one batch per branch"),
])
def test_inputs_that_do_not_fit_are_one_line(inputs, message):
    model = crossvit.create_model("crossvit_micro_32", in_chans=(3, 1))
    with pytest.raises(crossvit.CrossViTError, match=message):
        model(inputs())


def test_in_chans_per_branch_must_count_the_branches():
    with pytest.raises(crossvit.CrossViTError, match=r"in_chans=\[3, 1, 1\] gives 3 counts for 2 branches"):
        crossvit.create_model("crossvit_micro_32", in_chans=(3, 1, 1))
