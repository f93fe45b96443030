// Command line of the CUDA test drivers, for runs under compute-sanitizer, which runs kernels one to
// three orders of magnitude slower. `--small` (or FA4J_TEST_SMALL=1 in the environment) keeps only the
// shapes of at most 333 rows: memcheck finds out-of-bounds accesses on ragged small shapes as well as on
// large ones. `--max-rows N` keeps shapes of at most N rows, for racecheck and synccheck, which
// instrument every shared-memory access and barrier: two or three tiles show the hazards between loop
// iterations. Both also leave out calls that make a CUDA API call fail on purpose (the sanitizer counts
// those as errors).
#pragma once

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <flashattn4j.h>

namespace fa4j_test {

constexpr long long kSmallMaxRows = 333;

struct TestOptions {
    bool small = false;                // under a sanitizer: no deliberately failing CUDA calls
    long long max_rows = LLONG_MAX;    // shapes with more query or key rows are skipped
    int kernel_family = FA4J_KERNEL_AUTO;  // --kernel auto|sm80|sm90: forces a kernel family (fa4j_attention)
};

[[noreturn]] inline void usage_error(const char* what, const char* argument, const char* program) {
    std::fprintf(stderr, "%s%s\nusage: %s [--small | --max-rows N] [--kernel auto|sm80|sm90]   (or FA4J_TEST_SMALL=1)\n", what, argument, program);
    std::exit(2);
}

inline TestOptions parse_test_options(int argc, char** argv) {
    TestOptions options;
    const char* env = std::getenv("FA4J_TEST_SMALL");
    if (env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0) {
        options.small = true;
        options.max_rows = kSmallMaxRows;
    }
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--small") == 0) {
            options.small = true;
            options.max_rows = kSmallMaxRows;
        } else if (std::strcmp(argv[i], "--max-rows") == 0 && i + 1 < argc) {
            char* end = nullptr;
            const long long rows = std::strtoll(argv[++i], &end, 10);
            if (end == argv[i] || *end != '\0' || rows < 1) usage_error("--max-rows needs a positive number, not ", argv[i], argv[0]);
            options.small = true;
            options.max_rows = rows;
        } else if (std::strcmp(argv[i], "--kernel") == 0 && i + 1 < argc) {
            const char* family = argv[++i];
            if (std::strcmp(family, "auto") == 0) options.kernel_family = FA4J_KERNEL_AUTO;
            else if (std::strcmp(family, "sm80") == 0) options.kernel_family = FA4J_KERNEL_SM80;
            else if (std::strcmp(family, "sm90") == 0) options.kernel_family = FA4J_KERNEL_SM90;
            else usage_error("--kernel takes auto, sm80 or sm90, not ", family, argv[0]);
        } else {
            usage_error("unknown argument ", argv[i], argv[0]);
        }
    }
    return options;
}

}  // namespace fa4j_test
