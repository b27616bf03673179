"""Pre-tokenized GPT-NeoX / Megatron "MMIDIDX" data (``.bin`` + ``.idx``): reading with numpy memmaps
(``format``), feeding the training pipeline (``stream``), Pythia's pre-shuffled release (``pythia``) and
writing with ``rewarm tokenize`` (``tokenize``). numpy is imported by the submodules only."""
