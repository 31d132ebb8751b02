#!/bin/sh
# Build llama.cpp's llama-bench and llama-server from the copy inside PyPI's
# llama-cpp-python source package (PyPI has no binary wheel of it), for the
# generation benchmarks' peer. Cached: the sdist under models/.cache, the build
# under build/llama.cpp; a second run does nothing. About 10 minutes of two
# cores the first time, so it is a bench step, never part of `make test`.
# usage: bench/llamacpp_build.sh        prints the bin folder on its last line
set -e
VER=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CACHE=models/.cache
OUT=build/llama.cpp
if [ -x "$OUT/build/bin/llama-bench" ] && [ -x "$OUT/build/bin/llama-server" ]; then
    echo "$OUT/build/bin"; exit 0
fi
command -v cmake >/dev/null || { echo "llamacpp_build: cmake is missing (apt-get install cmake)" >&2; exit 1; }
mkdir -p "$CACHE" "$OUT"
SDIST=$(ls "$CACHE"/llama_cpp_python-"$VER".tar.gz 2>/dev/null || true)
if [ -z "$SDIST" ]; then
    if command -v pip3 >/dev/null 2>&1; then PIP="pip3"; else PIP="python3 -m pip"; fi
    $PIP download --no-deps --no-binary :all: --quiet --disable-pip-version-check \
        -d "$CACHE" "llama-cpp-python==$VER" >&2 || true
    SDIST=$(ls "$CACHE"/llama_cpp_python-"$VER".tar.gz)
fi
[ -d "$OUT/src" ] || { mkdir -p "$OUT/src" && tar -xzf "$SDIST" -C "$OUT/src" --strip-components=1; }
cmake -S "$OUT/src/vendor/llama.cpp" -B "$OUT/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$OUT/build" -j"$(nproc)" --target llama-bench llama-server >&2
echo "$OUT/build/bin"
