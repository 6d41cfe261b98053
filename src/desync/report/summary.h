// The end-of-run summary: summary.json in the run directory and a table on the terminal.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace desync {

// Renders the summary (as written to summary.json) as an aligned table for the terminal.
std::string summary_table(const nlohmann::json& summary);

}  // namespace desync
