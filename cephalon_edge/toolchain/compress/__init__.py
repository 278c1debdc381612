"""`compress`: structured pruning (``prune``), recovery fine-tuning with distillation and width
variants (``workflow``), a quantization recipe (``quantize``). ``spec`` (the options and their
checks) imports no torch, so a bad flag or checkpoint is refused before torch is loaded."""
