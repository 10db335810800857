"""Visual Feature Optimization (section 4.2, Appendix A).

* ``encoders`` — frozen timm image encoder (ViT-B/32 [CLS] when its weights exist, offline default
  EfficientNet-Lite0), caption/phrase sentence embeddings, safetensors feature caches.
* ``prompts`` — the Appendix A prompts and the robust parsing of the LLM's answers (no client).
* ``llm`` — captions and entity-object phrases through the ``openai`` client: retries,
  concurrency, JSONL cache that resumes.
* ``grounding`` — GroundingDINO (transformers) phrases → boxes, crops → ``v_obj``; "w/o LLMs".
* ``fusion`` — ``TextGuidedVAE`` (Eq. 2), ``AdaptiveFusion`` (Eq. 3), ``VisualFeatureOptimizer``.
* ``pipeline`` — ``visual_features(ds, model_cfg, res, side) -> VisualFeatures``.
"""
