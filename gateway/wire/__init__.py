"""Wire formats: one module per API, each translating both ways between its JSON and gateway.chat.

``openai`` and ``anthropic`` hold both halves of their format: the downstream half parses what a
client sends to aigw's drop-in endpoints and writes aigw's answers (whole or streamed) back; the
upstream half renders what a worker sends to a provider of that kind and reads its answers.
``ollama`` is upstream only. Every module is pure: no I/O, so each direction is tested alone and an
OpenAI-format request served by an Anthropic model is two translations through ``gateway.chat``.
"""
