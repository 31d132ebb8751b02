#!/bin/sh
# Regenerate the reference fixtures from the model's own Python libraries in a
# throwaway virtualenv (build/venv-fixtures). usage: make_fixtures.sh MODEL_DIR [LLM_GGUF]
set -e
MODEL=${1:-models/all-minilm-l6-v2}
LLM=${2:-models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
VENV=build/venv-fixtures
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check sentence-transformers tokenizers transformers gguf jinja2
fi
"$VENV/bin/python" tests/tools/gen_embedding_fixture.py "$MODEL" tests/fixtures/embeddings.jsonl
for g in tests/tools/gen_tokenizer_fixture.py; do
    [ -f "$g" ] && "$VENV/bin/python" "$g" "$MODEL"
done
"$VENV/bin/python" tests/tools/gen_bpe_fixture.py "$LLM"
"$VENV/bin/python" tests/tools/gen_chat_fixture.py "$LLM"
