#include "desync/core/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include "desync/core/error.h"

namespace desync {
namespace {

std::string location(const toml::node& node, const std::string& file) {
  // Nodes copied in by --set carry no source position (toml++ does not copy it).
  const auto& src = node.source();
  if (src.begin.line == 0) return "--set";
  return fmt::format("{}:{}", file, src.begin.line);
}

std::string type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    default:
      return "a date or time";
  }
}

// True for a value that an override (--set) put into the document.
bool from_set(const toml::node& node) { return node.source().begin.line == 0; }

std::vector<SectionReader::Entry> entries_of(const toml::table* table, const std::string& section) {
  std::vector<SectionReader::Entry> out;
  if (!table) return out;
  for (const auto& [k, node] : *table) out.push_back({std::string(k.str()), &node, section});
  return out;
}

const toml::table* sub_table(const toml::table* table, const std::string& name) {
  const toml::node* node = table ? table->get(name) : nullptr;
  return node ? node->as_table() : nullptr;
}

// The value that sets an algorithm's accumulation: its table's, unless [algorithm]'s comes from
// --set and the table's from the file. Null when neither is set.
const toml::node* accumulation_node(const toml::table* section, const toml::table* own) {
  const toml::node* common = section ? section->get("accumulation") : nullptr;
  const toml::node* mine = own ? own->get("accumulation") : nullptr;
  if (mine && common && from_set(*common) && !from_set(*mine)) return common;
  return mine ? mine : common;
}

}  // namespace

SectionReader::SectionReader(const toml::table* table, std::string section, std::string file)
    : entries_(entries_of(table, section)), section_(std::move(section)), file_(std::move(file)) {}

SectionReader::SectionReader(std::vector<Entry> entries, std::string section, std::string file)
    : entries_(std::move(entries)), section_(std::move(section)), file_(std::move(file)) {}

const SectionReader::Entry* SectionReader::entry(const char* key) const {
  for (const Entry& e : entries_)
    if (e.key == key) return &e;
  return nullptr;
}

const toml::node* SectionReader::find(const char* key) {
  known_.emplace_back(key);
  const Entry* e = entry(key);
  return e ? e->node : nullptr;
}

std::string SectionReader::where(const char* key) const {
  const Entry* e = entry(key);
  return e ? location(*e->node, file_) : file_;
}

void SectionReader::fail(const char* key, const std::string& what) const {
  const Entry* e = entry(key);
  throw ConfigError(fmt::format("{}: {}.{} {}", where(key), e ? e->section : section_, key, what));
}

bool SectionReader::get(const char* key, bool fallback) {
  const toml::node* node = find(key);
  if (!node) return fallback;
  if (auto v = node->value<bool>(); v && node->is_boolean()) return *v;
  fail(key, fmt::format("must be true or false, not {}", type_name(*node)));
}

int64_t SectionReader::get(const char* key, int64_t fallback, int64_t min, int64_t max) {
  const toml::node* node = find(key);
  if (!node) return fallback;
  if (!node->is_integer()) fail(key, fmt::format("must be an integer, not {}", type_name(*node)));
  int64_t v = *node->value<int64_t>();
  if (v < min || v > max) {
    if (max == std::numeric_limits<int64_t>::max())
      fail(key, fmt::format("= {} is out of range: must be >= {}", v, min));
    fail(key, fmt::format("= {} is out of range: must be in [{}, {}]", v, min, max));
  }
  return v;
}

double SectionReader::get(const char* key, double fallback, double min, double max,
                          bool exclusive_min) {
  const toml::node* node = find(key);
  if (!node) return fallback;
  if (!node->is_number()) fail(key, fmt::format("must be a number, not {}", type_name(*node)));
  double v = *node->value<double>();
  bool low = exclusive_min ? v <= min : v < min;
  if (low || v > max || v != v) {
    std::string lo = fmt::format("{} {}", exclusive_min ? ">" : ">=", min);
    if (max == std::numeric_limits<double>::max())
      fail(key, fmt::format("= {} is out of range: must be {}", v, lo));
    fail(key, fmt::format("= {} is out of range: must be {} and <= {}", v, lo, max));
  }
  return v;
}

std::string SectionReader::get(const char* key, const std::string& fallback) {
  const toml::node* node = find(key);
  if (!node) return fallback;
  if (!node->is_string()) fail(key, fmt::format("must be a string, not {}", type_name(*node)));
  return *node->value<std::string>();
}

std::string SectionReader::get_choice(const char* key, const std::string& fallback,
                                      const std::vector<std::string>& choices) {
  std::string v = get(key, fallback);
  if (std::find(choices.begin(), choices.end(), v) == choices.end())
    fail(key, fmt::format("= \"{}\" is not one of: {}", v, fmt::join(choices, ", ")));
  return v;
}

std::vector<int64_t> SectionReader::get(const char* key, const std::vector<int64_t>& fallback,
                                        int64_t min) {
  const toml::node* node = find(key);
  if (!node) return fallback;
  const toml::array* arr = node->as_array();
  if (!arr) fail(key, fmt::format("must be an array of integers, not {}", type_name(*node)));
  std::vector<int64_t> out;
  for (const toml::node& e : *arr) {
    if (!e.is_integer()) fail(key, "must be an array of integers");
    int64_t v = *e.value<int64_t>();
    if (v < min) fail(key, fmt::format("has {}: every entry must be >= {}", v, min));
    out.push_back(v);
  }
  return out;
}

std::vector<double> SectionReader::get(const char* key, const std::vector<double>& fallback,
                                       double min, double max) {
  const toml::node* node = find(key);
  if (!node) return fallback;
  const toml::array* arr = node->as_array();
  if (!arr) fail(key, fmt::format("must be an array of numbers, not {}", type_name(*node)));
  std::vector<double> out;
  for (const toml::node& e : *arr) {
    if (!e.is_number()) fail(key, "must be an array of numbers");
    double v = *e.value<double>();
    if (v < min || v > max)
      fail(key, fmt::format("has {}: entries must be in [{}, {}]", v, min, max));
    out.push_back(v);
  }
  return out;
}

void SectionReader::finish() const {
  if (sink_) *sink_ = known_;
  for (const Entry& e : entries_) {
    if (std::find(known_.begin(), known_.end(), e.key) != known_.end()) continue;
    throw ConfigError(fmt::format("{}: unknown key {}.{}; valid keys: {}", location(*e.node, file_),
                                  e.section, e.key, fmt::join(known_, ", ")));
  }
}

const toml::table* AlgorithmConfig::table() const { return sub_table(section(), name); }

std::vector<std::string> AlgorithmConfig::table_names() const {
  std::vector<std::string> out;
  if (const toml::table* s = section())
    for (const auto& [k, node] : *s)
      if (node.is_table()) out.emplace_back(k.str());
  return out;
}

AlgorithmConfig AlgorithmConfig::for_table(const std::string& other) const {
  AlgorithmConfig c = *this;
  c.name = other;
  c.selected = false;
  const toml::node* n = accumulation_node(section(), sub_table(section(), other));
  c.accumulation = n && n->is_integer() ? *n->value<int64_t>() : 1;  // range: read_sections
  return c;
}

SectionReader algorithm_reader(const AlgorithmConfig& cfg) {
  const std::string own = "algorithm." + cfg.name;
  std::vector<SectionReader::Entry> entries = entries_of(cfg.table(), own);
  const toml::table* section = cfg.section();
  if (cfg.selected && section) {
    for (const auto& [k, node] : *section) {
      std::string key(k.str());
      if (key == "name" || key == "accumulation" || node.is_table()) continue;
      auto same = std::find_if(entries.begin(), entries.end(),
                               [&](const SectionReader::Entry& e) { return e.key == key; });
      if (same == entries.end()) {
        entries.push_back({key, &node, "algorithm"});
        continue;
      }
      const bool flat_set = from_set(node), own_set = from_set(*same->node);
      if (flat_set && !own_set) *same = {key, &node, "algorithm"};  // --set beats the file
      if (flat_set != own_set) continue;
      throw ConfigError(fmt::format(
          "{}: algorithm.{} is also set in [{}] ({}); set it in one place, preferably [{}]",
          location(node, cfg.file), key, own, location(*same->node, cfg.file), own));
    }
  }
  return SectionReader(std::move(entries), own, cfg.file);
}

namespace {

// Debian's toml++ 3.3.0 reaches __builtin_unreachable() (undefined behaviour) whenever it tests a
// non-ASCII character such as U+00A1..U+0499 for whitespace, which it does in many places: in a
// bare key, after a backslash in a multi-line string, looking ahead past a malformed value
// (found by fuzz/config_fuzz.cpp). So toml++ is given ASCII text only. A non-ASCII character in
// a string becomes a \u escape, literal strings becoming basic strings with their backslashes and
// quotes escaped; in a comment it becomes '?'; outside both it is refused (TOML allows none
// there). Lines and values stay as they were.
struct AsciiToml {
  std::string text;
  int bad_line = 0;  // > 0: the line of what is refused, and why
  std::string why;
};

// The code point of the UTF-8 sequence at in[i], advancing i to its last byte; -1 if invalid.
int64_t decode_utf8(std::string_view in, size_t& i) {
  const auto b = static_cast<unsigned char>(in[i]);
  const int n = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : b >= 0xC0 ? 1 : -1;
  if (n < 0 || b > 0xF4 || i + n >= in.size()) return -1;
  int64_t cp = b & (0x3F >> n);
  for (int k = 1; k <= n; ++k) {
    const auto c = static_cast<unsigned char>(in[i + k]);
    if ((c & 0xC0) != 0x80) return -1;
    cp = cp << 6 | (c & 0x3F);
  }
  if (cp < (n == 1 ? 0x80 : n == 2 ? 0x800 : 0x10000)) return -1;  // overlong
  i += n;
  return cp;
}

AsciiToml ascii_toml(std::string_view in) {
  enum { kCode, kComment, kBasic, kLiteral, kMultiBasic, kMultiLiteral } state = kCode;
  if (in.starts_with("\xEF\xBB\xBF")) in.remove_prefix(3);  // a byte-order mark
  AsciiToml out;
  int line = 1;
  auto fail = [&](const char* why) {
    out.bad_line = line;
    out.why = why;
    return out;
  };
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    const bool ascii = static_cast<unsigned char>(c) < 0x80;
    auto at = [&](std::string_view s) { return in.substr(i, s.size()) == s; };
    if (c == '\n') {
      ++line;
      if (state != kMultiBasic && state != kMultiLiteral) state = kCode;
      out.text += c;
      continue;
    }
    switch (state) {
      case kCode:
        if (!ascii) return fail("a non-ASCII character outside a string or comment");
        if (at(R"(""")") || at("'''")) {
          state = c == '"' ? kMultiBasic : kMultiLiteral;
          out.text += R"(""")";
          i += 2;
        } else if (c == '"' || c == '\'') {
          state = c == '"' ? kBasic : kLiteral;
          out.text += '"';
        } else {
          if (c == '#') state = kComment;
          out.text += c;
        }
        break;
      case kComment:
        out.text += ascii ? c : '?';
        break;
      default: {
        const bool literal = state == kLiteral || state == kMultiLiteral;
        const bool multi = state == kMultiBasic || state == kMultiLiteral;
        const char quote = literal ? '\'' : '"';
        if (c == quote && (!multi || at(literal ? "'''" : R"(""")"))) {
          if (multi) {  // up to two more quotes before the delimiter belong to the string
            size_t run = 3;
            while (run < 5 && i + run < in.size() && in[i + run] == quote) ++run;
            for (size_t k = 3; k < run; ++k) out.text += quote;
            out.text += R"(""")";
            i += run - 1;
          } else {
            out.text += '"';
          }
          state = kCode;
        } else if (!ascii) {
          const int64_t cp = decode_utf8(in, i);
          if (cp < 0) return fail("invalid UTF-8 in a string");
          out.text += cp <= 0xFFFF ? fmt::format("\\u{:04X}", cp) : fmt::format("\\U{:08X}", cp);
        } else if (literal && (c == '\\' || c == '"')) {
          out.text += '\\';
          out.text += c;
        } else if (!literal && c == '\\' && i + 1 < in.size() &&
                   static_cast<unsigned char>(in[i + 1]) >= 0x80) {
          out.text += "\\?";  // an unknown escape, as the non-ASCII one is
          ++i;
          if (decode_utf8(in, i) < 0) return fail("invalid UTF-8 in a string");
        } else if (!literal && c == '\\' && i + 1 < in.size() && in[i + 1] != '\n') {
          out.text += c;  // an escape, copied whole (a backslash-quote must not end the string)
          out.text += in[++i];
        } else {
          out.text += c;
        }
      }
    }
  }
  return out;
}

const std::vector<std::string> kSections = {
    "run", "data", "model", "optimizer", "schedule", "algorithm", "eval", "checkpoint", "meta"};

const toml::table* section_table(const toml::table& doc, const char* name,
                                 const std::string& file) {
  const toml::node* node = doc.get(name);
  if (!node) return nullptr;
  if (!node->is_table())
    throw ConfigError(fmt::format("{}: [{}] must be a table", location(*node, file), name));
  return node->as_table();
}

// Inserts `value` at the dotted `path` ("optimizer.lr", "algorithm.ddp.bucket_cap_mb") of `doc`,
// creating tables as needed.
void apply_override(toml::table& doc, const std::string& text) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError(fmt::format("--set {}: expected section.key=value", text));
  std::string path = text.substr(0, eq);
  std::string value = text.substr(eq + 1);
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    size_t dot = path.find('.', begin);
    parts.push_back(path.substr(begin, dot == std::string::npos ? std::string::npos : dot - begin));
    if (dot == std::string::npos) break;
    begin = dot + 1;
  }
  bool empty_part = std::any_of(parts.begin(), parts.end(), [](auto& p) { return p.empty(); });
  if (parts.size() < 2 || empty_part)
    throw ConfigError(
        fmt::format("--set {}: the key must be section.key, e.g. optimizer.lr=0.01", text));
  const std::string& section = parts[0];
  if (std::find(kSections.begin(), kSections.end(), section) == kSections.end())
    throw ConfigError(fmt::format("--set {}: unknown section {}; valid sections: {}", text, section,
                                  fmt::join(kSections, ", ")));

  toml::table* table = &doc;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    table->emplace(parts[i], toml::table{});
    toml::table* next = table->get(parts[i])->as_table();
    if (!next) {
      std::vector<std::string> prefix(parts.begin(), parts.begin() + static_cast<long>(i) + 1);
      throw ConfigError(fmt::format("--set {}: {} is not a table", text, fmt::join(prefix, ".")));
    }
    table = next;
  }
  const std::string& key = parts.back();
  const AsciiToml ascii = ascii_toml("v = " + value);
  if (ascii.bad_line > 0) {  // not TOML: a bare word, taken as a string
    table->insert_or_assign(key, value);
    return;
  }
  try {
    toml::table parsed = toml::parse(ascii.text, std::string_view("--set"));
    table->insert_or_assign(key, *parsed.get("v"));
  } catch (const toml::parse_error&) {
    // A bare word (adamw, cosine) is taken as a string.
    table->insert_or_assign(key, value);
  }
}

const std::vector<std::string> kDatasets = {"fashion-mnist", "mnist", "cifar10",  "text",
                                            "gcide",         "words", "synthetic"};
const std::vector<std::string> kBackends = {"gloo", "nccl"};
const std::vector<std::string> kModels = {"mlp",      "cnn",    "resnet18", "revnet18",
                                          "revnet34", "revnet", "gpt",      "sgns"};

// [run]; returns where run.tokens is set (checked against data.dataset).
std::string read_run(Config& c, const toml::table& doc, const std::string& f) {
  SectionReader r(section_table(doc, "run", f), "run", f);
  RunConfig& v = c.run;
  v.name = r.get("name", v.name);
  v.seed = r.get("seed", v.seed, 0);
  v.steps = r.get("steps", v.steps, 0);
  v.epochs = r.get("epochs", v.epochs, 0.0, 1e6, true);
  v.samples = r.get("samples", v.samples, 0);
  v.tokens = r.get("tokens", v.tokens, 0);
  v.out = r.get("out", v.out);
  v.log_every = r.get("log_every", v.log_every, 1);
  v.threads = r.get("threads", v.threads, 0, 1024);
  v.workers = r.get("workers", v.workers, 1, 4096);
  v.comm_timeout = r.get("comm_timeout", v.comm_timeout, 0.0, 1e6, true);
  v.backend = r.get_choice("backend", v.backend, kBackends);
  v.worker_speed = r.get("worker_speed", v.worker_speed, 1e-3, 1.0);
  v.comm_latency_ms = r.get("comm_latency_ms", v.comm_latency_ms, 0.0, 1e6);
  r.finish();
  if (v.name.empty() || v.name.find('/') != std::string::npos)
    throw ConfigError(
        fmt::format("{}: run.name must be a non-empty name without '/'", r.where("name")));
  if (v.samples > 0 && v.tokens > 0)
    throw ConfigError(
        fmt::format("{}: run.samples and run.tokens are both set; the data budget is one of them",
                    r.where("tokens")));
  return r.where("tokens");
}

void read_data(Config& c, const toml::table& doc, const std::string& f,
               const std::string& tokens_where) {
  SectionReader r(section_table(doc, "data", f), "data", f);
  DataConfig& v = c.data;
  v.dataset = r.get_choice("dataset", v.dataset, kDatasets);
  v.path = r.get("path", v.path);
  v.batch_size = r.get("batch_size", v.batch_size, 1, 1 << 20);
  v.eval_batch_size = r.get("eval_batch_size", v.eval_batch_size, 1, 1 << 20);
  v.normalize = r.get("normalize", v.normalize);
  v.augment = r.get("augment", v.augment);
  v.train_limit = r.get("train_limit", v.train_limit, 0);
  v.test_limit = r.get("test_limit", v.test_limit, 0);
  v.seq_len = r.get("seq_len", v.seq_len, 1, 1 << 20);
  // A word corpus may hold nothing out (every sentence trains; the evaluation is then empty).
  v.text_test_fraction = r.get("text_test_fraction", v.text_test_fraction, 0.0, 0.9,
                               /*exclusive_min=*/v.dataset != "words");
  v.split_seed = r.get("split_seed", v.split_seed, 0);
  v.tokenizer = r.get_choice("tokenizer", v.tokenizer, {"bpe", "unigram", "bytes"});
  v.vocab_size = r.get("vocab_size", v.vocab_size, 260, 65536);
  v.cache_dir = r.get("cache_dir", v.cache_dir);
  v.synthetic_train =
      r.get("synthetic_train", v.synthetic_train, 1, std::numeric_limits<int64_t>::max());
  v.synthetic_test =
      r.get("synthetic_test", v.synthetic_test, 1, std::numeric_limits<int64_t>::max());
  v.synthetic_classes = r.get("synthetic_classes", v.synthetic_classes, 2, 1 << 20);
  v.synthetic_shape = r.get("synthetic_shape", v.synthetic_shape, 1);
  v.classes = r.get("classes", v.classes, 0);
  v.invert = r.get("invert", v.invert);
  r.finish();
  if (v.synthetic_shape.empty() || v.synthetic_shape.size() > 3)
    throw ConfigError(fmt::format("{}: data.synthetic_shape must have 1 to 3 entries",
                                  r.where("synthetic_shape")));
  if (c.run.tokens > 0 && v.dataset != "text" && v.dataset != "gcide")
    throw ConfigError(fmt::format(
        "{}: run.tokens needs a sequence dataset (data.dataset = \"text\" or \"gcide\"), not "
        "\"{}\"; "
        "use run.samples or run.epochs",
        tokens_where, v.dataset));
}

void read_model(Config& c, const toml::table& doc, const std::string& f) {
  SectionReader r(section_table(doc, "model", f), "model", f);
  ModelConfig& v = c.model;
  v.name = r.get_choice("name", v.name, kModels);
  v.hidden = r.get("hidden", v.hidden, 1);
  v.channels = r.get("channels", v.channels, 1);
  v.width = r.get("width", v.width, 1, 4096);
  v.blocks = r.get("blocks", v.blocks, 1);
  v.batch_norm = r.get("batch_norm", v.batch_norm);
  v.dtype = r.get_choice("dtype", v.dtype, {"float32", "float64"});
  v.n_layer = r.get("n_layer", v.n_layer, 1, 1024);
  v.n_head = r.get("n_head", v.n_head, 1, 1024);
  v.d_model = r.get("d_model", v.d_model, 1, 1 << 16);
  v.d_ff = r.get("d_ff", v.d_ff, 0, 1 << 18);
  v.seq_len = r.get("seq_len", v.seq_len, 0, 1 << 20);
  v.norm = r.get_choice("norm", v.norm, {"layernorm", "rmsnorm"});
  v.position = r.get_choice("position", v.position, {"learned", "rope"});
  v.activation = r.get_choice("activation", v.activation, {"gelu", "swiglu"});
  v.tie_embeddings = r.get("tie_embeddings", v.tie_embeddings);
  v.init_from = r.get("init_from", v.init_from);
  v.low_rank = r.get("low_rank", v.low_rank, 0.0, 1e9);
  v.parametrization = r.get_choice("parametrization", v.parametrization, {"sp", "mup"});
  v.mup_input_mult = r.get("mup_input_mult", v.mup_input_mult, 0.0, 1e9, true);
  v.mup_output_mult = r.get("mup_output_mult", v.mup_output_mult, 0.0, 1e9, true);
  v.mup_hidden_lr_mult = r.get("mup_hidden_lr_mult", v.mup_hidden_lr_mult, 0.0, 1e9, true);
  v.mup_output_init = r.get_choice("mup_output_init", v.mup_output_init, {"zero", "normal"});
  r.finish();
  if (v.low_rank > 1.0 && v.low_rank != static_cast<double>(static_cast<int64_t>(v.low_rank)))
    throw ConfigError(
        fmt::format("{}: model.low_rank ({}) must be a ratio in (0, 1) or a whole rank >= 1",
                    r.where("low_rank"), v.low_rank));
  if ((v.low_rank > 0 || v.parametrization != "sp") && v.name != "mlp" && v.name != "gpt")
    throw ConfigError(fmt::format(
        "{}: model.low_rank and model.parametrization apply to the mlp and gpt models, not {}",
        r.where(v.low_rank > 0 ? "low_rank" : "parametrization"), v.name));
  if (v.name == "gpt" && v.d_model % v.n_head != 0)
    throw ConfigError(fmt::format("{}: model.d_model ({}) must be a multiple of model.n_head ({})",
                                  r.where("d_model"), v.d_model, v.n_head));
  if (v.name == "gpt" && v.position == "rope" && (v.d_model / v.n_head) % 2 != 0)
    throw ConfigError(fmt::format(
        "{}: model.position = \"rope\" needs an even head width (d_model / n_head = {})",
        r.where("position"), v.d_model / v.n_head));
  if (v.name == "cnn" && v.channels.empty())
    throw ConfigError(
        fmt::format("{}: model.channels needs at least one entry", r.where("channels")));
  if (v.name == "revnet" && (v.blocks.empty() || v.blocks.size() > 8))
    throw ConfigError(
        fmt::format("{}: model.blocks needs 1 to 8 groups (blocks per group)", r.where("blocks")));
}

void read_optimizer(Config& c, const toml::table& doc, const std::string& f) {
  SectionReader r(section_table(doc, "optimizer", f), "optimizer", f);
  OptimizerConfig& v = c.optimizer;
  v.name = r.get_choice("name", v.name, {"sgd", "adamw", "spectron", "mulo"});
  v.lr = r.get("lr", v.lr, 0.0, 1e6, true);
  v.momentum = r.get("momentum", v.momentum, 0.0, 1.0);
  v.nesterov = r.get("nesterov", v.nesterov);
  v.dampening = r.get("dampening", v.dampening, 0.0, 1.0);
  v.weight_decay = r.get("weight_decay", v.weight_decay, 0.0);
  v.beta1 = r.get("beta1", v.beta1, 0.0, 1.0);
  v.beta2 = r.get("beta2", v.beta2, 0.0, 1.0);
  v.eps = r.get("eps", v.eps, 0.0, 1.0, true);
  v.no_decay_norm_bias = r.get("no_decay_norm_bias", v.no_decay_norm_bias);
  v.grad_clip = r.get("grad_clip", v.grad_clip, 0.0);
  v.spectron_beta = r.get("spectron_beta", v.spectron_beta, 0.0, 1.0);
  v.spectron_ns_steps = r.get("spectron_ns_steps", v.spectron_ns_steps, 0, 100);
  v.spectron_power_steps = r.get("spectron_power_steps", v.spectron_power_steps, 1, 100);
  v.spectron_exact = r.get("spectron_exact", v.spectron_exact);
  v.lopt_weights = r.get("lopt_weights", v.lopt_weights);
  v.lopt_seed = r.get("lopt_seed", v.lopt_seed);
  v.lopt_alpha1 = r.get("lopt_alpha1", v.lopt_alpha1, 0.0, 1e3);
  v.lopt_alpha2 = r.get("lopt_alpha2", v.lopt_alpha2, 0.0, 1e3);
  v.lopt_clip = r.get("lopt_clip", v.lopt_clip);
  r.finish();
  if (v.nesterov && (v.momentum <= 0 || v.dampening != 0))
    throw ConfigError(fmt::format("{}: optimizer.nesterov needs momentum > 0 and dampening = 0",
                                  r.where("nesterov")));
}

void read_schedule(Config& c, const toml::table& doc, const std::string& f) {
  SectionReader r(section_table(doc, "schedule", f), "schedule", f);
  ScheduleConfig& v = c.schedule;
  v.name = r.get_choice("name", v.name, {"constant", "step", "cosine"});
  v.warmup_steps = r.get("warmup_steps", v.warmup_steps, 0);
  v.step_size = r.get("step_size", v.step_size, 1);
  v.gamma = r.get("gamma", v.gamma, 0.0, 1.0);
  v.min_lr = r.get("min_lr", v.min_lr, 0.0);
  r.finish();
}

// Algorithm names become table names ([algorithm.<name>]), so they are TOML bare keys: the
// resolved config must parse again (toml++ writes some other keys unquoted).
bool is_bare_key(const std::string& k) {
  return !k.empty() && std::all_of(k.begin(), k.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-';
  });
}

void read_algorithm(Config& c, const toml::table& doc, const std::string& f) {
  const toml::table* t = section_table(doc, "algorithm", f);
  SectionReader r(t, "algorithm", f);
  AlgorithmConfig& v = c.algorithm;
  v.name = r.get("name", v.name);
  if (!is_bare_key(v.name))
    throw ConfigError(fmt::format("{}: algorithm.name = \"{}\": a name is letters, digits, '_' "
                                  "and '-' (`desync list` shows them)",
                                  r.where("name"), v.name));
  const int64_t common = r.get("accumulation", v.accumulation, 1, 1 << 20);
  v.doc = c.doc;
  v.file = f;
  for (const std::string& other : v.table_names()) {
    const toml::table* own = sub_table(t, other);
    SectionReader tr(own, "algorithm." + other, f);
    if (!is_bare_key(other))
      throw ConfigError(fmt::format("{}: [algorithm.\"{}\"]: an algorithm's table is named by "
                                    "letters, digits, '_' and '-'",
                                    f, other));
    tr.get("accumulation", common, 1, 1 << 20);
    if (own->get("name"))
      throw ConfigError(fmt::format(
          "{}: algorithm.{}.name: an algorithm's table takes no name; algorithm.name selects "
          "the algorithm",
          tr.where("name"), other));
  }
  const toml::node* acc = accumulation_node(t, v.table());
  v.accumulation = acc ? *acc->value<int64_t>() : common;
  algorithm_reader(v);  // rejects an own key set flat and in the table by the same source
  // The algorithm's own keys, and every table's, are checked by make_algorithm (registry.h).
}

void read_eval(Config& c, const toml::table& doc, const std::string& f) {
  SectionReader r(section_table(doc, "eval", f), "eval", f);
  c.eval.every = r.get("every", c.eval.every, 0);
  c.eval.limit = r.get("limit", c.eval.limit, 0);
  c.eval.final_full = r.get("final_full", c.eval.final_full);
  c.eval.at_start = r.get("at_start", c.eval.at_start);
  r.finish();
}

void read_meta(Config& c, const toml::table& doc, const std::string& f) {
  SectionReader r(section_table(doc, "meta", f), "meta", f);
  MetaConfig& v = c.meta;
  v.task = r.get_choice("task", v.task, {"mlp", "quadratic"});
  v.outer_steps = r.get("outer_steps", v.outer_steps, 1);
  v.tasks = r.get("tasks", v.tasks, 1, 1 << 16);
  v.unroll = r.get("unroll", v.unroll, 1, 1 << 20);
  v.horizon_min = r.get("horizon_min", v.horizon_min, 1);
  v.horizon_max = r.get("horizon_max", v.horizon_max, 1);
  v.widths = r.get("widths", v.widths, 1);
  v.sigma = r.get("sigma", v.sigma, 0.0, 1e3, true);
  v.persistent = r.get("persistent", v.persistent);
  v.lr_start = r.get("lr_start", v.lr_start, 0.0);
  v.lr_peak = r.get("lr_peak", v.lr_peak, 0.0);
  v.lr_final = r.get("lr_final", v.lr_final, 0.0);
  v.warmup_steps = r.get("warmup_steps", v.warmup_steps, 0);
  v.grad_clip = r.get("grad_clip", v.grad_clip, 0.0);
  v.checkpoint_every = r.get("checkpoint_every", v.checkpoint_every, 0);
  r.finish();
  if (v.horizon_max < v.horizon_min)
    throw ConfigError(fmt::format("{}: meta.horizon_max ({}) is below meta.horizon_min ({})",
                                  r.where("horizon_max"), v.horizon_max, v.horizon_min));
  if (v.widths.empty())
    throw ConfigError(fmt::format("{}: meta.widths needs at least one width", r.where("widths")));
}

void read_checkpoint(Config& c, const toml::table& doc, const std::string& f) {
  SectionReader r(section_table(doc, "checkpoint", f), "checkpoint", f);
  c.checkpoint.every = r.get("every", c.checkpoint.every, 0);
  c.checkpoint.keep = r.get("keep", c.checkpoint.keep, 1, 1000);
  c.checkpoint.enabled = r.get("enabled", c.checkpoint.enabled);
  r.finish();
}

void read_sections(Config& c) {
  const toml::table& doc = *c.doc;
  const std::string& f = c.source;
  for (const auto& [k, node] : doc) {
    std::string name(k.str());
    if (std::find(kSections.begin(), kSections.end(), name) == kSections.end())
      throw ConfigError(fmt::format("{}: unknown section [{}]; valid sections: {}",
                                    location(node, f), name, fmt::join(kSections, ", ")));
  }
  const std::string tokens_where = read_run(c, doc, f);
  read_data(c, doc, f, tokens_where);
  read_model(c, doc, f);
  read_optimizer(c, doc, f);
  read_schedule(c, doc, f);
  read_algorithm(c, doc, f);
  read_eval(c, doc, f);
  read_checkpoint(c, doc, f);
  read_meta(c, doc, f);
}

template <class T>
toml::array to_array(const std::vector<T>& v) {
  toml::array a;
  for (const T& x : v) a.push_back(x);
  return a;
}

}  // namespace

std::string Config::resolved_toml() const {
  toml::table doc;
  doc.insert("run", toml::table{{"name", run.name},
                                {"seed", run.seed},
                                {"steps", run.steps},
                                {"epochs", run.epochs},
                                {"samples", run.samples},
                                {"tokens", run.tokens},
                                {"out", run.out},
                                {"log_every", run.log_every},
                                {"threads", run.threads},
                                {"workers", run.workers},
                                {"comm_timeout", run.comm_timeout},
                                {"backend", run.backend},
                                {"worker_speed", to_array(run.worker_speed)},
                                {"comm_latency_ms", run.comm_latency_ms}});
  doc.insert("data", toml::table{{"dataset", data.dataset},
                                 {"path", data.path},
                                 {"batch_size", data.batch_size},
                                 {"eval_batch_size", data.eval_batch_size},
                                 {"normalize", data.normalize},
                                 {"augment", data.augment},
                                 {"train_limit", data.train_limit},
                                 {"test_limit", data.test_limit},
                                 {"seq_len", data.seq_len},
                                 {"text_test_fraction", data.text_test_fraction},
                                 {"split_seed", data.split_seed},
                                 {"tokenizer", data.tokenizer},
                                 {"vocab_size", data.vocab_size},
                                 {"cache_dir", data.cache_dir},
                                 {"synthetic_train", data.synthetic_train},
                                 {"synthetic_test", data.synthetic_test},
                                 {"synthetic_classes", data.synthetic_classes},
                                 {"synthetic_shape", to_array(data.synthetic_shape)},
                                 {"classes", to_array(data.classes)},
                                 {"invert", data.invert}});
  doc.insert("model", toml::table{{"name", model.name},
                                  {"hidden", to_array(model.hidden)},
                                  {"channels", to_array(model.channels)},
                                  {"width", model.width},
                                  {"blocks", to_array(model.blocks)},
                                  {"batch_norm", model.batch_norm},
                                  {"dtype", model.dtype},
                                  {"n_layer", model.n_layer},
                                  {"n_head", model.n_head},
                                  {"d_model", model.d_model},
                                  {"d_ff", model.d_ff},
                                  {"seq_len", model.seq_len},
                                  {"norm", model.norm},
                                  {"position", model.position},
                                  {"activation", model.activation},
                                  {"tie_embeddings", model.tie_embeddings},
                                  {"init_from", model.init_from},
                                  {"low_rank", model.low_rank},
                                  {"parametrization", model.parametrization},
                                  {"mup_input_mult", model.mup_input_mult},
                                  {"mup_output_mult", model.mup_output_mult},
                                  {"mup_hidden_lr_mult", model.mup_hidden_lr_mult},
                                  {"mup_output_init", model.mup_output_init}});
  doc.insert("optimizer", toml::table{{"name", optimizer.name},
                                      {"lr", optimizer.lr},
                                      {"momentum", optimizer.momentum},
                                      {"nesterov", optimizer.nesterov},
                                      {"dampening", optimizer.dampening},
                                      {"weight_decay", optimizer.weight_decay},
                                      {"beta1", optimizer.beta1},
                                      {"beta2", optimizer.beta2},
                                      {"eps", optimizer.eps},
                                      {"no_decay_norm_bias", optimizer.no_decay_norm_bias},
                                      {"grad_clip", optimizer.grad_clip},
                                      {"spectron_beta", optimizer.spectron_beta},
                                      {"spectron_ns_steps", optimizer.spectron_ns_steps},
                                      {"spectron_power_steps", optimizer.spectron_power_steps},
                                      {"spectron_exact", optimizer.spectron_exact},
                                      {"lopt_weights", optimizer.lopt_weights},
                                      {"lopt_seed", optimizer.lopt_seed},
                                      {"lopt_alpha1", optimizer.lopt_alpha1},
                                      {"lopt_alpha2", optimizer.lopt_alpha2},
                                      {"lopt_clip", optimizer.lopt_clip}});
  doc.insert("schedule", toml::table{{"name", schedule.name},
                                     {"warmup_steps", schedule.warmup_steps},
                                     {"step_size", schedule.step_size},
                                     {"gamma", schedule.gamma},
                                     {"min_lr", schedule.min_lr}});
  // [algorithm]: name, the common accumulation, and one table per algorithm. The selected
  // algorithm's options (flat keys and --set included) all go into its table; every table holds
  // `accumulation` where its algorithm's differs from the common one. So the file reproduces the
  // run, and switching algorithm.name on it gives what switching gave on the original.
  const toml::table* section = algorithm.section();
  const toml::node* common_node = section ? section->get("accumulation") : nullptr;
  const int64_t common = common_node ? common_node->value_or(int64_t{1}) : 1;
  toml::table alg{{"name", algorithm.name}, {"accumulation", common}};
  auto put = [&](const std::string& name, toml::table t, int64_t accumulation) {
    if (accumulation == common)
      t.erase("accumulation");
    else
      t.insert_or_assign("accumulation", accumulation);
    if (!t.empty()) alg.insert_or_assign(name, std::move(t));
  };
  toml::table own;
  const SectionReader options = algorithm_reader(algorithm);
  for (const SectionReader::Entry& e : options.entries()) own.insert_or_assign(e.key, *e.node);
  put(algorithm.name, std::move(own), algorithm.accumulation);
  for (const std::string& other : algorithm.table_names())
    if (other != algorithm.name)
      put(other, *section->get(other)->as_table(), algorithm.for_table(other).accumulation);
  doc.insert("algorithm", std::move(alg));
  doc.insert("eval", toml::table{{"every", eval.every},
                                 {"limit", eval.limit},
                                 {"final_full", eval.final_full},
                                 {"at_start", eval.at_start}});
  doc.insert("checkpoint", toml::table{{"every", checkpoint.every},
                                       {"keep", checkpoint.keep},
                                       {"enabled", checkpoint.enabled}});
  doc.insert("meta", toml::table{{"task", meta.task},
                                 {"outer_steps", meta.outer_steps},
                                 {"tasks", meta.tasks},
                                 {"unroll", meta.unroll},
                                 {"horizon_min", meta.horizon_min},
                                 {"horizon_max", meta.horizon_max},
                                 {"widths", to_array(meta.widths)},
                                 {"sigma", meta.sigma},
                                 {"persistent", meta.persistent},
                                 {"lr_start", meta.lr_start},
                                 {"lr_peak", meta.lr_peak},
                                 {"lr_final", meta.lr_final},
                                 {"warmup_steps", meta.warmup_steps},
                                 {"grad_clip", meta.grad_clip},
                                 {"checkpoint_every", meta.checkpoint_every}});
  std::ostringstream out;
  // Basic strings only: toml++ 3.3.0 writes a string holding ''' and a line break as a
  // multi-line literal string, which TOML cannot express (found by fuzz/config_fuzz.cpp).
  constexpr toml::format_flags kFlags =
      toml::toml_formatter::default_flags &
      ~(toml::format_flags::allow_literal_strings | toml::format_flags::allow_multi_line_strings);
  out << toml::toml_formatter{doc, kFlags} << "\n";
  return out.str();
}

Config parse_config(const std::string& toml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides) {
  Config c;
  c.source = source_name;
  c.doc = std::make_shared<toml::table>();
  const AsciiToml ascii = ascii_toml(toml_text);
  if (ascii.bad_line > 0) {
    throw ConfigError(
        fmt::format("{}:{}: {}{}", source_name, ascii.bad_line, ascii.why,
                    ascii.why.starts_with("a non-ASCII") ? " (keys are ASCII; quote text)" : ""));
  }
  try {
    *c.doc = toml::parse(ascii.text, std::string_view(source_name));
  } catch (const toml::parse_error& e) {
    throw ConfigError(
        fmt::format("{}:{}: {}", source_name, e.source().begin.line, e.description()));
  }
  for (const std::string& o : overrides) apply_override(*c.doc, o);
  read_sections(c);
  return c;
}

void validate_for_world(const Config& cfg, int64_t world) {
  if (!cfg.run.worker_speed.empty() && static_cast<int64_t>(cfg.run.worker_speed.size()) != world)
    throw ConfigError(fmt::format("run.worker_speed has {} entries; the job has {} workers",
                                  cfg.run.worker_speed.size(), world));
#ifndef DESYNC_CUDA
  // Refused here, before any worker starts; one worker never communicates.
  if (world > 1 && cfg.run.backend == "nccl")
    throw ConfigError(
        "run.backend = \"nccl\" needs a build with -DDESYNC_CUDA=ON (this desync was built "
        "without CUDA); use run.backend = \"gloo\"");
#endif
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(fmt::format("{}: cannot open the config file", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path, overrides);
}

}  // namespace desync
