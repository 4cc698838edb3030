"""Image operations: the random pixel shift of the augmentation."""

import torch

from limiting_dynamics.data import images


def test_random_shift_translates_each_image_and_fills_with_background():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    fill = torch.full((1, 1, 1, 1), -1.0)
    g = torch.Generator().manual_seed(0)
    assert images.random_shift(x, 0, g, fill) is x
    out = images.random_shift(x, 1, torch.Generator().manual_seed(3), fill)
    off = torch.randint(0, 3, (2, 2), generator=torch.Generator().manual_seed(3))
    for n in range(2):
        dy, dx = int(off[0, n]) - 1, int(off[1, n]) - 1
        expect = torch.full((4, 4), -1.0)
        for i in range(4):
            for j in range(4):
                si, sj = i + dy, j + dx
                if 0 <= si < 4 and 0 <= sj < 4:
                    expect[i, j] = x[n, 0, si, sj]
        assert torch.equal(out[n, 0], expect)
