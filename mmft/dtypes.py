"""The ``--dtype`` vocabulary of ``mmft merge``, ``mmft eval`` and ``mmft predict``: one short name per torch dtype.

Its own module, without torch, so that the command line lists the choices without loading torch, and both the merge
and the inference modules (inference loads adapters through merge) take the names from one place.
"""

DTYPE_NAMES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
