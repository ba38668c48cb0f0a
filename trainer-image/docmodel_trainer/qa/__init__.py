"""Question/answer generators: `provided` (JSONL files), `teacher` (an OpenAI-compatible model)
and `extractive` (deterministic patterns, no model)."""
