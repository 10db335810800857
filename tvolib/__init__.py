"""tvolib: the TVOMNER model and its pipeline. Data flows one way, as in the paper's Figure 2:

files -> resolved resources (``resources``, ``weights``) -> stage caches (``tfo``, ``vfo``, ``cache``)
-> inputs (``inputs``) -> model (``model``, ``assemble``; ``baselines``) -> predictions
(``train``, ``predict``, ``checkpoint``) -> tables (``evaluate``, ``stats``, ``runs``, ``reports``).

* ``config`` — the data, model and training dataclasses; ``settings`` — named experiment settings
* ``data``, ``io``, ``images`` — tweets, readers and writers, images
* ``tfo`` — Textual Feature Optimization (candidates, knowledge, relevance, Eq. 1)
* ``vfo`` — Visual Feature Optimization (image encoders, LLM phrases, grounding, Eq. 2–3)
* ``model`` — Cross-modal Feature Fusion (Eq. 4–9); ``probing`` — does the model use the image?
* ``runs`` — the papermill experiment batch; ``reports`` — every notebook into ``reports/``
* ``cli`` — ``tvomner train | predict | ablations | rehash``; ``demo``, ``viz`` — case studies and plots
"""
__version__ = "0.1.0"
