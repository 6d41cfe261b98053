#include "desync/core/progress.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

namespace desync {
namespace {

std::string clock_text(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "--:--";
  auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{}:{:02d}", s / 60, s % 60);
}

}  // namespace

Progress::Progress(int64_t total_steps, int64_t every, bool tty)
    : total_(total_steps), every_(every), tty_(tty) {}

std::string Progress::line(int64_t done, double frac, double loss, double lr, double sps,
                           bool bar) const {
  double elapsed = clock_.seconds();
  double eta = frac > 0 ? elapsed * (1.0 - frac) / frac : -1.0;
  std::string head;
  if (bar) {
    constexpr int kWidth = 24;
    const int filled = std::clamp(static_cast<int>(frac * kWidth), 0, kWidth);
    head = "[" + std::string(filled, '#') + std::string(kWidth - filled, '.') + "] ";
  }
  const std::string of_total = total_ > 0 ? fmt::format("/{}", total_) : "";
  return fmt::format("{}step {}{} ({:.0f}%)  loss {:.4f}  lr {:.3g}  {:.0f} samples/s  {} left",
                     head, done, of_total, 100.0 * frac, loss, lr, sps, clock_text(eta));
}

void Progress::update(int64_t done, double loss, double lr, double sps, double fraction) {
  const double frac = fraction >= 0.0 ? fraction
                      : total_ > 0    ? static_cast<double>(done) / static_cast<double>(total_)
                                      : 1.0;
  const bool last = frac >= 1.0;
  if (tty_) {
    double now = clock_.seconds();
    if (!last && now - last_draw_ < 0.1) return;
    last_draw_ = now;
    std::fprintf(stderr, "\r\033[K%s", line(done, frac, loss, lr, sps, true).c_str());
    std::fflush(stderr);
    drawn_ = true;
  } else if (done % every_ == 0 || last) {
    std::fprintf(stderr, "%s\n", line(done, frac, loss, lr, sps, false).c_str());
    std::fflush(stderr);
  }
}

void Progress::note(const std::string& text) {
  if (tty_ && drawn_) std::fprintf(stderr, "\r\033[K");
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
  drawn_ = false;
  last_draw_ = -1.0;
}

void Progress::finish() {
  if (tty_ && drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

}  // namespace desync
