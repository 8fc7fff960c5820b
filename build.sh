#!/usr/bin/env bash
# Builds the C runtime (csrc/neon/**/*.c) for the host and the Raspberry Pi targets,
# runs the tests and packs the Pi tarball.   Usage: ./build.sh [host|aarch64|armhf|armv6|all|asan|tsan|asan-test|test|dist|demo|fuzz|clean]
#   outputs: firmware_py/_lib/<arch>/libbnn.so, build/<arch>/libbnn.a, build/<arch>/tests/test_*
#   a C test is any tests/c/test_*.c (one standalone program, linked against libbnn.a).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
JOBS=$(nproc 2>/dev/null || echo 2)
BNN_TUNE=${BNN_TUNE:-cortex-a72}   # aarch64 tuning; cortex-a76 for a Pi-5-tuned build

COMMON=(-std=c11 -O3 -fPIC -fvisibility=hidden -Wall -Wextra -Werror -pthread -Icsrc/neon/include)
declare -A ARCH_FLAGS=(
  [x86_64]="-march=x86-64"
  [aarch64]="-march=armv8-a -mtune=$BNN_TUNE"
  [armhf]="-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard -mtune=cortex-a53"
  [armv6]="-march=armv6zk -mfpu=vfp -mfloat-abi=hard -marm"
)
declare -A TRIPLE=([x86_64]=x86_64-linux-gnu [aarch64]=aarch64-linux-gnu
                   [armhf]=arm-linux-gnueabihf [armv6]=arm-linux-gnueabihf)
APT_PKGS=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user file binutils-aarch64-linux-gnu)

die() { echo "build.sh: $*" >&2; exit 1; }
log() { printf '\n== %s\n' "$*"; }

host_arch() {
  case "$(uname -m)" in
    x86_64|amd64) echo x86_64 ;;
    aarch64|arm64) [[ $(getconf LONG_BIT) == 32 ]] && echo armhf || echo aarch64 ;; # 64-bit kernel, 32-bit OS
    armv7*|armv8l) echo armhf ;;
    armv6*) echo armv6 ;;
    *) die "unsupported host $(uname -m)" ;;
  esac
}
HOST=$(host_arch)

# Compiler / binutils prefix for a target: the native tools when the target is the host.
tool() { # tool <arch> <name>
  if [[ $1 == "$HOST" || ($1 == armv6 && $HOST == armhf) || ($1 == armhf && $HOST == armv6) ]]; then
    [[ $2 == gcc ]] && echo "${CC:-gcc}" || echo "$2"
  else echo "${TRIPLE[$1]}-$2"; fi
}

# Installs the cross compilers / qemu only when one of the given tools is missing.
ensure_tools() {
  local t missing=0
  for t in "$@"; do command -v "$t" >/dev/null || missing=1; done
  ((missing)) || return 0
  local sudo=""; [[ $(id -u) == 0 ]] || sudo=sudo
  log "installing ${APT_PKGS[*]}"
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "${APT_PKGS[@]}"
}

# Runs "$@" for each item of the list on stdin, $JOBS at a time; fails if any failed.
parallel() {
  local item pids=() rc=0
  while read -r item; do
    "$@" "$item" & pids+=($!)
    if ((${#pids[@]} >= JOBS)); then wait "${pids[0]}" || rc=1; pids=("${pids[@]:1}"); fi
  done
  for item in "${pids[@]}"; do wait "$item" || rc=1; done
  return $rc
}
compile_obj() { local o="$OBJ/${1%.c}.o"; mkdir -p "$(dirname "$o")"; "$CCX" "${CFLAGS[@]}" -c "$1" -o "$o"; }
compile_test() { "$CCX" "${CFLAGS[@]}" -Itests/c "$1" "$OUT/libbnn.a" -lm -o "$OUT/tests/$(basename "${1%.c}")"; }

# build <arch> [asan]: build/<arch>[-asan]/{libbnn.a,libbnn.so,tests/}; the plain .so is copied to
# firmware_py/_lib/<arch>/, the asan one (ASan+UBSan) is not.
build() {
  local arch=$1 variant=${2:-} ldflags=()
  CCX=$(tool "$arch" gcc)
  if [[ $CCX == "${TRIPLE[$arch]}-gcc" ]]; then ensure_tools "$CCX"
  else command -v "$CCX" >/dev/null || die "no C compiler '$CCX' (sudo apt install gcc)"; fi
  read -ra CFLAGS <<<"${ARCH_FLAGS[$arch]}"; CFLAGS=("${COMMON[@]}" "${CFLAGS[@]}")
  OUT=build/$arch${variant:+-$variant}; OBJ=$OUT/obj
  [[ $variant == asan ]] && CFLAGS+=(-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all)
  [[ $variant == tsan ]] && CFLAGS+=(-O1 -g -fsanitize=thread)  # the C tests, for the thread pool
  # Pi 1 / Zero: Debian's armhf crt files and static libgcc are armv7/Thumb-2 code, so the
  # armv6 library links no start files and takes libgcc from the Pi's own libgcc_s.so.1.
  [[ $arch == armv6 ]] && ldflags+=(-nostartfiles -shared-libgcc)
  echo "$OUT: $CCX ${CFLAGS[*]:${#COMMON[@]}} ${ldflags[*]}"
  rm -rf "$OUT"; mkdir -p "$OBJ" "$OUT/tests"
  local srcs; srcs=$(find csrc/neon -name '*.c' | sort)
  [[ -n $srcs ]] || die "no sources under csrc/neon"
  parallel compile_obj <<<"$srcs"
  "$(tool "$arch" ar)" rcs "$OUT/libbnn.a" $(find "$OBJ" -name '*.o' | sort)
  printf '{ global: bnn_*; local: *; };\n' >"$OUT/exports.map"
  "$CCX" "${CFLAGS[@]}" -shared -Wl,-soname,libbnn.so -Wl,-z,defs -Wl,--version-script="$OUT/exports.map" \
    "${ldflags[@]}" -o "$OUT/libbnn.so" $(find "$OBJ" -name '*.o' | sort) -lm
  check_exports "$arch" "$OUT/libbnn.so"
  if [[ -z $variant ]]; then  # a sanitizer library stays in build/<arch>-<variant>/ (BNN_LIBRARY)
    # replace, never overwrite in place: a running process has the old file mapped
    mkdir -p "firmware_py/_lib/$arch"; cp "$OUT/libbnn.so" "firmware_py/_lib/$arch/.libbnn.so.tmp"
    mv -f "firmware_py/_lib/$arch/.libbnn.so.tmp" "firmware_py/_lib/$arch/libbnn.so"
    echo "ok: firmware_py/_lib/$arch/libbnn.so"
  else
    echo "ok: $OUT/libbnn.so ($variant build, not installed)"
  fi
  local tests; tests=$(find tests/c -maxdepth 1 -name 'test_*.c' | sort)
  [[ -z $tests ]] || parallel compile_test <<<"$tests"
}

# The library must export bnn_* and nothing else.
check_exports() { # <arch> <.so>
  local syms; syms=$("$(tool "$1" nm)" -D --defined-only "$2" | awk '{print $NF}')
  grep -q '^bnn_version$' <<<"$syms" || die "$2 does not export bnn_version"
  ! grep -v '^bnn_' <<<"$syms" || die "$2 exports the symbols above; only bnn_* may be exported"
}

# run_tests <build dir> [runner...]: runs every test binary; prints each summary line.
run_tests() {
  local dir=$1; shift
  local t out rc=0 n=0 want; want=$(find tests/c -maxdepth 1 -name 'test_*.c' | wc -l)
  for t in "$dir"/tests/test_*; do
    [[ -x $t ]] || continue; n=$((n + 1))
    if out=$(timeout 900 "$@" "$t" 2>&1); then echo "  ${out##*$'\n'}"
    else rc=1; echo "  FAIL $t"; echo "$out" | tail -n 40 | sed 's/^/    /'; fi
  done
  ((n > 0)) || echo "  (no C tests in tests/c)"
  ((n == want)) || { echo "  expected $want test programs in $dir, found $n"; rc=1; }
  return $rc
}

# Loads the cross-built .so with dlopen under qemu and calls bnn_version().
dlopen_smoke() { # <arch> <qemu command...>
  local arch=$1; shift
  local dir=build/$arch
  printf '%s\n' '#include <dlfcn.h>' '#include <stdio.h>' 'int main(int c, char **v) { (void)c;' \
    '  void *h = dlopen(v[1], RTLD_NOW); if (!h) { puts(dlerror()); return 1; }' \
    '  const char *(*f)(void) = (const char *(*)(void))dlsym(h, "bnn_version");' \
    '  if (!f) return 1; printf("dlopen %s: bnn %s\n", v[1], f()); return 0; }' >"$dir/smoke.c"
  "$(tool "$arch" gcc)" ${ARCH_FLAGS[$arch]} "$dir/smoke.c" -ldl -o "$dir/smoke"
  "$@" "$dir/smoke" "$ROOT/$dir/libbnn.so"
}

# Static checks on the cross-built libraries: ELF kind, float ABI, popcount instruction, armv6 ISA.
check_elf() {  # (tool output is captured first: `cmd | grep -q` fails under pipefail when cmd gets SIGPIPE)
  local f attrs
  f=$(file -b build/aarch64/libbnn.so); echo "  aarch64: $f"; [[ $f == *"ARM aarch64"* ]]
  f=$(aarch64-linux-gnu-objdump -d build/aarch64/libbnn.so)
  grep -qP '\tcnt\t' <<<"$f" || die "no cnt instruction in build/aarch64/libbnn.so"
  echo "  aarch64: cnt instruction present"
  for a in armhf armv6; do
    f=$(file -b build/$a/libbnn.so); echo "  $a: $f"; [[ $f == *"ARM, EABI5"* ]]
    f=$(arm-linux-gnueabihf-readelf -h build/$a/libbnn.so)
    grep -q 'hard-float ABI' <<<"$f" || die "$a: not hard-float"
    echo "  $a: hard-float ABI"
  done
  # Pi 1 / Zero: no armv7, Thumb-2 or NEON object may have been linked in.
  attrs=$(arm-linux-gnueabihf-readelf -A build/armv6/libbnn.so)
  grep -q 'Tag_CPU_arch: v6KZ' <<<"$attrs" || die "armv6: Tag_CPU_arch is not v6KZ"
  ! grep -E 'Thumb-2|NEON|Tag_CPU_arch: v7' <<<"$attrs" || die "armv6: armv7/Thumb-2/NEON code linked in"
  echo "  armv6: Tag_CPU_arch v6KZ, no Thumb-2/NEON"
}

asan_tests() { ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 run_tests build/x86_64-asan; }
# ASLR off where allowed: GCC 12's TSan aborts ("unexpected memory mapping") on kernels with
# high mmap randomisation
tsan_tests() {
  local pre=(); setarch "$(uname -m)" -R true 2>/dev/null && pre=(setarch "$(uname -m)" -R)
  TSAN_OPTIONS=halt_on_error=1 run_tests build/x86_64-tsan "${pre[@]}"
}

# ---- Python driving the ASan+UBSan libbnn.so (build/<host>-asan/libbnn.so) -----------------------
# CPython is not instrumented, so GCC's libasan is preloaded (it must come first, to replace
# malloc: numpy's buffers are then ASan heap blocks with redzones); leak detection is off (CPython
# leaks at exit by design); any other report aborts the process.
ASAN_LIB=build/$HOST-asan/libbnn.so
PY_ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
PY_UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
# the Python tests that call into libbnn (tests/test_convert.py and test_detect.py call it too but
# spend their time in torch exports; left out)
PY_C_TESTS=(tests/test_ops.py tests/test_executor.py tests/test_model_format.py tests/test_fuzz_regressions.py)
python_exe() { python3 -c 'import sys; print(sys.executable)'; }  # the binary, not a pyenv shim
# libasan, and libstdc++ with it: ASan resolves the real __cxa_throw when it starts, so a C++
# library loaded later (onnx, torch) that throws would hit a CHECK failure without it.
libasan() {
  local a s; a=$(${CC:-gcc} -print-file-name=libasan.so); s=$(${CC:-gcc} -print-file-name=libstdc++.so.6)
  [[ -f $a ]] || die "${CC:-gcc} has no libasan.so (sudo apt install gcc libasan8)"
  [[ -f $s ]] || s=libstdc++.so.6
  echo "$a $s"
}
# asan_env <command...>: the command with BNN_LIBRARY=the ASan libbnn.so and libasan preloaded.
asan_env() {
  [[ -f $ASAN_LIB ]] || die "$ASAN_LIB is missing (./build.sh asan)"
  env BNN_LIBRARY="$ROOT/$ASAN_LIB" LD_PRELOAD="${ASAN_PRELOAD:-$(libasan)}" \
    ASAN_OPTIONS="$PY_ASAN_OPTIONS${ASAN_EXTRA:+:$ASAN_EXTRA}" UBSAN_OPTIONS="$PY_UBSAN_OPTIONS" "$@"
}
# Fails unless firmware_py really loaded the ASan library in a process running the ASan runtime.
check_asan_loaded() {
  asan_env "$(python_exe)" -c '
import os
from firmware_py import _native
got, want = os.path.realpath(_native.library_path()), os.path.realpath(os.environ["BNN_LIBRARY"])
maps = open("/proc/self/maps").read()
asan = sorted({l.split()[-1] for l in maps.splitlines() if "/libasan.so" in l})
assert got == want, "firmware_py loaded %s, not %s" % (got, want)
assert want in maps and asan, "libbnn.so or libasan.so is not mapped"
assert _native.lib().bnn_version()
print("  firmware_py loaded %s (ASan runtime %s)" % (got, asan[0]))'
}
python_asan_tests() {
  check_asan_loaded
  # --capture=sys: a sanitizer report goes to fd 2 and must not vanish with pytest's captured
  # output when the process aborts
  asan_env "$(python_exe)" -m pytest -q -p no:cacheprovider --capture=sys "${PY_C_TESTS[@]}"
}

# ---- fuzzing (atheris + libFuzzer, tests/fuzz/) ----------------------------------------------------
# fuzz [loader|convert] [SECONDS | runs=N] [libFuzzer flags...]: builds the ASan library and runs
# tests/fuzz/fuzz_<target>.py on it.  Corpus: build/fuzz/<target>/corpus (kept between runs), seeded
# from tests/fuzz/seeds/<target>/ and tests/fuzz/regressions/<target>/; a crashing input is
# written to build/fuzz/<target>/artifacts/ (keep it under tests/fuzz/regressions/<target>/ once
# fixed).  libFuzzer stops at the first crash.
fuzz() {
  local target=${1:-loader} limit=${2:-60} py shim dir dirs=() flags=() t0 rc log execs crashes script
  [[ $target == loader || $target == convert ]] || die "usage: ./build.sh fuzz [loader|convert] [SECONDS|runs=N] [libFuzzer flags...]"
  shift $(($# < 2 ? $# : 2))
  script=tests/fuzz/fuzz_$target.py; [[ $target == loader ]] && script=tests/fuzz/fuzz_model_loader.py
  case $limit in
    runs=[0-9]*) flags+=(-runs="${limit#runs=}") ;;
    [0-9]*) flags+=(-max_total_time="$limit") ;;
    *) die "fuzz: the limit is SECONDS or runs=N, got '$limit'" ;;
  esac
  py=$(python_exe)
  "$py" -c 'import atheris' 2>/dev/null || die "fuzz: atheris is not installed (pip install atheris)"
  build "$HOST" asan >/dev/null
  # atheris' Python coverage must reach its libFuzzer, not libasan's no-op stubs: see the shim
  shim=build/$HOST-asan/sancov_shim.so
  ${CC:-gcc} -O2 -shared -fPIC -Wall -Wextra -Werror tests/fuzz/sancov_shim.c -ldl -o "$shim"
  dir=build/fuzz/$target; mkdir -p "$dir/corpus" "$dir/artifacts"
  dirs=("$dir/corpus" tests/fuzz/seeds/"$target")
  [[ -n $(ls -A tests/fuzz/regressions/"$target" 2>/dev/null) ]] && dirs+=(tests/fuzz/regressions/"$target")
  [[ -f tests/fuzz/$target.dict ]] && flags+=(-dict=tests/fuzz/$target.dict)
  log=$dir/last.log; crashes=$(ls "$dir/artifacts" | wc -l)
  echo "fuzz $target: ${flags[*]} $* ${dirs[*]} (log: $log)"
  t0=$(date +%s.%N); rc=0
  # a 16 MiB quarantine (not 256) keeps use-after-free detection within an execution and makes
  # libFuzzer's loop ~2x faster; LeakSanitizer is off (CPython), so libFuzzer's leak retries too
  ASAN_PRELOAD="$ROOT/$shim $(libasan)" ASAN_EXTRA=verify_asan_link_order=0:quarantine_size_mb=16 \
    asan_env "$py" "$script" "${flags[@]}" -timeout=120 -rss_limit_mb=4096 -detect_leaks=0 \
    -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "$@" "${dirs[@]}" 2>&1 | tee "$log" || rc=$?
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -1)
  crashes=$(($(ls "$dir/artifacts" | wc -l) - crashes))
  printf '\nfuzz %s: %s executions in %.0f s wall, %d crash(es)%s, corpus %d files (%s)\n' "$target" \
    "${execs:-?}" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" "$crashes" \
    "$( ((crashes)) && echo ": $(ls -t "$dir/artifacts" | head -n "$crashes" | sed "s,^,$dir/artifacts/," | tr '\n' ' ')")" \
    "$(ls "$dir/corpus" | wc -l)" "$dir/corpus"
  ((rc == 0 && crashes == 0))
}

run_pytest() {
  local rc=0; python3 -m pytest -q tests/ || rc=$?
  if ((rc == 5)) && [[ -z $(find tests -name 'test_*.py' -o -name '*_test.py') ]]; then
    echo "  (no Python tests yet)"; return 0; fi
  return $rc
}

# step <name> <command...>: runs a step in a subshell (set -e inside), records PASS/FAIL, goes on.
RESULTS=(); FAILED=0
step() {
  local name=$1 rc; shift; log "$name"
  set +e; (set -e; "$@"); rc=$?; set -e
  if ((rc == 0)); then RESULTS+=("PASS  $name"); else RESULTS+=("FAIL  $name"); FAILED=1; fi
}
summary() {
  log "summary"; printf '  %s\n' "${RESULTS[@]}"
  ((FAILED == 0)) && echo "  ALL PASSED" || { echo "  FAILED"; exit 1; }
}

version() {
  local v
  v=$(sed -nE 's/^__version__ *= *["'\'']([^"'\'']+)["'\''].*/\1/p' firmware_py/__init__.py 2>/dev/null | head -1)
  [[ -n $v ]] || v=$(sed -nE 's/^version *= *"([^"]+)".*/\1/p' pyproject.toml 2>/dev/null | head -1)
  [[ -n $v ]] || die "no __version__ in firmware_py/__init__.py nor version in pyproject.toml"
  echo "$v"
}

dist() {
  local a v files=(firmware_py)
  for a in x86_64 aarch64 armhf armv6; do build "$a"; done
  v=$(version)
  for a in app models README.md pyproject.toml LICENSE; do [[ -e $a ]] && files+=("$a"); done
  [[ -e pyproject.toml ]] || echo "build.sh: warning: no pyproject.toml, the tarball cannot be pip-installed" >&2
  mkdir -p dist
  # the device runs .bnn files: no ONNX (no onnxruntime there), training checkpoints or data caches
  tar --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' --exclude=models/.ckpt --exclude=models/.cache \
    --exclude='models/zoo/*.onnx' --transform "s,^,bnn-pi-$v/," \
    -czf "dist/bnn-pi-$v.tar.gz" "${files[@]}"
  log "dist/bnn-pi-$v.tar.gz"; tar -tzf "dist/bnn-pi-$v.tar.gz" | grep -E 'libbnn.so$'
}

case "${1:-host}" in
  host) build "$HOST" ;;
  x86_64|aarch64|armhf|armv6) build "$1" ;;
  asan) build "$HOST" asan ;;  # build/<host>-asan/: ASan+UBSan libbnn.so, libbnn.a and C tests
  tsan) build "$HOST" tsan ;;  # build/<host>-tsan/: the same with ThreadSanitizer
  asan-test)  # only the sanitizer steps of 'test' (host): C tests and the Python tests calling C
    step "build $HOST-asan" build "$HOST" asan
    step "C tests $HOST asan+ubsan" eval 'ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 run_tests build/$HOST-asan'
    step "Python tests calling C, on the asan+ubsan libbnn.so" python_asan_tests
    summary ;;
  all) for a in x86_64 aarch64 armhf armv6; do build "$a"; done ;;
  test)
    ensure_tools aarch64-linux-gnu-gcc arm-linux-gnueabihf-gcc qemu-aarch64 qemu-arm file aarch64-linux-gnu-objdump
    [[ $HOST == x86_64 ]] || die "'test' runs the Pi targets under qemu on an x86-64 host; on a Pi use ./build.sh host and run build/<arch>/tests/*"
    step "build x86_64" build x86_64
    step "build x86_64-asan" build x86_64 asan
    step "build x86_64-tsan" build x86_64 tsan
    for a in aarch64 armhf armv6; do step "build $a" build "$a"; done
    step "C tests x86_64" run_tests build/x86_64
    step "C tests x86_64 asan+ubsan" asan_tests
    step "C tests x86_64 tsan" tsan_tests
    step "C tests aarch64 (qemu)" run_tests build/aarch64 qemu-aarch64 -L /usr/aarch64-linux-gnu
    step "C tests armhf (qemu)" run_tests build/armhf qemu-arm -L /usr/arm-linux-gnueabihf
    # armv6: Debian's armhf libc uses armv7 instructions, so every program dies with SIGILL
    # under `qemu-arm -cpu arm1176`; the armv6 tests run on qemu's default cpu instead and
    # check_elf proves statically that libbnn.so for armv6 holds no armv7/Thumb-2/NEON code.
    step "C tests armv6 (qemu default cpu)" run_tests build/armv6 qemu-arm -L /usr/arm-linux-gnueabihf
    step "dlopen libbnn.so aarch64/armhf/armv6 (qemu)" eval 'dlopen_smoke aarch64 qemu-aarch64 -L /usr/aarch64-linux-gnu &&
      dlopen_smoke armhf qemu-arm -L /usr/arm-linux-gnueabihf && dlopen_smoke armv6 qemu-arm -L /usr/arm-linux-gnueabihf'
    step "ELF checks (file, hard-float, cnt, armv6 ISA)" check_elf
    step "Python tests (pytest)" run_pytest
    step "Python tests calling C, on the asan+ubsan libbnn.so" python_asan_tests
    summary ;;
  dist) dist ;;
  fuzz) shift; fuzz "$@" ;;
  demo)  # the camera app on the bundled clip once the person detector is shipped;
         # until then the shipped XNOR classifier on bundled Fashion-MNIST images
    shift; build "$HOST"
    if [[ -f models/zoo/person/binary.bnn || " $* " == *" --model "* ]]; then exec bash app/demo.sh "$@"; fi
    echo "demo: models/zoo/person/binary.bnn is not trained yet; running the classifier demo" >&2
    exec python3 -m firmware_py.demo "$@" ;;
  clean) rm -rf build dist firmware_py/_lib ;;
  *) die "usage: ./build.sh [host|aarch64|armhf|armv6|all|asan|tsan|asan-test|test|dist|demo|fuzz|clean]" ;;
esac
