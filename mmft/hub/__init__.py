"""Stage 4, sharing: the model card and push (``card``), and merging an adapter into its base for serving
(``merge``)."""
