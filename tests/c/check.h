/* Minimal test harness for the C tests: CHECK(...) counts, check_summary() prints
 * "N passed, N failed" and gives the exit status.  Deterministic RNG for inputs. */
#ifndef BNN_TEST_CHECK_H
#define BNN_TEST_CHECK_H
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (cond) {                                                             \
            check_passed++;                                                     \
        } else {                                                                \
            check_failed++;                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

static inline int check_summary(const char *name) {
    printf("%s: %d passed, %d failed\n", name, check_passed, check_failed);
    return check_failed ? 1 : 0;
}

/* xorshift64*: reproducible across architectures */
static uint64_t check_rng_state = 0x9E3779B97F4A7C15ull;
static inline void check_seed(uint64_t s) { check_rng_state = s ? s : 1; }
static inline uint64_t check_rand_u64(void) {
    uint64_t x = check_rng_state;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    check_rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}
static inline int check_rand_int(int lo, int hi) { /* inclusive */
    return lo + (int)(check_rand_u64() % (uint64_t)(hi - lo + 1));
}
static inline float check_rand_float(float lo, float hi) {
    return lo + (hi - lo) * (float)((check_rand_u64() >> 40) * (1.0 / 16777216.0));
}
#endif
