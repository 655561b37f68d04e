"""The JAX backend: one jitted stateless step over a device mesh, fed by host numpy batches."""
