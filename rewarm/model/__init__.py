"""The model: a Hugging Face causal LM (GPT-NeoX for Pythia) loaded pretrained or built from scratch, its
tokenizer, the attention backend, parameter counts from a ``config.json``.

Owns ``load``. May import: errors, faults and data (the tokenizer, ``rewarm.data.tokenizer``). Never imports
training or checkpoints; data never imports the model.
"""
