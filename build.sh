#!/usr/bin/env bash
# Builds the C runtime (csrc/neon/**/*.c) for the host and the Raspberry Pi targets,
# runs the tests and packs the Pi tarball.
#   Usage: ./build.sh [host|aarch64|armhf|armv6|all|asan|tsan|asan-test|test|dist|demo|pi-test|setup|lock|fuzz|clean]
#   outputs: firmware_py/_lib/<arch>/libbnn.so, build/<arch>/libbnn.a, build/<arch>/tests/test_*
#   a C test is any tests/c/test_*.c (one standalone program, linked against libbnn.a).
# Every command sets up what it needs first (setup_for below): the system packages with apt-get
# (as root; otherwise the sudo line to run is printed and nothing else is done) and, for demo,
# test, dist and fuzz, the project's virtual environment .venv with the versions of
# requirements/constraints.txt.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
JOBS=$(nproc 2>/dev/null || echo 2)
BNN_TUNE=${BNN_TUNE:-cortex-a72}   # aarch64 tuning; cortex-a76 for a Pi-5-tuned build
VENV=${BNN_VENV:-$ROOT/.venv}
CMD=${1:-host}

# -fno-trapping-math: no program reads the FP exception flags; it lets the compilers compute
# both sides of a float select (PReLU, clip) and vectorise it instead of branching per element.
# Results are unchanged: IEEE arithmetic, no reassociation, no contraction (ISO C11 mode).
COMMON=(-std=c11 -O3 -fno-trapping-math -fPIC -fvisibility=hidden -Wall -Wextra -Werror -pthread -Icsrc/neon/include)
declare -A ARCH_FLAGS=(
  [x86_64]="-march=x86-64"
  [aarch64]="-march=armv8-a -mtune=$BNN_TUNE"
  [armhf]="-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard -mtune=cortex-a53"
  [armv6]="-march=armv6zk -mfpu=vfp -mfloat-abi=hard -marm"
)
declare -A TRIPLE=([x86_64]=x86_64-linux-gnu [aarch64]=aarch64-linux-gnu
                   [armhf]=arm-linux-gnueabihf [armv6]=arm-linux-gnueabihf)

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

# ---- set-up: system packages (apt) and the project's virtual environment (.venv) -----------------
have() { command -v "$1" >/dev/null 2>&1; }
py_has() { python3 -c "import $1" >/dev/null 2>&1; }
# is_present <Debian package>: whether what the build needs from it is here (tested by what the
# package provides, so that a tool installed some other way counts too)
is_present() {
  case $1 in
    gcc) have "${CC:-gcc}" ;;
    libc6-dev) [[ -e /usr/include/stdio.h ]] ;;
    gcc-aarch64-linux-gnu) have aarch64-linux-gnu-gcc ;;
    gcc-arm-linux-gnueabihf) have arm-linux-gnueabihf-gcc ;;
    binutils-aarch64-linux-gnu) have aarch64-linux-gnu-objdump ;;
    libc6-dev-arm64-cross) [[ -e /usr/aarch64-linux-gnu/include/stdio.h ]] ;;  # the cross compilers' libc
    libc6-dev-armhf-cross) [[ -e /usr/arm-linux-gnueabihf/include/stdio.h ]] ;;
    qemu-user) have qemu-aarch64 && have qemu-arm ;;
    file) have file ;;
    mosquitto) (have mosquitto || [[ -x /usr/sbin/mosquitto ]]) && have mosquitto_passwd ;;
    openssl) have openssl ;;  # the MQTT TLS tests make their certificates with it
    prometheus) have promtool ;;
    chromium) have chromium ;;
    systemd) have systemd-analyze ;;
    libcap-dev) [[ -e /usr/include/sys/capability.h ]] ;;  # picamera2's python-prctl compiles against it
    python3-venv) py_has ensurepip && py_has venv ;;
    python3-dev) python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ;;
    dataset-fashion-mnist) [[ -d /usr/share/datasets/fashion-mnist ]] ;;  # the classifier zoo's test set
    python3-numpy) py_has numpy ;;
    python3-cffi) py_has cffi ;;
    python3-opencv) py_has cv2 ;;
    *) dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed' ;;
  esac
}
# need_pkgs <package...>: installs the missing ones with apt-get when root; otherwise prints the
# exact command and stops (exit 2) before anything is changed.
need_pkgs() {
  local p missing=()
  for p in "$@"; do is_present "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) != 0 ]] || ! have apt-get; then
    echo "build.sh: missing system packages: ${missing[*]}" >&2
    if have apt-get; then echo "  run:  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    else echo "  (no apt-get here: install their equivalents with your package manager)" >&2; fi
    echo "  then run ./build.sh $CMD again" >&2
    exit 2
  fi
  log "apt-get install ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  for p in "${missing[@]}"; do is_present "$p" || die "apt-get installed $p, but what it provides is still missing"; done
}
# The device's Python: a Pi (any non-x86 host) takes numpy, cffi and OpenCV from apt, as Raspberry
# Pi OS ships them (its .venv sees them, and apt's picamera2 and libcamera, through
# --system-site-packages); an x86-64 PC takes PyPI's wheels at the versions of the lock.
on_device() { [[ $HOST != x86_64 ]]; }
APT_BUILD=(gcc libc6-dev)
APT_DEVICE_PY=(python3-venv python3-numpy python3-cffi python3-opencv)
APT_CROSS=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf binutils-aarch64-linux-gnu libc6-dev-arm64-cross
           libc6-dev-armhf-cross qemu-user file)
APT_TEST=("${APT_BUILD[@]}" "${APT_CROSS[@]}" python3-venv python3-dev mosquitto openssl libcap-dev dataset-fashion-mnist)
APT_TEST+=(prometheus chromium systemd)  # promtool, headless Chromium, systemd-analyze: tests/test_app_service.py
# stamp <device|dev>: a digest of what .venv must hold for that kind (requirement files, lock,
# Python, host)
stamp() {
  local files=(requirements/constraints.txt requirements/device.txt)
  [[ $1 == dev ]] && files+=(requirements/dev.txt)
  { cat "${files[@]}"; python3 --version; echo "$HOST"; } | sha256sum | cut -d' ' -f1
}
# venv <device|dev>: creates .venv when missing, installs what the kind needs unless its stamp
# says it is there already, and puts .venv/bin first on PATH for the rest of this run.
venv() {
  local kind=$1 want opts=() m
  on_device && opts+=(--system-site-packages)
  if [[ ! -x $VENV/bin/python3 ]]; then
    log "creating the virtual environment $VENV ${opts[*]}"
    python3 -m venv "${opts[@]}" "$VENV"
  fi
  export VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
  want=$(stamp "$kind")
  [[ -f $VENV/.stamp-$kind && $(<"$VENV/.stamp-$kind") == "$want" ]] && return 0
  if [[ $kind == device ]] && on_device; then
    for m in numpy cffi cv2; do py_has "$m" || die "$VENV does not see $m (apt: ${APT_DEVICE_PY[*]})"; done
  else
    log "pip install -r requirements/$kind.txt -c requirements/constraints.txt (into $VENV)"
    python3 -m pip install -r "requirements/$kind.txt" -c requirements/constraints.txt
  fi
  echo "$want" >"$VENV/.stamp-$kind"
  if [[ $kind == dev ]]; then stamp device >"$VENV/.stamp-device"; fi  # dev holds all device needs
}
# setup_for <command>: what a ./build.sh command needs, set up before it starts
setup_for() {
  case $1 in
    demo) if on_device; then need_pkgs "${APT_BUILD[@]}" "${APT_DEVICE_PY[@]}"
          else need_pkgs "${APT_BUILD[@]}" python3-venv; fi
          venv device ;;
    test|setup|asan-test|fuzz|pi-test) need_pkgs "${APT_TEST[@]}"; venv dev ;;
    lock) need_pkgs python3-venv python3-dev libcap-dev ;;
    dist) need_pkgs "${APT_BUILD[@]}" "${APT_CROSS[@]}" python3-venv; venv device ;;
    host|x86_64|asan|tsan|all) need_pkgs "${APT_BUILD[@]}" ;;
    aarch64|armhf|armv6) need_pkgs "${APT_CROSS[@]}" ;;
  esac
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
  [[ $CCX == "${TRIPLE[$arch]}-gcc" ]] && need_pkgs "${APT_CROSS[@]}"
  have "$CCX" || die "no C compiler '$CCX' (sudo apt-get install gcc)"
  read -ra CFLAGS <<<"${ARCH_FLAGS[$arch]}"; CFLAGS=("${COMMON[@]}" "${CFLAGS[@]}")
  # glibc <= 2.31 (Pi OS bullseye): old symbol versions (glibc_compat.h), and libpthread.so.0
  # as DT_NEEDED since pthread_create lives there before glibc 2.34 (an empty stub after)
  CFLAGS+=(-include csrc/neon/core/glibc_compat.h)
  ldflags+=(-Wl,--push-state,--no-as-needed,-l:libpthread.so.0,--pop-state)
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
    cp csrc/neon/include/bnn.h firmware_py/_lib/bnn.h  # what firmware_py/header.py reads
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

# Every library must load on glibc 2.31 (Debian bullseye = Raspberry Pi OS Legacy): no symbol, and
# no version-needs entry (the loader checks each one), newer than GLIBC_2.31 (see glibc_compat.h).
check_glibc() {
  local a so t syms vers v newest bad=0 n=0
  for a in x86_64 aarch64 armhf armv6; do
    so=build/$a/libbnn.so; [[ -f $so ]] || continue; n=$((n + 1))
    # "<version> <symbol>" per undefined versioned symbol; objdump writes "(GLIBC_2.4)" for a
    # non-default version
    t=$(tool "$a" objdump); syms=$("$t" -T "$so")
    syms=$(awk '/\*UND\*/ && /GLIBC_[0-9]/ { v = $(NF - 1); gsub(/[()]/, "", v); print v, $NF }' <<<"$syms")
    t=$(tool "$a" readelf); vers=$("$t" -V "$so")
    vers=$(sed -nE 's/.*Name: (GLIBC_[0-9.]+).*/\1/p' <<<"$vers" | sort -uV)
    [[ -n $vers ]] || die "$so: no GLIBC version needed (readelf -V)"
    for v in $vers; do
      [[ $(printf '%s\n' 2.31 "${v#GLIBC_}" | sort -V | tail -1) == 2.31 ]] && continue
      bad=1
      echo "  $a: $so needs $v:$(awk -v v="$v" '$1 == v { printf " %s@%s", $2, v }' <<<"$syms")"
    done
    newest=$(tail -1 <<<"$vers")
    echo "  $a: newest glibc version needed: $newest ($(awk 'NF { n++ } END { print n + 0 }' <<<"$syms") versioned glibc symbols)"
  done
  ((n > 0)) || die "check_glibc: no build/<arch>/libbnn.so"
  ((bad == 0)) || die "libraries above need glibc > 2.31: pin the symbols in csrc/neon/core/glibc_compat.h"
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

# run_pytest: the Python tests; the reason of every skip goes to build/pytest-skips.txt, which the
# summary lists (tests/conftest.py fails any skip that is not for a thing that cannot exist here)
run_pytest() {
  local rc=0; mkdir -p build
  python3 -m pytest -q -rs --continue-on-collection-errors -m 'not arm_userland' tests/ 2>&1 | tee build/pytest.log || rc=${PIPESTATUS[0]}
  grep -E '^SKIPPED' build/pytest.log >build/pytest-skips.txt || true
  return "$rc"
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
  if [[ -s build/pytest-skips.txt ]]; then
    echo "  skipped ($(wc -l <build/pytest-skips.txt); none for a missing dependency):"
    sed 's/^SKIPPED /    /' build/pytest-skips.txt
  fi
  ((FAILED == 0)) && echo "  ALL PASSED" || { echo "  FAILED"; exit 1; }
}

version() {
  local v
  v=$(sed -nE 's/^__version__ *= *["'\'']([^"'\'']+)["'\''].*/\1/p' firmware_py/__init__.py 2>/dev/null | head -1)
  [[ -n $v ]] || die "no __version__ in firmware_py/__init__.py"
  grep -q "^version = \"$v\"" pyproject.toml || die "pyproject.toml's version is not firmware_py.__version__ ($v)"
  echo "$v"
}

# pack: dist/bnn-pi-<v>.tar.gz (what a Pi unpacks or pip-installs: the packages, the libraries
# of all four architectures as they are in firmware_py/_lib, the shipped .bnn models) and the
# wheel pip builds from it (dist/bnn_pi-<v>-py3-none-any.whl)
pack() {
  local a v files=() lib
  v=$(version)
  for a in x86_64 aarch64 armhf armv6; do
    lib=firmware_py/_lib/$a/libbnn.so; [[ -f $lib ]] || die "$lib is missing (./build.sh all)"
  done
  for a in firmware_py bnn_camera models README.md pyproject.toml LICENSE; do [[ -e $a ]] && files+=("$a"); done
  rm -rf dist; mkdir -p dist
  # the device runs .bnn files: no ONNX (no onnxruntime there), training checkpoints or data caches
  tar --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' --exclude=models/.ckpt --exclude=models/.cache \
    --exclude='models/zoo/*.onnx' --transform "s,^,bnn-pi-$v/," \
    -czf "dist/bnn-pi-$v.tar.gz" "${files[@]}"
  python3 -m pip wheel -q --no-deps -w dist "dist/bnn-pi-$v.tar.gz"
  log "dist/"; ls -l dist
  tar -tzf "dist/bnn-pi-$v.tar.gz" | grep -E 'libbnn.so$'
}
dist() { local a; for a in x86_64 aarch64 armhf armv6; do build "$a"; done; pack; }

# ---- the Pi path without a Pi: the dist tarball in Debian's ARM userlands under qemu-user -------
ARM_ROOTFS=$ROOT/../shared/tools/arm-rootfs
PI_USERLANDS=(arm64 armhf arm64-bullseye armhf-bullseye)
# pi_demo <userland>: unpacks the tarball into build/pi-test/<userland>/ and, in that userland
# (Raspberry Pi OS's Debian, its own python3, numpy, cffi and OpenCV), runs the classifier demo,
# `firmware_py info` and the camera demo on the bundled clip; the camera demo's summary must say
# how many frames ran at what fps.
pi_demo() {
  local n=$1 dir=build/pi-test/$1 out
  rm -rf "$dir"; mkdir -p "$dir"; tar -xzf dist/bnn-pi-"$(version)".tar.gz -C "$dir"
  out=$(cd "$dir" && "$ARM_ROOTFS/run.sh" "$n" sh -c 'cd bnn-pi-* && python3 --version &&
    python3 -c "import numpy, cv2; print(\"numpy\", numpy.__version__, \"OpenCV\", cv2.__version__)" &&
    python3 -m firmware_py.demo >/tmp/demo.txt && tail -n 1 /tmp/demo.txt &&
    python3 -m firmware_py info models/zoo/person/binary.bnn >/tmp/info.txt && head -n 3 /tmp/info.txt &&
    bash bnn_camera/demo.sh --max-frames 20 --threads 1' 2>&1) || { echo "$out"; return 1; }
  echo "$out" | sed 's/^/  /'
  grep -qE '^frames +20 in' <<<"$out" && grep -qE '^inference fps +[0-9.]+' <<<"$out"
}
pi_test() {
  local n names=("$@")
  ((${#names[@]})) || names=("${PI_USERLANDS[@]}")
  [[ $(id -u) == 0 ]] || die "pi-test needs root (it chroots into the ARM userlands)"
  [[ -x $ARM_ROOTFS/run.sh ]] || die "pi-test needs ../shared/tools/arm-rootfs"
  step "dist" dist
  for n in "${names[@]}"; do
    [[ -f /var/cache/arm-rootfs/$n/.complete ]] || echo "(the $n userland is built first: several minutes, once)"
    step "Pi demo from the dist tarball in Debian $n (qemu-user)" pi_demo "$n"
  done
  step "ARM instruction counts (pytest -m arm_userland)" python3 -m pytest -q -p no:cacheprovider -m arm_userland tests/
  summary
}

if [[ $CMD == test || $CMD == pi-test ]] && [[ $HOST != x86_64 ]]; then
  die "'$CMD' runs the Pi targets under qemu on an x86-64 host; on a Pi use ./build.sh host and run build/<arch>/tests/*"
fi
setup_for "$CMD"
case "$CMD" in
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
    rm -f build/pytest-skips.txt
    step "build x86_64" build x86_64
    step "build x86_64-asan" build x86_64 asan
    step "build x86_64-tsan" build x86_64 tsan
    for a in aarch64 armhf armv6; do step "build $a" build "$a"; done
    step "C tests x86_64" run_tests build/x86_64
    step "C tests x86_64 asan+ubsan" asan_tests
    step "C tests x86_64 tsan" tsan_tests
    step "C tests aarch64 (qemu)" run_tests build/aarch64 qemu-aarch64 -L /usr/aarch64-linux-gnu
    # an in-order core's MIDR: bconv2d must pick (and pass with) its in-order kernel
    step "C tests aarch64 Cortex-A53 (qemu -cpu cortex-a53)" eval 'BNN_EXPECT_BCONV2D_KERNEL=neon-a53 \
      run_tests build/aarch64 qemu-aarch64 -cpu cortex-a53 -L /usr/aarch64-linux-gnu'
    step "C tests armhf (qemu)" run_tests build/armhf qemu-arm -L /usr/arm-linux-gnueabihf
    # armv6: Debian's armhf libc uses armv7 instructions, so every program dies with SIGILL
    # under `qemu-arm -cpu arm1176`; the armv6 tests run on qemu's default cpu instead and
    # check_elf proves statically that libbnn.so for armv6 holds no armv7/Thumb-2/NEON code.
    step "C tests armv6 (qemu default cpu)" run_tests build/armv6 qemu-arm -L /usr/arm-linux-gnueabihf
    step "dlopen libbnn.so aarch64/armhf/armv6 (qemu)" eval 'dlopen_smoke aarch64 qemu-aarch64 -L /usr/aarch64-linux-gnu &&
      dlopen_smoke armhf qemu-arm -L /usr/arm-linux-gnueabihf && dlopen_smoke armv6 qemu-arm -L /usr/arm-linux-gnueabihf'
    step "ELF checks (file, hard-float, cnt, armv6 ISA)" check_elf
    step "glibc <= 2.31 (Raspberry Pi OS bullseye)" check_glibc
    step "dist tarball and wheel" pack  # tests/test_install.py installs them in a clean venv
    export BNN_DIST=$ROOT/dist
    step "Python tests (pytest)" run_pytest
    step "Python tests calling C, on the asan+ubsan libbnn.so" python_asan_tests
    summary ;;
  dist) dist ;;
  pi-test) shift; pi_test "$@" ;;  # [userland...]: default all four
  setup) ;;  # only the set-up of test: apt packages and .venv
  lock)  # rewrites requirements/constraints.txt from a new venv with the newest allowed versions
    rm -rf build/lock-venv; python3 -m venv build/lock-venv
    build/lock-venv/bin/pip install -q -r requirements/dev.txt
    { sed -n '/^#/p' requirements/constraints.txt; build/lock-venv/bin/pip freeze --all | grep -v '^pip=='; } \
      >requirements/constraints.txt.new
    mv requirements/constraints.txt.new requirements/constraints.txt; rm -rf build/lock-venv
    git diff --stat requirements/constraints.txt ;;
  fuzz) shift; fuzz "$@" ;;
  demo)  # the camera app on the bundled clip with the shipped person detector
    shift
    lib=firmware_py/_lib/$HOST/libbnn.so  # rebuilt when a source or build.sh is newer
    if [[ -f $lib && -z $(find csrc build.sh -newer "$lib" -print -quit) ]]; then echo "$lib is up to date"
    else build "$HOST"; fi
    exec bash bnn_camera/demo.sh "$@" ;;
  clean) rm -rf build dist firmware_py/_lib ;;
  *) die "usage: ./build.sh [host|aarch64|armhf|armv6|all|asan|tsan|asan-test|test|dist|demo|pi-test|setup|lock|fuzz|clean]" ;;
esac
