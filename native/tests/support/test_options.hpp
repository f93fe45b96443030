// Command line of the CUDA test drivers. `--small` (or FA4J_TEST_SMALL=1 in the environment) keeps
// only the shapes of at most 333 rows: compute-sanitizer runs kernels one to two orders of magnitude
// slower, and memcheck finds out-of-bounds accesses on ragged small shapes as well as on large ones.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace fa4j_test {

constexpr long long kSmallMaxRows = 333;

struct TestOptions {
    bool small = false;
};

inline TestOptions parse_test_options(int argc, char** argv) {
    TestOptions options;
    const char* env = std::getenv("FA4J_TEST_SMALL");
    options.small = env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--small") == 0) {
            options.small = true;
        } else {
            std::fprintf(stderr, "unknown argument %s\nusage: %s [--small]   (or FA4J_TEST_SMALL=1)\n", argv[i], argv[0]);
            std::exit(2);
        }
    }
    return options;
}

}  // namespace fa4j_test
