// The algorithms desync knows, by name.
//
// Each entry reads its options from the [algorithm] section with an algorithm_options() reader,
// so unknown or invalid keys fail like any other config error. `desync list` prints the
// entries. To add an algorithm: write algorithms/<family>/<name>.cpp with a factory function
// and add one line to the table in registry.cpp.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "desync/algorithms/algorithm.h"

namespace desync {

struct AlgorithmInfo {
  std::string name;
  std::string family;
  std::string summary;
  std::function<std::unique_ptr<Algorithm>(const AlgorithmConfig&)> make;
};

const std::vector<AlgorithmInfo>& algorithm_registry();

// Builds the algorithm named by cfg.name; throws ConfigError for an unknown name or option.
std::unique_ptr<Algorithm> make_algorithm(const AlgorithmConfig& cfg);

// A reader of the [algorithm] section that already knows the common keys (name, accumulation).
// Call finish() after reading the algorithm's own keys.
SectionReader algorithm_options(const AlgorithmConfig& cfg);

// Reads a communication dtype option: "float32" (default), "bfloat16" or "float16".
torch::ScalarType comm_dtype_option(SectionReader& r, const char* key);

}  // namespace desync
