"""Model cost: parameters and FLOPs counted on the traced TensorFlow graph."""

from __future__ import annotations

import keras


def count_flops(model: keras.Model) -> int:
    """FLOPs of one image's forward pass, from TensorFlow's profiler over the frozen graph.

    A multiply-add counts as two. Needs the TensorFlow backend.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    shape = [1, *model.input_shape[1:]]
    spec = tf.TensorSpec(shape, tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=frozen.graph, options=options)
    return int(profile.total_float_ops)
