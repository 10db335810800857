"""Textual Feature Optimization (section 4.1): candidate tagger, knowledge sources, relevance
filter, retrieval-augmented input template and text encoder (Eq. 1).

Modules (imported lazily by the caller, so ``import tvolib.tfo`` stays cheap):

* ``tvolib.tfo.tagger``: ``TaggerConfig``, ``CandidateTagger``, ``train_tagger``, ``save_tagger``, ``load_tagger``
* ``tvolib.tfo.candidates``: ``make_candidates``, ``span_scores``
* ``tvolib.tfo.knowledge``: ``Passage``, ``KnowledgeSource``, ``LocalKB``, ``WikipediaSource``,
  ``TweetFileSource``, ``build_kb`` (CLI: ``python -m tvolib.tfo.knowledge build --out KB INPUTS...``)
* ``tvolib.tfo.relevance``: ``RelevanceFilter``, ``RelevanceConfig`` (sentence embeddings: ``tvolib.weights.SentenceEncoder``)
* ``tvolib.tfo.encoder``: ``build_inputs``, ``SelfAttentionLN`` (Eq. 1), ``TextEncoder``
* ``tvolib.tfo.pipeline``: ``augmentations(ds, model_cfg, res)``, ``coverage``, ``knowledge_source(res)``
"""
