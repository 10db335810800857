"""Visual Feature Optimization (section 4.2, Appendix A).

* ``encoders`` — frozen timm image encoder (ViT-B/32 [CLS] when its weights exist, offline default
  EfficientNet-Lite0), caption/phrase sentence embeddings, safetensors feature caches.
* ``llm`` — captions and entity-object phrases through the ``openai`` client (Appendix A prompts),
  robust parsing, retries, concurrency, JSONL cache that resumes.
* ``grounding`` — GroundingDINO (transformers) phrases → boxes, crops → ``v_obj``; "w/o LLMs".
* ``fusion`` — ``TextGuidedVAE`` (Eq. 2), ``AdaptiveFusion`` (Eq. 3), ``VisualFeatureOptimizer``.
* ``pipeline`` — ``visual_features(ds, model_cfg, res, side) -> VisualFeatures``.
"""
