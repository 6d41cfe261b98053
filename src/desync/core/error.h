// Errors that desync reports to its users.
//
// Every error a user can cause carries a one-line, actionable message. The CLI prints
// `desync: <message>` and exits with exit_code(): 2 for usage and configuration mistakes, 1 for
// failures at run time (bad data files, corrupt checkpoints, a peer that died). Code below the
// CLI throws these; it never prints and never exits.
#pragma once

#include <stdexcept>
#include <string>

namespace desync {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
  // Process exit status the CLI uses for this error.
  virtual int exit_code() const { return 1; }
};

// The command line is wrong (unknown flag, missing argument).
class UsageError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return 2; }
};

// A configuration file or override is wrong: unknown key, wrong type, value out of range.
class ConfigError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return 2; }
};

// A data file is missing, truncated or not in the expected format.
class DataError : public Error {
 public:
  using Error::Error;
};

// A checkpoint cannot be written, or none that is complete and intact can be read.
class CheckpointError : public Error {
 public:
  using Error::Error;
};

// Another rank failed, timed out, or could not be reached.
class CommError : public Error {
 public:
  using Error::Error;
};

}  // namespace desync
