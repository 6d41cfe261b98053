// A file whose bytes a fuzz target replaces on every input: an anonymous memory file
// (memfd_create), opened by path through /proc/self/fd, so the readers under test open it as
// they open any file.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

class FuzzFile {
 public:
  FuzzFile() : fd_(memfd_create("fuzz", 0)) {
    if (fd_ < 0) abort();
  }
  ~FuzzFile() { close(fd_); }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }
  void set(const void* data, size_t size) {
    if (ftruncate(fd_, 0) != 0 || pwrite(fd_, data, size, 0) != static_cast<ssize_t>(size)) {
      abort();
    }
  }

 private:
  int fd_;
};
