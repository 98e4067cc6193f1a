"""The protocols the server speaks, one module or folder each: routes and their wire formats.

simple.py         POST /predict
v2/               Open Inference Protocol v2 (KServe, Triton): routes.py, codec.py (JSON and binary)
openai/           OpenAI's API: embeddings.py, generation.py (chat and completions), params.py
openapi.py        the OpenAPI document and /docs
"""
