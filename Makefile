# sluice - top-level build. `make` builds bin/sluice; `make test` and `make run`
# do all set-up on a fresh machine (Debian packages, the model) first.
#
# Sources are picked up by folder, so a new module file needs no Makefile edit:
#   engine/*.c kernels/*.c kernels/cpu/*.c batcher/*.c queue/*.c api/*.c api/*/*.c -> libsluice.a
#   kernels/cuda/*.cu (nvcc)                      -> the CUDA backend (CUDA=1)
#   api/cli/main.c                                -> bin/sluice
#   bench/sluice_bench.c                          -> bin/sluice-bench
#   bench/NAME.c (any other)                      -> bin/bench-NAME (make bench)
#   tests/test_*.c (+ tests/support*.c)           -> build/tests/test_* (Criterion)
#   tests/fuzz/fuzz_*.c (clang, libFuzzer)        -> build/fuzz/fuzz_request, fuzz_gen_request (make fuzz)
#
# Variables: CUDA=0|1 (default: 1 when nvcc is found), BUILD=dir, SAN=address|leak|...,
# DEPS_ROOT=dir holding unpacked .deb files (a machine without our packages installed).

BUILD ?= build
BIN ?= bin
MODEL_DIR ?= models/all-minilm-l6-v2
LLM_DIR ?= models/smollm2-135m-instruct

CC ?= cc
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifeq ($(origin CUDA),undefined)
  CUDA := $(if $(NVCC),1,0)
endif
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90

OPT ?= -O2
CFLAGS_COMMON = $(OPT) -g -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I. -I/usr/include/hiredis -pthread
WARN = -Wall -Wextra -Werror
CFLAGS += -std=c11 $(CFLAGS_COMMON) $(WARN)
LDLIBS += -lmicrohttpd -lhiredis -ljansson -lopenblas -lutf8proc -lcrypto -lm -lpthread
TEST_LDLIBS = -lcriterion

ifneq ($(DEPS_ROOT),)
  DEPS_LIB = $(abspath $(DEPS_ROOT))/usr/lib/x86_64-linux-gnu
  CFLAGS += -I$(DEPS_ROOT)/usr/include -I$(DEPS_ROOT)/usr/include/hiredis \
            -I$(DEPS_ROOT)/usr/include/x86_64-linux-gnu \
            -I$(DEPS_ROOT)/usr/include/x86_64-linux-gnu/openblas-pthread
  LDFLAGS += -L$(DEPS_LIB) -L$(DEPS_LIB)/openblas-pthread -Wl,-rpath,$(DEPS_LIB) \
             -Wl,-rpath,$(DEPS_LIB)/openblas-pthread
endif

# Every sanitizer finding stops the program (UBSan would otherwise print
# `runtime error:` and carry on, and a fuzz run or a suite would pass).
ifneq ($(SAN),)
  CFLAGS += -fsanitize=$(SAN) -fno-sanitize-recover=all -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=$(SAN) -fno-sanitize-recover=all
endif

LIB_SRC := $(filter-out api/cli/main.c,$(wildcard engine/*.c kernels/*.c kernels/cpu/*.c batcher/*.c queue/*.c api/*.c api/*/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)

ifeq ($(CUDA),1)
  CU_SRC := $(wildcard kernels/cuda/*.cu)
  CU_OBJ := $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
  LDFLAGS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64
  CUDA_LDLIBS = -lcublasLt -lcublas -lcudart_static -ldl -lrt -lstdc++
  LDLIBS += $(CUDA_LDLIBS)
  NVCCFLAGS ?= -O3 -std=c++17 $(CUDA_ARCH) -I. -Xcompiler -Wall,-Wextra,-Werror -Werror all-warnings
else
  CU_OBJ := $(BUILD)/kernels/cuda/none.o
endif

TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_SUPPORT_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/support*.c))
BENCH_BIN := $(if $(wildcard bench/sluice_bench.c),$(BIN)/sluice-bench)

# The engine + kernels alone (no HTTP, Redis or OpenSSL): what the GPU check
# builds on a machine that has only the libraries .deps/ carries.
CORE_OBJ := $(filter-out $(BUILD)/api/% $(BUILD)/queue/% $(BUILD)/batcher/%,$(LIB_OBJ))
CORE_LDLIBS = -ljansson -lopenblas -lutf8proc -lm -lpthread $(CUDA_LDLIBS)

.PHONY: all deps model test run tests bench clean cuda-note test-asan test-leak fixtures fuzz check-layers install deb
all: cuda-note $(BIN)/sluice $(BENCH_BIN)

cuda-note:
ifeq ($(CUDA),0)
	@echo "sluice: building without the CUDA backend ($(if $(NVCC),CUDA=0 given,nvcc not found)); the CPU backend is used"
endif

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# The queue's Lua scripts are embedded with .incbin (queue/scripts.c), which the
# compiler's dependency files do not see.
$(BUILD)/queue/scripts.o: $(wildcard queue/lua/*.lua)
# The same for the operator's page and the OpenAPI schemas (api/http/page.c, openapi.c).
$(BUILD)/api/http/page.o: $(wildcard api/http/ui/*)
$(BUILD)/api/http/openapi.o: api/http/openapi_schemas.json

$(BUILD)/kernels/cuda/none.o: kernels/cuda/none.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

# The archives remember whether they hold the CUDA backend: switching CUDA=0/1
# in one build folder must rebuild them, not link the other kind.
CONFIG_STAMP := $(BUILD)/.config-cuda$(CUDA)
$(CONFIG_STAMP):
	@mkdir -p $(BUILD)
	@rm -f $(BUILD)/.config-cuda*
	@touch $@

$(BUILD)/libsluice.a: $(LIB_OBJ) $(CU_OBJ) $(CONFIG_STAMP)
	@rm -f $@
	ar rcs $@ $(filter %.o,$^)

$(BIN)/sluice: $(BUILD)/api/cli/main.o $(BUILD)/libsluice.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/sluice-bench: $(BUILD)/bench/sluice_bench.o $(BUILD)/libsluice.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libsluice-core.a: $(CORE_OBJ) $(CU_OBJ) $(CONFIG_STAMP)
	@rm -f $@
	ar rcs $@ $(filter %.o,$^)

# bench/gpu_bench.c: end-to-end parity across backends and the timed runs of bench/gpu-check.sh
$(BIN)/gpu-bench: $(BUILD)/bench/gpu_bench.o $(BUILD)/libsluice-core.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(CORE_LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_SUPPORT_OBJ) $(BUILD)/libsluice.a
	$(CC) $(LDFLAGS) -o $@ $^ $(TEST_LDLIBS) $(LDLIBS)

tests: $(TEST_BIN)

# Benchmark drivers: every bench/*.c but the load generator.
BENCH_DRIVERS := $(patsubst bench/%.c,$(BIN)/bench-%,$(filter-out bench/sluice_bench.c,$(wildcard bench/*.c)))
bench: $(BENCH_DRIVERS)

# The GPU parity driver runs the checks of the CUDA tests without Criterion.
GPU_PARITY_OBJ = $(BUILD)/bench/gpu_parity.o $(BUILD)/tests/support_cuda_parity.o $(BUILD)/tests/support_ref.o \
                 $(BUILD)/tests/support_topk.o $(BUILD)/tests/support_cuda_decoder.o \
                 $(BUILD)/tests/support_decoder_ref.o
$(BIN)/bench-gpu_parity: $(GPU_PARITY_OBJ) $(BUILD)/libsluice.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The same driver on engine + kernels alone: what bench/gpu-check.sh builds on
# a GPU machine without the HTTP/Redis/OpenSSL packages.
$(BIN)/gpu-parity: $(GPU_PARITY_OBJ) $(BUILD)/libsluice-core.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(CORE_LDLIBS)

# The decoder's GPU check driver (bench/gpu-gen-check.sh): model files, parity, speed.
$(BIN)/gen-gpu: $(BUILD)/bench/gen_gpu.o $(BUILD)/tests/support_gguf.o $(BUILD)/libsluice-core.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(CORE_LDLIBS)
$(BIN)/bench-gen_gpu: $(BUILD)/bench/gen_gpu.o $(BUILD)/tests/support_gguf.o $(BUILD)/libsluice.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The tokenizer benchmark times engine/bpe's splitter against PCRE2.
$(BIN)/bench-bpe_bench: LDLIBS += -lpcre2-8

$(BIN)/bench-%: $(BUILD)/bench/%.o $(BUILD)/libsluice.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The request-parser fuzz targets (embeddings/expand, generation): the library again with clang, ASan/UBSan and
# libFuzzer's coverage hooks (skipped, with one line, when clang is missing).
FUZZ_CC ?= clang
fuzz:
	@if command -v $(FUZZ_CC) >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory BUILD=$(BUILD)/fuzz BIN=$(BUILD)/fuzz/bin CC=$(FUZZ_CC) CUDA=0 OPT=-O1 \
	        SAN=address,undefined,fuzzer-no-link $(BUILD)/fuzz/fuzz_request $(BUILD)/fuzz/fuzz_gen_request; \
	else echo "sluice: $(FUZZ_CC) not found; no fuzz target"; fi

$(BUILD)/fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/libsluice.a
	$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

# Install: the binaries, the docs (PREFIX=/usr/local, DESTDIR for staging).
PREFIX ?= /usr/local
DESTDIR ?=
DOCS := README.md $(wildcard docs/*.md) packaging/sluice-move-slot.lua
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/doc/sluice
	install -m 0755 $(BIN)/sluice $(DESTDIR)$(PREFIX)/bin/sluice
	$(if $(BENCH_BIN),install -m 0755 $(BENCH_BIN) $(DESTDIR)$(PREFIX)/bin/sluice-bench)
	install -m 0644 $(DOCS) $(DESTDIR)$(PREFIX)/share/doc/sluice/

# A Debian package (dpkg-deb): make install under /usr, the systemd unit, the
# settings file (a conffile) and the maintainer scripts of packaging/.
DEB_VERSION ?= 0.1.0+git$(shell git rev-parse --short HEAD 2>/dev/null || echo 0)
DEB_ARCH ?= $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB_ROOT = $(BUILD)/deb/root
DEB = $(BUILD)/sluice_$(DEB_VERSION)_$(DEB_ARCH).deb
deb: all
	rm -rf $(DEB_ROOT)
	$(MAKE) --no-print-directory install PREFIX=/usr DESTDIR=$(abspath $(DEB_ROOT))
	install -d $(DEB_ROOT)/DEBIAN $(DEB_ROOT)/lib/systemd/system $(DEB_ROOT)/etc/sluice
	install -m 0644 packaging/sluice.service $(DEB_ROOT)/lib/systemd/system/sluice.service
	install -m 0644 packaging/sluice.env $(DEB_ROOT)/etc/sluice/sluice.env
	install -m 0755 packaging/postinst packaging/prerm packaging/postrm $(DEB_ROOT)/DEBIAN/
	echo /etc/sluice/sluice.env > $(DEB_ROOT)/DEBIAN/conffiles
	sed -e 's/@VERSION@/$(DEB_VERSION)/' -e 's/@ARCH@/$(DEB_ARCH)/' \
	    -e "s/@SIZE@/$$(du -sk --exclude=DEBIAN $(DEB_ROOT) | cut -f1)/" packaging/control.in > $(DEB_ROOT)/DEBIAN/control
	dpkg-deb --root-owner-group --build $(DEB_ROOT) $(DEB)
	@echo "sluice: $(DEB)"

deps:
	@sh mk/deps.sh

model: deps
	@sh mk/model.sh $(MODEL_DIR) $(LLM_DIR)

# The include graph keeps its layers (kernels < engine | queue < batcher < api)
# and has no circles between rooms (tests/tools/check_layers.sh).
check-layers:
	@sh tests/tools/check_layers.sh $(CC) $(filter -I% -D%,$(CFLAGS))

# All tests: set-up, the layering check, build, every Criterion suite (each
# starts the services it needs, e.g. its own redis-server), then the sanitizer runs.
test: deps model
	@$(MAKE) --no-print-directory check-layers
	@$(MAKE) --no-print-directory all tests
	@$(MAKE) --no-print-directory BUILD=build/asan BIN=build/asan/bin SAN=address CUDA=0 OPT=-O1 \
	    build/asan/tests/test_safetensors build/asan/tests/test_gguf build/asan/tests/test_tokenizer build/asan/tests/test_bpe \
	    build/asan/tests/test_chat build/asan/tests/test_serve_ctl build/asan/tests/test_ctl build/asan/tests/test_page build/asan/bin/sluice \
	    build/asan/tests/test_kv build/asan/tests/test_sample build/asan/tests/test_gen_job build/asan/tests/test_harden \
	    build/asan/tests/test_sched
	@$(MAKE) --no-print-directory fuzz
	@sh tests/run.sh $(BUILD) build/asan $(MODEL_DIR)

# The main job on defaults.
run: deps model
	@$(MAKE) --no-print-directory all
	@sh mk/run.sh $(MODEL_DIR)

# Regenerate the reference fixtures from the model's own Python libraries
# (needs PyPI; CI uses the committed fixtures and needs no Python packages).
fixtures: model
	@sh tests/tools/make_fixtures.sh $(MODEL_DIR) $(wildcard $(LLM_DIR)/*.gguf)

clean:
	rm -rf build bin

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
