/* glibc symbol-version pins: libbnn.so built against a new glibc (Debian bookworm: 2.36) must load
 * on glibc 2.31 (Debian bullseye = Raspberry Pi OS Legacy).  Force-included into every
 * translation unit by build.sh (-include); `./build.sh test` checks the result (check_glibc).
 *
 * glibc 2.34 moved libpthread into libc and gave the moved functions a new default version,
 * e.g. pthread_create@@GLIBC_2.34, which a 2.31 loader rejects ("version `GLIBC_2.34' not
 * found").  libc.so.6 still exports the old versions (pthread_create@GLIBC_2.17 on aarch64,
 * @GLIBC_2.4 on 32-bit ARM EABI, @GLIBC_2.2.5 on x86-64) as aliases of the very same function
 * (same address, same ABI); on glibc < 2.34 these are the default versions, defined in
 * libpthread.so.0, which build.sh therefore links as DT_NEEDED (a stub on glibc >= 2.34).
 * .symver makes each reference in this file bind to the old version.
 *
 * Pinned: only the symbols whose default version is newer than 2.31 on these targets.
 * Everything else libbnn uses (malloc, pthread_mutex_*, pthread_cond_*, clock_gettime@2.17,
 * memcpy@2.14, ...) already resolves to a version <= 2.31.  libm's expf/logf/powf/exp2f/log2f
 * have GLIBC_2.27 versions: fine too.  A newly used function may need a line here:
 * check_glibc names it.
 *
 * No #include here: this is read before each file's own feature-test macros
 * (_POSIX_C_SOURCE ...), which must precede the first system header.  Define
 * BNN_NO_GLIBC_PINS to build against a libc without these versions (musl, static glibc). */
#ifndef BNN_GLIBC_COMPAT_H
#define BNN_GLIBC_COMPAT_H

#if defined(__linux__) && !defined(__ANDROID__) && !defined(BNN_NO_GLIBC_PINS)
#if defined(__aarch64__) && !defined(__ILP32__)
#define BNN_GLIBC_PTHREAD_VER "GLIBC_2.17"
#elif defined(__arm__) && defined(__ARM_EABI__)
#define BNN_GLIBC_PTHREAD_VER "GLIBC_2.4"
#elif defined(__x86_64__) && !defined(__ILP32__)
#define BNN_GLIBC_PTHREAD_VER "GLIBC_2.2.5"
#endif
#endif

#ifdef BNN_GLIBC_PTHREAD_VER
__asm__(".symver pthread_create,pthread_create@" BNN_GLIBC_PTHREAD_VER);
__asm__(".symver pthread_join,pthread_join@" BNN_GLIBC_PTHREAD_VER);
#endif

#endif
