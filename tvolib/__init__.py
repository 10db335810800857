"""tvolib: the TVOMNER model and its pipeline (files → caches → model → reports).

Modules follow the paper's Figure 2:

* ``data``, ``images``, ``cache``, ``evaluate``, ``reports`` — the foundation
* ``tfo`` — Textual Feature Optimization (candidates, knowledge, relevance, Eq. 1)
* ``vfo`` — Visual Feature Optimization (image encoders, LLM phrases, grounding, Eq. 2–3)
* ``model`` — Cross-modal Feature Fusion (Eq. 4–9) and the baselines
* ``inputs`` (input building, collation), ``assemble`` (model from configs), ``checkpoint``
  (save/load/resume), ``device`` (device, precision), ``train`` (the loop), ``predict`` (new tweets)
"""
__version__ = "0.1.0"
