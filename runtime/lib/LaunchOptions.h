//===- LaunchOptions.h - What every launcher reads the same way -*- C++ -*-===//
//
// The options a launcher resolves from tamoe_rt_options_t and the
// environment (ranks per node, the timeout), the parsing of its variables,
// and the message helper of the runtime's internals.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_LIB_LAUNCHOPTIONS_H
#define TAMOE_RT_LIB_LAUNCHOPTIONS_H

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <sstream>
#include <string>

namespace tamoe_rt {

/// Concatenates the arguments as an ostream would print them.
template <typename... Args> std::string str(const Args &...args) {
  std::ostringstream stream;
  (stream << ... << args);
  return stream.str();
}

/// A whole positive integer, or false.
bool parsePositive(const char *text, int64_t &value);
/// A positive finite number, or false.
bool parsePositive(const char *text, double &value);
/// The variable's value, or null when it is unset or empty.
const char *nonEmptyEnv(const char *name);

/// Ranks per node from the options, the environment or the launcher, in
/// that order (tamoe_rt.h); "" or the failure's message.
std::string resolveRanksPerNode(int64_t option, int64_t worldSize,
                                int64_t &ranksPerNode);
/// The timeout from the options or TAMOE_RT_TIMEOUT (default 60 s); "" or
/// the failure's message (the timeout is then 60).
std::string resolveTimeout(double option, double &timeout);

/// How the ranks meet: over MPI (MpiLauncher) or TCP (TcpLauncher).
enum class LauncherKind { Mpi, Tcp };
/// The launcher the environment asks for: TAMOE_RT_LAUNCHER=mpi|tcp when
/// set (`forced`), else TCP when torchrun's variables are set (WORLD_SIZE
/// and MASTER_ADDR) and no MPI launcher's (OMPI_COMM_WORLD_SIZE, PMI_SIZE,
/// PMIX_RANK), else MPI. "" or the failure's message.
std::string requestedLauncher(LauncherKind &kind, bool &forced);

using Clock = std::chrono::steady_clock;
/// The longest wait a deadline stands for, about 31 years: a longer one
/// (TAMOE_RT_TIMEOUT=1e300) would overflow the clock's nanoseconds and land
/// in the past.
constexpr double kLongestWaitSeconds = 1e9;
inline Clock::time_point deadlineAfter(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(
                                std::min(seconds, kLongestWaitSeconds)));
}

} // namespace tamoe_rt

#endif // TAMOE_RT_LIB_LAUNCHOPTIONS_H
