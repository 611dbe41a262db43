"""Compatibility with the published files, proven against the reference implementation (test-only oracle).

For each of the four heads: the reference segmentor is built with random weights and non-trivial
BatchNorm statistics, saved in the published layout (``{'model': state_dict, 'epoch', 'optimizer'}``),
loaded with ``resnest_zoo.load(..., weights=path)``, and both produce logits on an odd-sized input.
"""
from __future__ import annotations

import pytest
import torch

import resnest_zoo
from resnest_zoo.catalogue import get_entry

from conftest import randomize_batchnorm, save_published_checkpoint
from reference import build_reference, reference_logits

# one dataset per head, so all three class counts are covered
CASES = [("fcn", "voc"), ("pspnet", "ade20k"), ("deeplabv3", "cityscapes"), ("deeplabv3plus", "ade20k")]


@pytest.mark.parametrize("segmentor, dataset", CASES)
def test_logits_match_the_reference(segmentor, dataset, tmp_path):
    entry = get_entry(segmentor, dataset)
    torch.manual_seed(7)
    reference = build_reference(entry)
    randomize_batchnorm(reference, seed=11)
    with torch.no_grad():  # make the classifier outputs spread, so that a wrong layer shows
        for name, param in reference.named_parameters():
            if name.startswith("decoder.") and param.ndim == 4:
                param.mul_(4.0)
    path = save_published_checkpoint(reference, tmp_path / entry.filename, with_optimizer=True)

    model = resnest_zoo.load(segmentor, dataset, weights=path, device="cpu")
    assert not model.training

    images = torch.randn(2, 3, 67, 93, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = reference_logits(reference, images)
        actual = model(images)
    assert actual.shape == (2, entry.num_classes, 67, 93)
    assert expected.abs().max() > 0.5  # a meaningful comparison, not two near-zero tensors
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)
