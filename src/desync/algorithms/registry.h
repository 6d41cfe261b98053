// The algorithms desync knows, by name.
//
// Each entry reads its options with an algorithm_options() reader, so unknown or invalid keys
// fail like any other config error. Options live in the algorithm's table [algorithm.<name>]
// (or flat in [algorithm] for the selected algorithm; see core/config.h for the precedence).
// make_algorithm() validates every table of the config against its algorithm, selected or not,
// by running that algorithm's factory on it. A factory must therefore read all its keys
// unconditionally before finish(), and construct nothing expensive (setup() does the work).
// `desync list` prints the entries. To add an algorithm: write algorithms/<family>/<name>.cpp
// with a factory function and add one line to the table in registry.cpp.
#pragma once

#include <functional>
#include <memory>
#include <optional>
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

// Builds the algorithm named by cfg.name after validate_algorithms(cfg); throws ConfigError for
// an unknown name or option.
std::unique_ptr<Algorithm> make_algorithm(const AlgorithmConfig& cfg);

// Validates the whole [algorithm] section without building the selected algorithm: every table
// names a registered algorithm and holds only valid options of it; a key of the selected
// algorithm (flat or in its table) that belongs to other algorithms names them and their table
// ("algorithm.bucket_cap_mb is an option of ddp, not of acco; put it under [algorithm.ddp]").
void validate_algorithms(const AlgorithmConfig& cfg);

// The option keys an algorithm reads (name and accumulation excluded); empty for an unknown name.
const std::vector<std::string>& algorithm_keys(const std::string& name);

// A reader of the algorithm's options (its table, plus the flat keys of [algorithm] for the
// selected algorithm) that already knows the common keys (name, accumulation). Call finish()
// after reading the algorithm's own keys.
SectionReader algorithm_options(const AlgorithmConfig& cfg);

// Reads a communication dtype option: "full" (default: the tensor's own precision, nullopt),
// "float32", "bfloat16" or "float16" (sent in that type, summed in the tensor's own).
std::optional<torch::ScalarType> comm_dtype_option(SectionReader& r, const char* key);

}  // namespace desync
