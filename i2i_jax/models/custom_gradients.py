"""What a hand-written VJP of a parameter must do to match autodiff under `shard_map`."""

import jax


def summed_like_autodiff(gradient, param):
    """`gradient` summed over the mesh axes it varies along and `param` does not.

    Under shard_map, a parameter that is the same on every device (one autodiff does not
    differentiate) gets its per-device gradients summed, as autodiff would.
    """
    summed_over = tuple(
        sorted(
            jax.typeof(gradient).manual_axis_type.varying
            - jax.typeof(param).manual_axis_type.varying
        )
    )
    return jax.lax.psum(gradient, summed_over) if summed_over else gradient
