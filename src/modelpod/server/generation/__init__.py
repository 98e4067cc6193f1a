"""Text generation: continuous batching (engine.py) and OpenAI's chat and completions routes (routes.py)."""
