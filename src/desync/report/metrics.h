// metrics.jsonl: one JSON object per line, one line per logged step or evaluation.
//
// Lines are flushed as they are written, so a crashed run keeps what it logged. On resume the
// file is first cut back to the checkpoint's step (atomically), so a resumed run's file reads
// exactly like an uninterrupted one's.
#pragma once

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace desync {

class MetricsWriter {
 public:
  // Opens `path`; with `resume_step` >= 0 keeps only records with step <= resume_step,
  // otherwise starts an empty file.
  MetricsWriter(const std::string& path, int64_t resume_step);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  void write(const nlohmann::json& record);

 private:
  std::FILE* file_ = nullptr;
};

// Reads every record of a metrics.jsonl file (for tests, compare and reports).
std::vector<nlohmann::json> read_metrics(const std::string& path);

}  // namespace desync
