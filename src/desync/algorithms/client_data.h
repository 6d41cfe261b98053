// An algorithm whose training data is split into clients (federated learning) says how: each
// client's label histogram goes to summary.json ("clients") and to report.html (one bar per
// client, stacked by class). The Trainer asks with as_client_data().
#pragma once

#include <cstdint>
#include <vector>

#include "desync/algorithms/algorithm.h"

namespace desync {

struct ClientHistogram {
  std::vector<int64_t> ids;                  // client ids, ascending
  std::vector<bool> heldout;                 // per client: a held-out test client
  std::vector<std::vector<int64_t>> counts;  // per client, examples of each class
};

class ClientData {
 public:
  virtual ~ClientData() = default;
  // The same on every rank; valid after setup(). Not collective.
  virtual ClientHistogram client_histogram() const = 0;
};

inline const ClientData* as_client_data(const Algorithm& algorithm) {
  return dynamic_cast<const ClientData*>(&algorithm);
}

}  // namespace desync
