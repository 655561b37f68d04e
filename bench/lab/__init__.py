"""Experiments and comparisons that are not the library: overhead against Keras fit, BatchNorm variants, the GPU check, the tf_cnn_benchmarks peer."""
