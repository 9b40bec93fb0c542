"""Stage 2, training: records into batches (``collator``, ``packing``), what trains (``modeling``, ``liger``), the
``Trainer`` subclass (``trainer``), complete checkpoints and exact resume (``checkpoints``), continuing an adapter on
new data (``continual``)."""
