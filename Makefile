# runexp: `make` builds build/runexp and every plugin as build/plugins/{layers,loss,optim,data}/NAME.so;
# `make test` builds and runs the cmocka suite; `make install PREFIX=...` installs the lot.
# Warnings are errors (WERROR=0 to relax them locally); messages cut to fit their buffer are
# intended, hence -Wno-format-truncation. Dependencies come from pkg-config.

PREFIX  ?= /usr/local
SANITIZE ?= 0
# SANITIZE=1: AddressSanitizer and UndefinedBehaviorSanitizer, in a build folder of its own.
BUILD   ?= $(if $(filter 1,$(FUZZ)),build-fuzz,$(if $(filter 1,$(SANITIZE)),build-sanitize,build))
WERROR  ?= 1
CC      ?= cc
# -fno-trapping-math: nothing here reads floating-point exception flags, and without it gcc
# leaves loops with min/max or compare-and-select (gelu's polynomials, pooling) scalar.
# -fno-math-errno: nothing reads errno after a math function, and without it every sqrtf keeps
# a branch to the library for negative inputs, which leaves adam's loop scalar.
OPT     ?= -O3 -march=native -fno-trapping-math -fno-math-errno

PKGS     := lua5.4 openblas libpng libjpeg

# CUDA: compiled in when nvcc is found (CUDA=auto), on demand (CUDA=1), or left out (CUDA=0).
# CUDA_ARCH picks the GPU to build for (sm_90 on an H200); empty: nvcc's default.
CUDA    ?= auto
NVCC    ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc))
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCH ?=
ifeq ($(CUDA),auto)
  override CUDA := $(if $(NVCC),1,0)
endif
OPENMP  ?= -fopenmp
# MPI: data-parallel training over ranks (core/dist.c), compiled in when OpenMPI's pkg-config file
# or mpicc is found (MPI=auto), on demand (MPI=1), or left out (MPI=0: one process, as before).
# With CUDA too, NCCL (from the CUDA toolkit) sums the GPUs' gradients.
MPI     ?= auto
MPICC   ?= $(shell command -v mpicc 2>/dev/null)
ifeq ($(MPI),auto)
  override MPI := $(if $(or $(shell pkg-config --exists ompi-c && echo y),$(MPICC)),1,0)
endif
CFLAGS   += -std=c11 -D_DEFAULT_SOURCE $(OPT) -g -fPIC -Wall -Wextra -Wshadow -Wundef -Wno-unused-parameter \
            -Wno-format-truncation $(if $(findstring clang,$(CC)),-Wno-unknown-warning-option -Wno-pass-failed) \
            $(OPENMP) $(if $(filter 1,$(WERROR)),-Werror) -Icore $(shell pkg-config --cflags $(PKGS))
LDLIBS   := $(shell pkg-config --libs $(PKGS)) $(OPENMP) -ldl -lm -lpthread
# FUZZ=1 (with CC=clang): libFuzzer's coverage in everything, sanitizers on, OpenMP off.
ifeq ($(FUZZ),1)
  SANITIZE := 1
  OPENMP :=
  CFLAGS += -fsanitize=fuzzer-no-link -Wno-unknown-pragmas
endif
ifeq ($(SANITIZE),1)
  SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
  CFLAGS += $(SAN_FLAGS)
  LDLIBS += $(SAN_FLAGS)
  OPT := -O1
  # GCC 12's runtime takes a dynamic TLS block for glibc 2.19's layout when its address happens to
  # sit 16 bytes into a page, and the leak check then crashes at exit ("Tracer caught signal 11",
  # google/sanitizers#1322); `runexp plugins` met it once one more plugin was loaded. Its
  # __tls_get_addr interceptor stays off (LSan still scans static TLS and every thread's stack).
  export ASAN_OPTIONS := $(if $(ASAN_OPTIONS),$(ASAN_OPTIONS):)intercept_tls_get_addr=0
endif
ifeq ($(CUDA),1)
  CFLAGS += -DRX_WITH_CUDA -DRX_CUDA_LIB_DIR='"$(CUDA_HOME)/lib64"' -isystem $(CUDA_HOME)/include
  # No -lcublas: plugins/common/cublas_lazy.c loads cuBLAS when a run first uses it.
  LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lstdc++
  # --fmad=false: kernels round every multiply and add as the CPU twins do (gcc in ISO C mode
  # contracts nothing), so the two devices can be compared closely.
  NVCCFLAGS := -O3 -std=c++17 --fmad=false -Xcompiler -fPIC,-Wall -Icore -DRX_WITH_CUDA $(if $(CUDA_ARCH),-arch=$(CUDA_ARCH))
endif
ifeq ($(MPI),1)
  MPI_CFLAGS := $(or $(shell pkg-config --cflags ompi-c 2>/dev/null),$(shell $(MPICC) --showme:compile 2>/dev/null))
  MPI_LIBS   := $(or $(shell pkg-config --libs ompi-c 2>/dev/null),$(shell $(MPICC) --showme:link 2>/dev/null))
  CFLAGS += -DRX_WITH_MPI $(MPI_CFLAGS)
  LDLIBS += $(MPI_LIBS) $(if $(filter 1,$(CUDA)),-lnccl)
endif
# Libraries one plugin needs beyond the common ones: PLUGIN_LIBS_<name>.
PLUGIN_LIBS_cifar10 := $(shell pkg-config --libs libcurl libarchive libcrypto)
TEST_CFLAGS := $(shell pkg-config --cflags cmocka) -DRX_BUILD_DIR='"$(abspath $(BUILD))"' \
               -DRX_SOURCE_DIR='"$(abspath .)"'
TEST_LIBS   := $(shell pkg-config --libs cmocka)

CORE_SRC := $(filter-out core/main.c,$(wildcard core/*.c))
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
COMMON_LIB := $(BUILD)/plugins/libcommon.a
# A plugin is plugins/KIND/NAME.c (with NAME.cu beside it) or a folder plugins/KIND/NAME/ whose
# .c files (and .cu files, in a CUDA build) all go into build/plugins/KIND/NAME.so. plugins/common/
# is no plugin: it is the static library every plugin links (build/plugins/libcommon.a).
PLUGIN_FILES := $(filter-out plugins/common/%,$(wildcard plugins/*/*.c))
PLUGIN_DIRS  := $(filter-out plugins/common/,$(wildcard plugins/*/*/))
PLUGINS  := $(patsubst plugins/%.c,$(BUILD)/plugins/%.so,$(PLUGIN_FILES)) \
            $(patsubst plugins/%/,$(BUILD)/plugins/%.so,$(PLUGIN_DIRS))
FIXTURES := $(patsubst tests/%.c,$(BUILD)/tests/%.so,$(wildcard tests/fixtures/*/*.c))
TESTS    := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
HEADERS  := $(wildcard core/*.h)

all: $(BUILD)/runexp $(PLUGINS)

$(BUILD)/core/%.o: core/%.c $(HEADERS) $(wildcard plugins/common/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DRX_PLUGIN_DIR='"$(PREFIX)/lib/runexp/plugins"' -c $< -o $@

# The source revision summary.json records: `git describe` in a git tree, nothing elsewhere (the
# field says "unknown"). $(BUILD)/revision changes only when it does, and only version.o needs it.
REVISION := $(shell git describe --always --dirty 2>/dev/null | tr -cd 'A-Za-z0-9._+-')
$(BUILD)/revision: FORCE
	@mkdir -p $(BUILD) && echo '$(REVISION)' > $@.new && { cmp -s $@.new $@ && rm $@.new || mv $@.new $@; }
$(BUILD)/core/version.o: $(BUILD)/revision
FORCE:
$(BUILD)/core/version.o: CFLAGS += $(if $(REVISION),-DRX_REVISION='"$(REVISION)"')

# What a program of the host links: the core, then the plugins' common code it uses too.
HOST_LIBS = $(BUILD)/libruncore.a $(COMMON_LIB)

$(BUILD)/libruncore.a: $(CORE_OBJ)
	rm -f $@ && $(AR) rcs $@ $^

# The host links plugins/common too: runexp predict decodes pictures and draws their test-time
# views with the code the data plugins use (picture.c, augment.c), and calls cuBLAS through
# cublas_lazy.c as the plugins do.
$(BUILD)/runexp: $(BUILD)/core/main.o $(HOST_LIBS)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# One shared object per plugin; plugins see core/runexp.h and plugins/common/. Plugin code is
# compiled with hidden visibility, so a shared object exports only its entry (RX_EXPORT), whatever
# its files and plugins/common share between them.
PLUGIN_CFLAGS = $(CFLAGS) -fvisibility=hidden -Iplugins/common
COMMON_SRC := $(wildcard plugins/common/*.c) $(if $(filter 1,$(CUDA)),$(wildcard plugins/common/*.cu))
.SECONDEXPANSION:
PLUGIN_SRC = $(wildcard plugins/$*.c plugins/$*/*.c) $(if $(filter 1,$(CUDA)),$(wildcard plugins/$*.cu plugins/$*/*.cu))
PLUGIN_OBJ = $(patsubst plugins/%,$(BUILD)/plugins/%.o,$(PLUGIN_SRC))
# An object depends on every header of its folder and of plugins/common (adamw.c and adam.c
# share plugins/common/adam.h; cifar10/'s files share cifar10.h).
PLUGIN_HEADERS = $(wildcard $(dir plugins/$*)*.h $(dir plugins/$*)*.cuh plugins/common/*.h plugins/common/*.cuh) core/runexp.h

$(COMMON_LIB): $(patsubst plugins/%,$(BUILD)/plugins/%.o,$(COMMON_SRC))
	rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/plugins/%.so: $$(PLUGIN_OBJ) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) -shared $(PLUGIN_OBJ) $(COMMON_LIB) -o $@ $(LDLIBS) $(PLUGIN_LIBS_$(notdir $*))

$(BUILD)/plugins/%.c.o: plugins/%.c $$(PLUGIN_HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) -c $< -o $@

$(BUILD)/plugins/%.cu.o: plugins/%.cu $$(PLUGIN_HEADERS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -Xcompiler -fvisibility=hidden -Iplugins/common -c $< -o $@

$(BUILD)/tests/fixtures/%.so: tests/fixtures/%.c tests/fixtures/fixture.h core/runexp.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared $< -o $@

$(BUILD)/tests/%: tests/%.c tests/helpers.h $(HOST_LIBS) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) $< -o $@ $(HOST_LIBS) $(TEST_LIBS) $(LDLIBS)

# test_bf16 compiles conv2d's bf16.c in (to call its packing and products directly).
$(BUILD)/tests/test_bf16: plugins/layers/conv2d/bf16.c plugins/layers/conv2d/bf16.h

# The out-of-tree example plugins, each built by its own Makefile as a user would, against
# this tree's header; the tests run `runexp check` and a training run on them.
EXAMPLES := $(notdir $(wildcard examples/plugins/*))
# -B: an example's own Makefile cannot know runexp.h's path, so it never sees the header change
# (three small files: rebuilding them every time is cheaper than a stale ABI).
examples: all
	@for e in $(EXAMPLES); do $(MAKE) -s -B -C examples/plugins/$$e RUNEXP_CFLAGS=-I$(abspath core) \
	    OUT=$(abspath $(BUILD))/examples || exit 1; done

test: all examples $(FIXTURES) $(TESTS)
	@set -e; for t in $(TESTS); do echo "== $$t"; $$t; done; echo "all tests passed"

# Everything CI runs: the suite, the suite under the sanitizers, the fuzz corpus, cppcheck, and
# a run's report rendered in headless Chromium (about 5 s).
check: test
	$(MAKE) test SANITIZE=1
	$(MAKE) fuzz-replay
	$(MAKE) lint
	$(MAKE) report-check

# cppcheck on the project's own code (every suppression is inline, with its reason), and no function
# in core/ over 60 lines.
lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance --std=c11 -Icore -Iplugins/common \
	    --suppress=missingIncludeSystem --inline-suppr core plugins fuzz examples
	scripts/function-lengths core/*.c

# The simd loops gcc left scalar in some variant, compiled with the build's own flags (not part of
# lint: maxpool's strided backward stores stay on its list).
unvectorized:
	RX_SCAN_CFLAGS="$(subst ",\",$(PLUGIN_CFLAGS))" scripts/unvectorized

# A short real run under valgrind memcheck (no -march=native: valgrind lacks AVX-512; no CUDA:
# the CUDA libraries trip memcheck inside the dynamic loader).
valgrind:
	$(MAKE) BUILD=build-valgrind OPT=-O1 CUDA=0 all
	# OMP_WAIT_POLICY set: runexp would otherwise start itself again, out of valgrind's sight.
	OMP_WAIT_POLICY=passive valgrind --leak-check=full --error-exitcode=3 --errors-for-leak-kinds=definite,indirect \
	    build-valgrind/runexp configs/synthetic.lua epochs=1 threads=1 out=$$(mktemp -d)/run

# Fuzzing (docs/reliability.md). `make fuzz` runs every target in fuzz/ under libFuzzer (clang)
# for FUZZ_SECONDS each, growing fuzz/corpus/<target>; `make fuzz-replay` runs that corpus
# through every target under the sanitizers without libFuzzer (gcc is enough), as CI does.
FUZZ_TARGETS := $(patsubst fuzz/%.c,%,$(filter-out fuzz/replay.c,$(wildcard fuzz/*.c)))
FUZZ_SECONDS ?= 600
FUZZ_DEFS = -DFUZZ_PLUGIN_DIR='"$(abspath $(BUILD))/plugins"'

$(BUILD)/fuzz/replay-%: fuzz/%.c fuzz/replay.c $(HOST_LIBS) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FUZZ_DEFS) fuzz/replay.c $< -o $@ $(HOST_LIBS) $(LDLIBS)

$(BUILD)/fuzz/%: fuzz/%.c $(HOST_LIBS) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FUZZ_DEFS) -fsanitize=fuzzer $< -o $@ $(HOST_LIBS) $(LDLIBS)

fuzz-replay:
	$(MAKE) SANITIZE=1 all $(FUZZ_TARGETS:%=build-sanitize/fuzz/replay-%)
	@for t in $(FUZZ_TARGETS); do build-sanitize/fuzz/replay-$$t fuzz/corpus/$$t || exit 1; done

fuzz:
	$(MAKE) CC=clang FUZZ=1 all $(FUZZ_TARGETS:%=build-fuzz/fuzz/%)
	@for t in $(FUZZ_TARGETS); do mkdir -p fuzz/corpus/$$t; \
	    build-fuzz/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -max_len=4096 fuzz/corpus/$$t || exit 1; done

# One epoch of the tutorial's network at batch 20 and 128 beside PyTorch (see bench/cpu).
bench: all
	bench/cpu

# Renders a run's report.html in headless Chromium and checks it (see scripts/check-report).
report-check: all
	scripts/check-report

# The SDK for plugin authors: the header and runexp-plugin.pc, so that an outside plugin builds
# with  cc -shared -fPIC $(pkg-config --cflags runexp-plugin) ...
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include/runexp $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BUILD)/runexp $(DESTDIR)$(PREFIX)/bin/runexp
	install -m 644 core/runexp.h $(DESTDIR)$(PREFIX)/include/runexp/runexp.h
	printf 'prefix=%s\nincludedir=$${prefix}/include\nplugindir=$${prefix}/lib/runexp/plugins\n\nName: runexp-plugin\nDescription: The header runexp plugins (layers, losses, optimizers, data sets) build against\nVersion: %s\nCflags: -I$${includedir}/runexp\n' \
	    '$(PREFIX)' "$$(sed -n 's/^#define RUNEXP_VERSION "\(.*\)"/\1/p' core/version.h)" \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/runexp-plugin.pc
	for f in $(PLUGINS); do \
	  d=$(DESTDIR)$(PREFIX)/lib/runexp/$${f#$(BUILD)/}; install -d $$(dirname $$d); install -m 755 $$f $$d; done

clean:
	rm -rf build build-sanitize build-fuzz build-valgrind

.PHONY: all examples test check lint unvectorized valgrind bench report-check fuzz fuzz-replay install clean FORCE
.SECONDARY:
