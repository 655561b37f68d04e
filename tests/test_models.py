"""The model zoo: registry, architectures, parameter counts, FLOPs, and trainability."""
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import models


# ---- registry ---------------------------------------------------------------------------
def test_registry_lists_every_family():
    names = models.list_models()
    for n in ["vgg11", "vgg11_lrn", "vgg13", "vgg16_c", "vgg16", "vgg19", "vgg13_bn",
              "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "lenet5", "alexnet", "alexnet_lrn",
              "googlenet", "googlenet_aux", "densenet121", "densenet169", "densenet201"]:
        assert n in names
    assert models.list_models("resnet*") == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert {models.get_entry(n).family for n in names} == {"lenet", "alexnet", "vgg", "googlenet", "resnet",
                                                            "densenet"}


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


def test_lenet5_is_the_course_table_with_max_pooling_and_relu():
    m = models.build_model("lenet5", num_classes=10, input_shape=(32, 32, 1))
    convs = [l for l in m.layers if isinstance(l, layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.padding, c.activation.__name__) for c in convs] == [
        (6, (5, 5), "valid", "relu"), (16, (5, 5), "valid", "relu")]
    assert [type(l).__name__ for l in m.layers if isinstance(l, layers.MaxPooling2D)] == ["MaxPooling2D"] * 2
    assert m.get_layer("flatten").output.shape[1] == 5 * 5 * 16
    assert [d.units for d in m.layers if isinstance(d, layers.Dense)] == [120, 84, 10]


def test_alexnet_is_torchvisions_at_224_and_has_a_cifar_stem_at_32():
    m = models.build_model("alexnet", num_classes=1000, input_shape=(224, 224, 3))
    convs = [l for l in m.layers if isinstance(l, layers.Conv2D)]
    assert [(c.filters, c.kernel_size[0], c.strides[0]) for c in convs] == [
        (64, 11, 4), (192, 5, 1), (384, 3, 1), (256, 3, 1), (256, 3, 1)]
    assert tuple(m.get_layer("conv1").output.shape[1:3]) == (55, 55)  # 2 pixels of padding, as torchvision
    assert tuple(m.get_layer("pool5").output.shape[1:]) == (6, 6, 256)
    assert [d.units for d in m.layers if isinstance(d, layers.Dense)] == [4096, 4096, 1000]
    assert sum(isinstance(l, layers.Dropout) for l in m.layers) == 2
    c = models.build_model("alexnet")
    assert c.get_layer("conv1").kernel_size == (3, 3) and c.get_layer("conv1").strides == (1, 1)
    assert tuple(c.get_layer("pool5").output.shape[1:]) == (4, 4, 256)
    lrn = models.build_model("alexnet_lrn", width=0.125)
    assert [l.name for l in lrn.layers if "lrn" in l.name] == ["conv1_lrn", "conv2_lrn"]
    # the adaptive pool brings a larger input's map to 6x6, as torchvision's does
    big = models.build_model("alexnet", num_classes=10, input_shape=(256, 256, 3), width=0.125)
    assert tuple(big.get_layer("avg_pool").output.shape[1:3]) == (6, 6)


def test_googlenet_modules_follow_the_inception_table():
    from models.googlenet import INCEPTION

    m = models.build_model("googlenet", num_classes=1000, input_shape=(224, 224, 3))
    for name, (c1, _, c3, _, c5, pool) in INCEPTION.items():
        assert m.get_layer(f"inception{name}_concat").output.shape[-1] == c1 + c3 + c5 + pool
    assert tuple(m.get_layer("inception3a_concat").output.shape[1:3]) == (28, 28)
    assert tuple(m.get_layer("inception5b_concat").output.shape[1:]) == (7, 7, 1024)
    assert m.get_layer("inception3a_5x5_conv").kernel_size == (3, 3)  # torchvision's 3x3, not the paper's 5x5
    assert all(l.name.replace("_conv", "_bn") in {x.name for x in m.layers}
               for l in m.layers if isinstance(l, layers.Conv2D))  # BatchNorm after every convolution
    assert len(m.outputs) == 1
    aux = models.build_model("googlenet_aux", num_classes=10, width=0.125)
    assert len(aux.outputs) == 3 and models.output_weights(aux) == (1.0, 0.3, 0.3)
    assert models.output_weights(m) == (1.0,)
    c = models.build_model("googlenet", width=0.125)
    assert c.get_layer("conv1_conv").kernel_size == (3, 3) and "pool1" not in {l.name for l in c.layers}
    assert tuple(c.get_layer("inception5b_concat").output.shape[1:3]) == (8, 8)


@pytest.mark.slow  # DenseNet-201 and its kin take seconds each to build
@pytest.mark.parametrize("name,blocks,features", [("densenet121", (6, 12, 24, 16), 1024),
                                                  ("densenet169", (6, 12, 32, 32), 1664),
                                                  ("densenet201", (6, 12, 48, 32), 1920)])
def test_densenet_blocks_grow_by_32_and_transitions_halve(name, blocks, features, described):
    # the layers of the 224 px build the published parameter counts below describe too (built once)
    channels = {l.name: l.output_shape[-1] for l in described(name, 1000, 224).layers}
    if name != "densenet121":  # the deeper ones share the builder: their block depths and widths suffice
        assert all(f"block{b}_layer{n}_concat" in channels and f"block{b}_layer{n + 1}_concat" not in channels
                   for b, n in enumerate(blocks, start=1))
        assert channels["final_bn"] == features
        return
    for b, n in enumerate(blocks, start=1):
        assert f"block{b}_layer{n}_concat" in channels and f"block{b}_layer{n + 1}_concat" not in channels
    assert channels["block1_layer1_1_conv"] == 128 and channels["block1_layer1_2_conv"] == 32  # the convs' filters
    assert channels["block1_layer6_concat"] == 64 + 6 * 32
    assert channels["transition1_conv"] == (64 + 6 * 32) // 2
    assert channels["final_bn"] == features
    c = models.build_model(name, width=0.125)
    assert c.get_layer("stem_conv").kernel_size == (3, 3) and c.get_layer("stem_conv").filters == 2 * 4
    assert tuple(c.get_layer("final_relu").output.shape[1:3]) == (4, 4)


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "googlenet"])
def test_width_scales_every_channel_and_hidden_unit_of_the_new_families(name):
    full, half = models.build_model(name), models.build_model(name, width=0.5)
    for lf, lh in zip(full.layers, half.layers):
        if isinstance(lf, layers.Conv2D):
            assert lh.filters == max(1, round(lf.filters * 0.5)), lf.name
        if isinstance(lf, layers.Dense) and lf.name != "logits":
            assert lh.units == max(1, round(lf.units * 0.5)), lf.name


@pytest.mark.parametrize("name,kwargs,layer", [("alexnet", {"form": "imagenet"}, "pool5"),
                                               ("lenet5", {"input_shape": (12, 12, 3)}, "conv2")])
def test_a_map_that_vanishes_names_its_layer(name, kwargs, layer):
    with pytest.raises(models.ModelShapeError, match=f"vanishes at {layer}:"):
        models.build_model(name, **kwargs)


def test_local_response_norm_matches_tensorflows():
    from models.common import local_response_norm_layer

    x = np.random.default_rng(0).standard_normal((2, 5, 5, 7)).astype(np.float32) * 30
    ours = np.asarray(local_response_norm_layer()()(x))
    ref = tf.nn.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_adaptive_average_pool_takes_torchvisions_windows():
    from models.common import adaptive_avg_pool_layer

    x = np.random.default_rng(1).standard_normal((1, 7, 9, 2)).astype(np.float32)
    got = np.asarray(adaptive_avg_pool_layer()(6)(x))
    rows = [(i * 7 // 6, -(-(i + 1) * 7 // 6)) for i in range(6)]
    cols = [(j * 9 // 6, -(-(j + 1) * 9 // 6)) for j in range(6)]
    want = np.array([[x[0, a:b, c:d].mean(axis=(0, 1)) for c, d in cols] for a, b in rows])
    np.testing.assert_allclose(got[0], want, rtol=1e-6)
    assert rows[0] == (0, 2) and rows[1] == (1, 3)  # overlapping windows where 7 does not divide by 6


# ---- parameter counts and FLOPs against the literature ------------------------------------
# trainable parameters at 224x224 with 1000 classes (BatchNorm's moving statistics are not trainable)
@pytest.mark.slow  # DenseNet-201 and its kin take seconds each to build
@pytest.mark.parametrize("name,published", [("alexnet", 61_100_840), ("googlenet", 6_624_904),
                                            ("densenet121", 7_978_856), ("densenet169", 14_149_480),
                                            ("densenet201", 20_013_928)])
def test_new_families_match_published_trainable_parameter_counts(name, published, described):
    d = described(name, 1000, 224)
    assert d.trainable_params == pytest.approx(published, rel=0.01)
    assert d.trainable_params == published  # as built, exactly torchvision's


def test_lenet5_has_exactly_61706_parameters():
    d = models.describe("lenet5", num_classes=10, input_shape=(32, 32, 1))
    assert d.trainable_params == d.params == 61_706

@pytest.mark.parametrize("name,millions", [("vgg11", 133), ("vgg11_lrn", 133), ("vgg13", 133),
                                           ("vgg16_c", 134), ("vgg16", 138), ("vgg19", 144)])
def test_vgg_params_match_paper_table2(name, millions, described):
    assert round(described(name, 1000, 224).params / 1e6) == millions


@pytest.mark.parametrize("name,millions", [("resnet18", 11.7), ("resnet34", 21.8), ("resnet50", 25.6)])
def test_resnet_params_within_one_percent(name, millions, described):
    assert described(name, 1000, 224).params == pytest.approx(millions * 1e6, rel=0.01)


def test_resnet50_is_about_4_1_gmacs(described):
    assert described("resnet50", 1000, 224).flops / 2 == pytest.approx(4.1e9, rel=0.02)


def _profiler_flops(model) -> int:
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    @tf.function(autograph=False)
    def forward(x):
        return models.main_output(model(x, training=False))

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


# describe() counts convolutions and dense layers; the profiler also counts BatchNorm, pooling and
# concatenations, which weigh more in GoogLeNet's and DenseNet's many thin layers: within 3%
@pytest.mark.slow  # DenseNet-201 and its kin take seconds each to build
@pytest.mark.parametrize("name,width,size", [("lenet5", 1.0, 32), ("alexnet", 0.25, 32), ("alexnet_lrn", 0.25, 224),
                                             ("googlenet", 0.25, 32), ("densenet121", 0.25, 32)])
def test_flops_of_the_new_families_agree_with_tensorflow_profiler(name, width, size):
    m = models.build_model(name, width=width, input_shape=(size, size, 3))
    assert models.describe_model(m).flops == pytest.approx(_profiler_flops(m), rel=0.03)


def test_flops_hand_count_small_vgg(described):
    d = described("vgg13")
    conv1 = d.layers[0]
    assert conv1.name == "unit1_conv1" and conv1.output_shape == (32, 32, 64)
    assert conv1.flops == 2 * 3 * 3 * 3 * 64 * 32 * 32 + 32 * 32 * 64
    assert d.flops == sum(l.flops for l in d.layers)


@pytest.mark.parametrize("name,size", [("vgg16_c_bn", 224), ("googlenet_aux", 32), ("densenet121", 32)])
def test_describe_reads_shapes_only_and_agrees_with_a_model_built_with_its_weights(name, size):
    from keras.src.backend.common import global_state

    pending = global_state.get_global_attribute("uninitialized_variables")
    before = list(pending or [])
    d = models.describe(name, num_classes=1000, input_shape=(size, size, 3), width=0.25)
    # the weights it never drew are not left for Keras to draw at the next StatelessScope's end
    assert global_state.get_global_attribute("uninitialized_variables") is pending and list(pending or []) == before
    built = models.build_model(name, num_classes=1000, input_shape=(size, size, 3), width=0.25)
    assert d == models.describe_model(built, name=name, width=0.25)
    with pytest.raises(models.ModelShapeError):
        models.describe("alexnet", input_shape=(8, 8, 3), form="imagenet")
    assert global_state.get_global_attribute("uninitialized_variables") is pending


def test_describe_table_lists_every_layer():
    d = models.describe("resnet18", width=0.125)
    text = d.table()
    assert "stage4_block2_add" in text and "resnet18:" in text.splitlines()[-1]
    assert d.params == sum(l.params for l in d.layers)


# ---- every model builds, runs and trains at tiny width -------------------------------------
# every builder and every variant it has (LRN, BN, 1x1 convs, bottlenecks, auxiliary heads);
# deeper members of a family (resnet101/152, densenet169/201, vgg16/19) add only repeats
# the CIFAR forms (32 px) of each family; every model trains at 224 px in the test below
TRAINED = ["lenet5", "alexnet_lrn", "vgg11_lrn", "vgg13", "vgg16_c_bn", "googlenet_aux", "resnet18"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
def test_every_model_builds_and_trains(name):
    tf.keras.utils.set_random_seed(0)
    from bench.backends.keras_common import training_loss

    m = models.build_model(name, num_classes=10, width=0.125)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    y = np.array([1, 7])
    assert tuple(models.main_output(m(x, training=False)).shape) == (2, 10)
    opt = tf.keras.optimizers.Adam(1e-3)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(training_loss(m(x, training=True), y, models.output_weights(m))[0])
    grads = tape.gradient(loss, m.trainable_variables)
    opt.apply_gradients(zip(grads, m.trainable_variables))
    assert np.isfinite(loss.numpy())
    assert all(g is not None for g in grads)


# TensorFlow 2.21's oneDNN CPU kernels crash the process (heap corruption) on a 1x1 stride-2
# convolution's gradient with 8 or fewer input channels on a 56x56 map, which resnet18/34 at
# 224 px have below width 0.25 (the stage-2 projection); every other model runs at 1/16
FINITE_WIDTH = {"resnet18": 0.25, "resnet34": 0.25}
# where SGD diverged at 224 px: at 0.1 vgg16, vgg19 and alexnet, at 0.01 every VGG with BatchNorm
SGD_PRONE = ["alexnet", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg16_c_bn", "vgg19_bn"]
# deeper instances of families whose builder and blocks run here at a smaller depth (densenet121,
# resnet50): half of this test's time; `pytest --extra-large` runs them
DEEPEST = ["densenet169", "densenet201", "resnet101", "resnet152"]


def _finite_case(name: str, optimizer: str):
    return pytest.param(name, optimizer, marks=[pytest.mark.extra_large] if name in DEEPEST else [])


@pytest.mark.slow
@pytest.mark.parametrize("name,optimizer", [_finite_case(m, "adam") for m in models.list_models()]
                         + [_finite_case(m, "sgd") for m in SGD_PRONE])
def test_throughput_defaults_stay_finite_for_60_steps_at_224_px(name, optimizer):
    """A throughput run's default optimizer setting (bench.config.schema.THROUGHPUT_LR) trains every
    registered model at 224 px for 60 steps without a non-finite loss."""
    import keras

    from bench.config.schema import THROUGHPUT_LR, RunConfig
    from bench.measure.timing import run_steps
    from bench.runner.session import open_session
    from bench.runner.validate import prepare

    cfg = RunConfig(model=name, image_size=224, width=FINITE_WIDTH.get(name, 0.0625), batch_size=2, steps=60,
                    warmup_steps=0, optimizer=optimizer, progress=False)
    assert cfg.lr == THROUGHPUT_LR[optimizer]
    session = open_session(prepare(cfg)).build()
    timing = run_steps(session.step.run, warmup=0, timed=59, global_batch=2, device_sync=session.step.device_sync)
    assert len(timing.losses) == 60 and np.isfinite(timing.losses).all()  # NonFiniteLoss would have raised
    del session
    keras.backend.clear_session()
