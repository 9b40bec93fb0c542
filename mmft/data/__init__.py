"""Stage 1, the data: records (``records``) from sources (``sources``, ``cards``), images loaded safely (``images``),
token lengths known before any batch (``lengths``, ``imagetokens``), opt-in augmentation (``augment``), the shapes demo
data (``shapes``) and the start-up scan for bad records (``badrecords``).

The first four lean on modules that each do one part of their job: records on ``record_conversion``,
``record_fast_path`` and ``record_errors``; sources on ``record_datasets``, ``local_files``, ``row_mapping`` and
``source_errors``; cards on ``card_schema``, ``columns``, ``column_detection`` and ``card_errors``; images on
``image_refs``, ``image_headers``, ``image_geometry`` and ``image_errors``."""
