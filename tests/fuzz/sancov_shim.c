/* sancov_shim.so: lets atheris' Python coverage reach libFuzzer while GCC's libasan is preloaded.
 *
 * The ASan build of libbnn.so is GCC's (-fsanitize=address), so the Python process must run
 * with LD_PRELOAD=libasan.so.  That libasan defines the SanitizerCoverage entry points
 * (__sanitizer_cov_8bit_counters_init, ...) as weak no-op stubs, and the dynamic linker binds
 * atheris' calls to the first definition it finds: libasan's, not the libFuzzer built into
 * atheris' core_with_libfuzzer module.  Python coverage then never reaches libFuzzer
 * ("corp: 1/1b", "no interesting inputs").  Preloaded before libasan (with ASan's
 * verify_asan_link_order=0), this shim defines those entry points and forwards each call to
 * the definition inside atheris' core_with_libfuzzer module, found with dl_iterate_phdr +
 * dlsym on its handle.  It defines nothing that ASan intercepts.  Built by ./build.sh fuzz.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *core;

static int find_core(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    if (info->dlpi_name && strstr(info->dlpi_name, "atheris/core_with_libfuzzer")) {
        *(void **)data = dlopen(info->dlpi_name, RTLD_NOW | RTLD_NOLOAD);
        return 1;
    }
    return 0;
}

static void *target(const char *name) {
    if (!core) dl_iterate_phdr(find_core, &core);
    void *f = core ? dlsym(core, name) : NULL;
    if (!f) {
        fprintf(stderr, "sancov_shim: %s not found in atheris' core_with_libfuzzer\n", name);
        abort();
    }
    return f;
}

#define FWD(name, params, args)                                                  \
    void name params {                                                           \
        static void(*f) params;                                                  \
        if (!f) f = (void(*) params)target(#name);                               \
        f args;                                                                  \
    }

FWD(__sanitizer_cov_8bit_counters_init, (uint8_t *a, uint8_t *b), (a, b))
FWD(__sanitizer_cov_pcs_init, (const uintptr_t *a, const uintptr_t *b), (a, b))
FWD(__sanitizer_cov_trace_cmp8, (uint64_t a, uint64_t b), (a, b))
FWD(__sanitizer_cov_trace_const_cmp8, (uint64_t a, uint64_t b), (a, b))
