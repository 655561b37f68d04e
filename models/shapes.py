"""Output-size rules for convolution, pooling and upsampling (the seed course's shape facts)."""
from __future__ import annotations

import math


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: str = "valid",
                     dilation: int = 1) -> int:
    """Spatial output size of a convolution or pooling window along one axis.

    'valid': floor((n - d*(k-1) - 1) / s) + 1.  'same': ceil(n / s), as TensorFlow pads.
    """
    padding = padding.lower()
    if size < 1 or kernel < 1 or stride < 1 or dilation < 1:
        raise ValueError(f"sizes must be positive: size={size}, kernel={kernel}, "
                         f"stride={stride}, dilation={dilation}")
    if padding == "same":
        return math.ceil(size / stride)
    if padding == "valid":
        effective = dilation * (kernel - 1) + 1
        if effective > size:
            raise ValueError(f"kernel {kernel} (dilation {dilation}) does not fit in size {size}")
        return (size - effective) // stride + 1
    raise ValueError(f"padding must be 'valid' or 'same'. Received: padding={padding!r}")


# Pooling windows follow exactly the same rule as convolutions.
pool_output_size = conv_output_size


def upsample_output_size(size: int, factor: int) -> int:
    """Nearest/bilinear upsampling repeats each row/column `factor` times."""
    if factor < 1:
        raise ValueError(f"upsampling factor must be >= 1. Received: factor={factor}")
    return size * factor
