"""Stage 3, evaluation outside training: ``mmft eval`` / ``mmft predict`` (``inference``) and the HTML report
(``report``). The metrics themselves are ``evaluate`` modules in ``mmft/metrics/``."""
