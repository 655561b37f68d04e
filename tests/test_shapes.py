"""The seed course's shape facts, on real Keras layers and on models.shapes alike."""
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from models.shapes import conv_output_size, pool_output_size, upsample_output_size


def _out(layer, size):
    return tuple(layer(np.zeros((1, size, size, 3), np.float32)).shape[1:3])


@pytest.mark.parametrize("padding,stride,expected", [("valid", 1, 28), ("same", 1, 32), ("same", 2, 16)])
def test_conv2d_4_5_on_32(padding, stride, expected):
    assert _out(layers.Conv2D(4, 5, strides=stride, padding=padding), 32) == (expected, expected)
    assert conv_output_size(32, 5, stride, padding) == expected


def test_tf_nn_conv2d_valid_stride2():
    x = tf.zeros((1, 32, 32, 3))
    w = tf.zeros((5, 5, 3, 4))
    assert tuple(tf.nn.conv2d(x, w, strides=2, padding="VALID").shape[1:3]) == (14, 14)
    assert conv_output_size(32, 5, 2, "VALID") == 14


@pytest.mark.parametrize("pool,expected", [(2, 7), (3, 6)])
def test_maxpool_stride2_on_14(pool, expected):
    assert _out(layers.MaxPool2D(pool, 2), 14) == (expected, expected)
    assert pool_output_size(14, pool, 2, "valid") == expected


@pytest.mark.parametrize("factor,expected", [(3, 21), (2, 14)])
def test_upsampling_on_7(factor, expected):
    assert _out(layers.UpSampling2D(factor), 7) == (expected, expected)
    assert upsample_output_size(7, factor) == expected


@pytest.mark.parametrize("size", [1, 7, 14, 31, 32, 33, 224])
@pytest.mark.parametrize("kernel,stride", [(1, 1), (3, 1), (3, 2), (5, 2), (7, 2), (2, 2), (3, 3)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_helper_matches_keras_everywhere(size, kernel, stride, padding):
    if padding == "valid" and kernel > size:
        with pytest.raises(ValueError):
            conv_output_size(size, kernel, stride, padding)
        return
    expected = conv_output_size(size, kernel, stride, padding)
    assert _out(layers.Conv2D(1, kernel, strides=stride, padding=padding), size)[0] == expected
    assert _out(layers.MaxPool2D(kernel, stride, padding=padding), size)[0] == expected


def test_helper_rejects_bad_padding():
    with pytest.raises(ValueError, match="padding='full'"):
        conv_output_size(32, 3, 1, "full")
