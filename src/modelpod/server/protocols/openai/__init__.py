"""OpenAI-compatible routes: `embeddings.py` (/v1/embeddings, /v1/models), `generation.py`
(/v1/chat/completions, /v1/completions, and text through /predict and v2), `params.py` (their bodies)."""
