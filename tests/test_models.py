"""The model zoo: registry, architectures, parameter counts, FLOPs, and trainability."""
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import models
from helpers import cached_describe


# ---- registry ---------------------------------------------------------------------------
def test_registry_lists_every_family():
    names = models.list_models()
    for n in ["vgg11", "vgg11_lrn", "vgg13", "vgg16_c", "vgg16", "vgg19", "vgg13_bn",
              "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]:
        assert n in names
    assert models.list_models("resnet*") == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(ValueError) as e:
        models.build_model("resnet19")
    assert "resnet19" in str(e.value) and "resnet18" in str(e.value) and "vgg13" in str(e.value)


@pytest.mark.parametrize("kwargs,bad", [({"width": 0}, "width=0"), ({"num_classes": 0}, "num_classes=0"),
                                        ({"head": "tiny"}, "head='tiny'")])
def test_bad_arguments_are_named(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        models.build_model("vgg11", **kwargs)


def test_layer_names_are_deterministic():
    a = models.build_model("resnet18", width=0.125)
    b = models.build_model("resnet18", width=0.125)
    assert [w.path for w in a.weights] == [w.path for w in b.weights]
    assert [l.name for l in a.layers] == [l.name for l in b.layers]
    assert "stage2_block1_proj_conv" in [l.name for l in a.layers]


# ---- architectures ----------------------------------------------------------------------
def test_vgg13_at_32_is_the_seed_course_network():
    m = models.build_model("vgg13", num_classes=100)
    convs = [l for l in m.layers if isinstance(l, layers.Conv2D)]
    pools = [l for l in m.layers if isinstance(l, layers.MaxPool2D)]
    dense = [l for l in m.layers if isinstance(l, layers.Dense)]
    assert [c.filters for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" and c.activation.__name__ == "relu"
               for c in convs)
    assert len(pools) == 5 and all(p.pool_size == (2, 2) and p.strides == (2, 2) for p in pools)
    # every pair of convs is followed by a pool
    kinds = [type(l).__name__ for l in m.layers if isinstance(l, (layers.Conv2D, layers.MaxPool2D))]
    assert kinds == ["Conv2D", "Conv2D", "MaxPooling2D"] * 5
    assert [d.units for d in dense] == [256, 128, 100]
    assert [d.activation.__name__ for d in dense] == ["relu", "relu", "linear"]
    assert not any(isinstance(l, (layers.Dropout, layers.BatchNormalization)) for l in m.layers)
    # The course's network, counted by hand: 9,416,256 conv + 177,124 dense parameters... as built:
    assert m.count_params() == sum(l.count_params() for l in convs + dense) == 9_582_116


def test_vgg_at_224_has_the_paper_head():
    m = models.build_model("vgg11", num_classes=1000, input_shape=(224, 224, 3), width=0.125)
    assert [d.units for d in m.layers if isinstance(d, layers.Dense)] == [512, 512, 1000]
    assert m.get_layer("flatten").output.shape[1] == 7 * 7 * 64


def test_vgg_c_has_1x1_convs_and_lrn_variant_has_lrn():
    c = models.build_model("vgg16_c", width=0.125)
    assert sum(1 for l in c.layers if isinstance(l, layers.Conv2D) and l.kernel_size == (1, 1)) == 3
    a = models.build_model("vgg11_lrn", width=0.125)
    assert a.layers[2].name == "unit1_lrn"


def test_vgg_bn_flavour_puts_bn_after_every_conv():
    m = models.build_model("vgg13_bn", width=0.125)
    names = [l.name for l in m.layers]
    convs = [l.name for l in m.layers if isinstance(l, layers.Conv2D)]
    for c in convs:
        assert names[names.index(c) + 1] == f"{c}_bn"


def test_resnet18_at_32_uses_the_course_stem_and_stage_table():
    m = models.build_model("resnet18")
    stem = m.get_layer("stem_conv")
    assert stem.kernel_size == (3, 3) and stem.strides == (1, 1) and stem.filters == 64
    pool = m.get_layer("stem_pool")
    assert pool.pool_size == (2, 2) and pool.strides == (1, 1) and pool.padding == "same"
    assert tuple(pool.output.shape[1:]) == (32, 32, 64)
    for stage, (hw, ch) in enumerate([(32, 64), (16, 128), (8, 256), (4, 512)], start=1):
        assert tuple(m.get_layer(f"stage{stage}_block2_out").output.shape[1:]) == (hw, hw, ch)
    # projections exactly where the shape changes
    projs = sorted(l.name for l in m.layers if l.name.endswith("_proj_conv"))
    assert projs == ["stage2_block1_proj_conv", "stage3_block1_proj_conv", "stage4_block1_proj_conv"]
    assert isinstance(m.layers[-2], layers.GlobalAveragePooling2D)


def test_resnet_at_224_uses_the_paper_stem():
    m = models.build_model("resnet34", num_classes=1000, input_shape=(224, 224, 3), width=0.125)
    stem = m.get_layer("stem_conv")
    assert stem.kernel_size == (7, 7) and stem.strides == (2, 2)
    assert tuple(m.get_layer("stem_pool").output.shape[1:3]) == (56, 56)
    blocks = [sum(1 for l in m.layers if l.name.startswith(f"stage{s}_block") and l.name.endswith("_add"))
              for s in range(1, 5)]
    assert blocks == [3, 4, 6, 3]


def test_bottleneck_expands_by_four():
    m = models.build_model("resnet50", width=0.125)
    assert m.get_layer("stage1_block1_3_conv").filters == 32  # 4 x (64 x 0.125)
    assert m.get_layer("stage1_block1_1_conv").kernel_size == (1, 1)
    assert "stage1_block1_proj_conv" in [l.name for l in m.layers]


def test_width_scales_every_channel_count():
    full = models.build_model("resnet18")
    half = models.build_model("resnet18", width=0.5)
    for lf, lh in zip(full.layers, half.layers):
        if isinstance(lf, layers.Conv2D):
            assert lh.filters == round(lf.filters * 0.5)
    tiny = models.build_model("vgg11", width=0.001)
    assert min(l.filters for l in tiny.layers if isinstance(l, layers.Conv2D)) == 1


# ---- parameter counts and FLOPs against the literature ------------------------------------
@pytest.mark.parametrize("name,millions", [("vgg11", 133), ("vgg11_lrn", 133), ("vgg13", 133),
                                           ("vgg16_c", 134), ("vgg16", 138), ("vgg19", 144)])
def test_vgg_params_match_paper_table2(name, millions):
    assert round(cached_describe(name, 1000, 224).params / 1e6) == millions


@pytest.mark.parametrize("name,millions", [("resnet18", 11.7), ("resnet34", 21.8), ("resnet50", 25.6)])
def test_resnet_params_within_one_percent(name, millions):
    assert cached_describe(name, 1000, 224).params == pytest.approx(millions * 1e6, rel=0.01)


def test_resnet50_is_about_4_1_gmacs():
    assert cached_describe("resnet50", 1000, 224).flops / 2 == pytest.approx(4.1e9, rel=0.02)


def _profiler_flops(model) -> int:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    @tf.function(autograph=False)
    def forward(x):
        return model(x, training=False)

    cf = forward.get_concrete_function(tf.TensorSpec([1, *model.input.shape[1:]], tf.float32))
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    graph = convert_variables_to_constants_v2(cf).graph
    return tf.compat.v1.profiler.profile(graph=graph, options=opts).total_float_ops


@pytest.mark.parametrize("name,width", [("vgg13", 0.25), ("resnet18", 0.25), ("resnet50", 0.5),
                                        ("vgg16_c_bn", 0.25)])
def test_flops_agree_with_tensorflow_profiler(name, width):
    m = models.build_model(name, width=width)
    assert models.describe_model(m).flops == pytest.approx(_profiler_flops(m), rel=0.02)


def test_flops_hand_count_small_vgg():
    d = cached_describe("vgg13")
    conv1 = d.layers[0]
    assert conv1.name == "unit1_conv1" and conv1.output_shape == (32, 32, 64)
    assert conv1.flops == 2 * 3 * 3 * 3 * 64 * 32 * 32 + 32 * 32 * 64
    assert d.flops == sum(l.flops for l in d.layers)


def test_describe_table_lists_every_layer():
    d = models.describe("resnet18", width=0.125)
    text = d.table()
    assert "stage4_block2_add" in text and "resnet18:" in text.splitlines()[-1]
    assert d.params == sum(l.params for l in d.layers)


# ---- every model builds, runs and trains at tiny width -------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", models.list_models())
def test_every_model_builds_and_trains(name):
    tf.keras.utils.set_random_seed(0)
    m = models.build_model(name, num_classes=10, width=0.125)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    y = np.array([1, 7])
    assert tuple(m(x, training=False).shape) == (2, 10)
    opt = tf.keras.optimizers.Adam(1e-3)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, m(x, training=True),
                                                                              from_logits=True))
    grads = tape.gradient(loss, m.trainable_variables)
    opt.apply_gradients(zip(grads, m.trainable_variables))
    assert np.isfinite(loss.numpy())
    assert all(g is not None for g in grads)
