//===- LaunchOptions.cpp - What every launcher reads the same way ---------===//

#include "LaunchOptions.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

using namespace tamoe_rt;

bool tamoe_rt::parsePositive(const char *text, int64_t &value) {
  char *end = nullptr;
  errno = 0;
  long long parsed = std::strtoll(text, &end, 10);
  if (errno || end == text || *end || parsed <= 0)
    return false;
  value = parsed;
  return true;
}

bool tamoe_rt::parsePositive(const char *text, double &value) {
  char *end = nullptr;
  errno = 0;
  double parsed = std::strtod(text, &end);
  if (errno || end == text || *end || !(parsed > 0) || !std::isfinite(parsed))
    return false;
  value = parsed;
  return true;
}

const char *tamoe_rt::nonEmptyEnv(const char *name) {
  const char *value = std::getenv(name);
  return value && *value ? value : nullptr;
}

std::string tamoe_rt::resolveRanksPerNode(int64_t option, int64_t worldSize,
                                          int64_t &ranksPerNode) {
  const char *source = "options->ranks_per_node";
  ranksPerNode = option;
  if (option <= 0) {
    ranksPerNode = worldSize;
    source = "the number of ranks";
    for (const char *name :
         {"TAMOE_RANKS_PER_NODE", "OMPI_COMM_WORLD_LOCAL_SIZE",
          "LOCAL_WORLD_SIZE"}) {
      const char *text = nonEmptyEnv(name);
      if (!text)
        continue;
      if (!parsePositive(text, ranksPerNode))
        return str(name, "='", text, "' is not a positive integer");
      source = name;
      break;
    }
  }
  if (worldSize % ranksPerNode != 0)
    return str("ranks_per_node = ", ranksPerNode, " (from ", source,
               ") does not divide the ", worldSize, " ranks");
  return "";
}

std::string tamoe_rt::resolveTimeout(double option, double &timeout) {
  timeout = 60;
  if (option > 0) {
    timeout = option;
    return "";
  }
  const char *text = nonEmptyEnv("TAMOE_RT_TIMEOUT");
  if (text && !parsePositive(text, timeout)) {
    timeout = 60;
    return str("TAMOE_RT_TIMEOUT='", text,
               "' is not a positive number of seconds");
  }
  return "";
}

std::string tamoe_rt::requestedLauncher(LauncherKind &kind, bool &forced) {
  const char *named = nonEmptyEnv("TAMOE_RT_LAUNCHER");
  forced = named != nullptr;
  if (named) {
    kind =
        std::strcmp(named, "tcp") == 0 ? LauncherKind::Tcp : LauncherKind::Mpi;
    if (std::strcmp(named, "tcp") != 0 && std::strcmp(named, "mpi") != 0)
      return str("TAMOE_RT_LAUNCHER='", named, "' is not mpi or tcp");
    return "";
  }
  bool mpiLaunched = false;
  for (const char *name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    mpiLaunched = mpiLaunched || nonEmptyEnv(name);
  kind = !mpiLaunched && nonEmptyEnv("WORLD_SIZE") && nonEmptyEnv("MASTER_ADDR")
             ? LauncherKind::Tcp
             : LauncherKind::Mpi;
  return "";
}
