"""Contrastive training of dual encoders (CLIP, SigLIP / SigLIP 2, open_clip) for retrieval and zero-shot
classification, over the same records, cards and sources as the generative recipes.

Modules: ``pairs`` (the pair view of records), ``collator``, ``losses`` (InfoNCE, sigmoid; gathered across
processes with gradients), ``models`` (one adapter per implementation), ``towers`` (what trains), ``trainer``
(``ContrastiveTrainer``), ``evaluation`` (Recall@K, zero-shot), ``report``, ``card``, ``workflow`` (the recipe's
story, ``run_retrieval``) and ``embed`` (``mmft embed``).
"""
