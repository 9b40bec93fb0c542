"""Stage 1, the data: records (``records``) from sources (``sources``, ``cards``), images loaded safely (``images``),
token lengths known before any batch (``lengths``, ``imagetokens``), opt-in augmentation (``augment``), the shapes demo
data (``shapes``) and the start-up scan for bad records (``badrecords``)."""
