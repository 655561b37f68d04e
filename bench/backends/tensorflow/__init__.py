"""The TensorFlow backend: tf.function steps, tf.data input, tf.distribute and Horovod adapters, fused SGD."""
