// PLACEHOLDER: replaced by the GPT implementation before this lands.
#include "desync/models/gpt.h"

#include "desync/core/error.h"
#include "desync/models/builders.h"

namespace desync::models {
void build_gpt(StagedModelImpl&, const ModelConfig&, const ModelInput&) {
  throw ConfigError("gpt: not built yet");
}
}  // namespace desync::models
