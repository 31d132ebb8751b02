#!/bin/sh
# Regenerate the reference fixtures from the model's own Python libraries in a
# throwaway virtualenv (build/venv-fixtures). usage: make_fixtures.sh [MODEL_DIR [LLM_GGUF]]
set -e
MODEL=${1:-models/all-minilm-l6-v2}
LLM=${2:-models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
VENV=build/venv-fixtures
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check sentence-transformers tokenizers transformers gguf jinja2 \
        accelerate
fi
# a venv made before the decoder fixtures lacks the GGUF reader
"$VENV/bin/python" -c "import gguf, accelerate, jinja2" 2>/dev/null ||
    "$VENV/bin/pip" install -q --disable-pip-version-check transformers gguf jinja2 accelerate
"$VENV/bin/python" tests/tools/gen_embedding_fixture.py "$MODEL" tests/fixtures/embeddings.jsonl
LLM=models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$LLM" ]; then
    "$VENV/bin/pip" install -q --disable-pip-version-check gguf numpy
    "$VENV/bin/python" tests/tools/gen_dequant_fixture.py "$LLM" tests/fixtures/smollm2_dequant_sha256.txt
fi
for g in tests/tools/gen_tokenizer_fixture.py; do
    [ -f "$g" ] && "$VENV/bin/python" "$g" "$MODEL"
done
"$VENV/bin/python" tests/tools/gen_bpe_fixture.py "$LLM"
"$VENV/bin/python" tests/tools/gen_chat_fixture.py "$LLM"
# the decoder's logits and greedy continuations (transformers fp32 on the GGUF)
if [ -f "$LLM" ]; then "$VENV/bin/python" tests/tools/gen_llama_fixture.py "$LLM"; fi
