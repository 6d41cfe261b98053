#include "desync/report/metrics.h"

#include <fmt/format.h>

#include <sstream>

#include "desync/core/error.h"
#include "desync/core/fs.h"

namespace desync {

MetricsWriter::MetricsWriter(const std::string& path, int64_t resume_step) {
  if (resume_step >= 0) {
    std::string kept;
    for (const nlohmann::json& r : read_metrics(path))
      if (r.value("step", int64_t{0}) <= resume_step) kept += r.dump() + "\n";
    write_file_atomic(path, kept);
  } else {
    write_file_atomic(path, "");
  }
  file_ = std::fopen(path.c_str(), "a");
  if (!file_) throw Error(fmt::format("cannot open {} for writing", path));
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

void MetricsWriter::write(const nlohmann::json& record) {
  std::string line = record.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error&) {
    return out;
  }
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json r = nlohmann::json::parse(line, nullptr, false);
    if (!r.is_discarded()) out.push_back(std::move(r));  // a torn last line is skipped
  }
  return out;
}

}  // namespace desync
