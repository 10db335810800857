"""Textual Feature Optimization (section 4.1): candidate tagger, knowledge sources, relevance
filter, retrieval-augmented input template and text encoder (Eq. 1).

Modules (imported lazily by the caller, so ``import tvolib.tfo`` stays cheap):

* ``tvolib.tfo.candidates``: ``TaggerConfig``, ``CandidateTagger``, ``make_candidates``, ``span_scores``
* ``tvolib.tfo.knowledge``: ``Passage``, ``KnowledgeSource``, ``LocalKB``, ``WikipediaSource``,
  ``TweetFileSource``, ``build_kb`` (CLI: ``python -m tvolib.tfo.knowledge build --out KB INPUTS...``)
* ``tvolib.tfo.relevance``: ``SentenceEncoder``, ``RelevanceFilter``, ``RelevanceConfig``
* ``tvolib.tfo.encoder``: ``build_inputs``, ``SelfAttentionLN`` (Eq. 1), ``TextEncoder``
* ``tvolib.tfo.pipeline``: ``augmentations``, ``coverage``, ``knowledge_source``
"""
