// Helpers shared by the test binaries.
#pragma once

#include <string>
#include <vector>

namespace desync::testing {

// A fresh directory under the system temp dir, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& bytes);

// The "loss" of every {"type": "train"} record in <run_dir>/metrics.jsonl, in order.
std::vector<double> train_losses(const std::string& run_dir);

struct CommandResult {
  int status = -1;     // exit status, or 128 + signal number
  std::string output;  // stdout and stderr together
};
// Runs a shell command line to completion.
CommandResult run_command(const std::string& command_line);

// A child process started with argv, its stdout+stderr going to `log_path`.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& log_path);
  ~Child();  // kills the child if it still runs
  int pid() const { return pid_; }
  void signal(int sig);
  // Waits at most `seconds`; returns the exit status (128 + signal), or -1 on time-out.
  int wait(double seconds);

 private:
  int pid_ = -1;
  bool reaped_ = false;
};
// Dictionary-like paragraphs ("Entry 7, n. the wind over water.") from a seeded generator:
// learnable, and the same on every machine; a corpus for the text datasets.
std::string dictionary_corpus(int paragraphs);

std::string read_file(const std::string& path);

// Paths fixed when the build is configured (tests/paths.cpp).
const std::string& source_dir();     // the repository's root
const std::string& desync_binary();  // the desync executable under test
const std::string& python();         // the Python of the torch wheel's venv (.deps/venv)

}  // namespace desync::testing
