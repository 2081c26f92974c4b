"""The code that ``fha export --format hf`` copies into the export folder, where transformers
imports it (``trust_remote_code=True``). Each file is a thin layer over the fha package: the
model is fha's own GPT. These modules import transformers (the ``hf`` extra); nothing else in
fha imports them."""
