// The board of per-step gauges (gauges.h).
#include "desync/core/gauges.h"

#include <algorithm>

namespace desync {

Gauges& Gauges::instance() {
  static Gauges gauges;
  return gauges;
}

void Gauges::set(const std::string& name, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find_if(values_.begin(), values_.end(),
                         [&](const auto& entry) { return entry.first == name; });
  if (it != values_.end())
    it->second = value;
  else
    values_.emplace_back(name, value);
}

std::vector<std::pair<std::string, double>> Gauges::take() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, double>> out;
  out.swap(values_);
  return out;
}

}  // namespace desync
