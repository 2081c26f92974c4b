"""Exporting a run for other software: ``fha export RUN --format hf --out DIR`` writes a folder that
Hugging Face transformers loads (`fha.export.hf`)."""
