"""TensorFlow's fused momentum SGD: one ResourceApplyKerasMomentum op per variable."""
from __future__ import annotations

import functools


@functools.cache
def momentum_sgd() -> type:
    """Keras' SGD whose momentum update, on TensorFlow, is one fused ResourceApplyKerasMomentum op
    per variable (accum = momentum * accum - lr * grad; var += accum: Keras' own formula), where
    Keras 3 runs five element-wise ops that each read and write the whole variable (as the
    tf_cnn_benchmarks peer's ApplyMomentum does not). Only for plain variables: under a
    tf.distribute strategy's mirrored variables it is Keras' own update. (The JAX backend trains
    with Keras' own SGD: bench.backends.jax.backend.sgd.)"""
    import keras

    class MomentumSGD(keras.optimizers.SGD):
        def update_step(self, gradient, variable, learning_rate):
            if self.momentum == 0:
                return super().update_step(gradient, variable, learning_rate)
            import tensorflow as tf

            accum = self.momentums[self._get_variable_index(variable)].value
            if isinstance(gradient, tf.IndexedSlices) or not _plain(variable) or not _plain(accum):
                return super().update_step(gradient, variable, learning_rate)
            var = variable.value if isinstance(variable, keras.Variable) else variable
            tf.raw_ops.ResourceApplyKerasMomentum(
                var=var.handle, accum=accum.handle, lr=tf.cast(learning_rate, var.dtype),
                grad=tf.cast(gradient, var.dtype), momentum=tf.cast(self.momentum, var.dtype),
                use_nesterov=bool(self.nesterov))

    return MomentumSGD


def _plain(v) -> bool:
    """A single-device TensorFlow resource variable (not a tf.distribute one)."""
    import keras
    import tensorflow as tf

    v = v.value if isinstance(v, keras.Variable) else v
    return isinstance(v, tf.Variable) and not isinstance(v, tf.distribute.DistributedValues) and hasattr(v, "handle")
