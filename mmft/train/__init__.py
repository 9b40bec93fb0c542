"""Stage 2, training: records into batches (``collator``, with ``labels`` and the ``overlength`` policy;
``packing``), what trains (``modeling``, ``liger``), the ``Trainer`` subclass (``trainer``, with ``length_sampling``
and ``generation_eval``), complete checkpoints and exact resume (``checkpoints``), continuing an adapter on new data
(``continual``: ``starting_adapter``, ``replay``, ``retention``)."""
