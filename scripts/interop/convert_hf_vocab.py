#!/usr/bin/env python3
"""Run llama.cpp's convert_hf_to_gguf.py with one documented change for Phi-3.

Usage (same arguments as the converter, after the converter's path)::

    python scripts/interop/convert_hf_vocab.py PATH/TO/convert_hf_to_gguf.py MODEL_DIR --outtype f32 --outfile OUT.gguf

Why: the converter's ``Phi3MiniModel.set_vocab`` (conversion/phi.py) only
accepts a SentencePiece ``tokenizer.model`` (or a GPT2Tokenizer). A Phi-3
checkpoint that ships only a Llama-style ``tokenizer.json`` (BPE with
byte_fallback, as stories260K-phi3 does) stops with
``ValueError: Error: Missing .../tokenizer.model``. ``LlamaModel.set_vocab``
handles the same tokenizer.json through ``TextModel._set_vocab_llama_hf``
(gguf-py's ``LlamaHfVocab``). This wrapper imports the converter's own
``conversion`` package, points ``Phi3MiniModel.set_vocab`` at that same
``_set_vocab_llama_hf`` method (llama.cpp's code, unmodified), and then runs the
converter script unchanged. Everything else (tensor names, the fused qkv /
gate_up layout, hyper-parameters) is stock convert_hf_to_gguf.py.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    converter = Path(sys.argv[1]).resolve()
    root = converter.parent
    # the same sys.path the converter sets up for itself
    sys.path.insert(0, str(root))
    if "NO_LOCAL_GGUF" not in os.environ:
        sys.path.insert(1, str(root / "gguf-py"))
    import conversion.phi as phi  # noqa: E402  (llama.cpp's module)

    def set_vocab(self):
        return self._set_vocab_llama_hf()

    phi.Phi3MiniModel.set_vocab = set_vocab
    sys.argv = [str(converter)] + sys.argv[2:]
    runpy.run_path(str(converter), run_name="__main__")


if __name__ == "__main__":
    main()
