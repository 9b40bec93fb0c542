"""The ``mmft`` command (``cli``) and its data commands: ``data check`` (``datacheck`` over ``datastream``,
``datascan``, ``datareport``) and ``data show`` (``datashow``), sharing their flags (``dataargs``)."""
