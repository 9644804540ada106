//===- Topology.h - Tree model of a cluster's interconnect ------*- C++ -*-===//
//
// A cluster is a tree. Ranks (GPUs or CPU processes) are the leaves; each
// level groups `fanout` children of the level below (level 0 groups ranks
// into nodes, level 1 groups nodes under a switch, ...). Every child is
// attached to its parent by a link with a per-direction bandwidth and a
// per-message latency. This library has no MLIR dependency: the dialect's
// `#tamoe.topology` attribute and the planner both convert to and from it.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_TOPOLOGY_TOPOLOGY_H
#define TAMOE_TOPOLOGY_TOPOLOGY_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tamoe::topology {

/// The bandwidths a topology accepts, GB/s: from a slow serial link to well
/// past any interconnect. Outside them the cost model's times overflow or
/// lose every digit that matters.
constexpr double kMinBandwidthGBps = 1e-3;
constexpr double kMaxBandwidthGBps = 1e5;

/// Whether a level's bandwidth is available to every rank below the link
/// (one NIC per GPU) or is shared by all ranks of the child subtree (one NIC
/// per node, shared by its 8 GPUs).
enum class LinkSharing { PerRank, Shared };

llvm::StringRef stringifyLinkSharing(LinkSharing sharing);
std::optional<LinkSharing> parseLinkSharing(llvm::StringRef text);

/// One level of the tree. The link described here connects each child of
/// this level to the level's switch.
struct Level {
  std::string name;
  /// Children grouped under one switch of this level (>= 1).
  int64_t fanout = 1;
  /// Bandwidth toward the switch (child -> parent), GB/s (1e9 bytes/s).
  double upBandwidthGBps = 0;
  /// Bandwidth from the switch (parent -> child), GB/s.
  double downBandwidthGBps = 0;
  /// Start-up latency of an exchange whose messages reach this level (the
  /// one-way latency of its first message), microseconds.
  double latencyUs = 0;
  LinkSharing sharing = LinkSharing::PerRank;
  /// The sender's overhead for each message it posts over this level;
  /// messages overlap their latencies but not this, microseconds.
  double perMessageUs = 0;

  bool operator==(const Level &other) const;
};

struct Topology {
  std::string name;
  /// Free text: where the figures come from.
  std::string description;
  /// Innermost level first (levels[0] groups ranks).
  std::vector<Level> levels;

  bool operator==(const Topology &other) const;

  /// Number of ranks: the product of all fanouts (0 without levels).
  int64_t numRanks() const;
  /// Number of nodes (the subtrees of level 0): the ranks over the first
  /// fanout (0 without levels).
  int64_t numNodes() const;
  /// Ranks under one subtree of `level`: the product of the fanouts of levels
  /// 0..level (all of them when `level` is past the top).
  int64_t ranksPerSubtree(size_t level) const;
  /// Level of the lowest common ancestor of ranks `a` and `b` in
  /// [0, numRanks()), numbered so that rank = node * levels[0].fanout + local:
  /// the smallest l with a / ranksPerSubtree(l) == b / ranksPerSubtree(l);
  /// -1 when a == b.
  int lowestCommonLevel(int64_t a, int64_t b) const;
};

/// Checks every invariant (non-empty UTF-8 names, 1 to 32 levels, unique
/// level names, integral fanout in [1, 2^20] with at most 2^24 ranks in all,
/// bandwidths in [0.001, 100000] GB/s, latency in [0, 1000000] us). The error
/// is one line that names the field, e.g. "levels[1].fanout: expected an
/// integer >= 1, got 0".
llvm::Error verify(const Topology &topology);

/// The whole of a file a tool reads as text (a topology, a traffic file,
/// NCCL's dump; "-": standard input), refused past `limit` bytes: a pipe or
/// /dev/zero would otherwise take all memory. Errors are "<path>: cannot
/// read file: <reason>" and "<path>: larger than 64 MiB".
llvm::Expected<std::string> readTextFile(llvm::StringRef path,
                                         size_t limit = size_t(64) << 20);

/// Parses JSON text read from a file, as every tamoe tool reads one: text
/// nested deeper than 64 levels is refused before the parser recurses into
/// it, and so is an object with a key twice ("<source>: levels[1]: duplicate
/// key 'fanout'"), which the parser would silently resolve to the last.
llvm::Expected<llvm::json::Value> parseJSON(llvm::StringRef text,
                                            llvm::StringRef source);

/// Parses and verifies a topology from JSON text (the format is documented in
/// Topology.cpp and docs/topology.md). `source` names the text in error
/// messages ("<source>: <field>: <reason>", one line). Unknown fields and
/// keys that appear twice in an object are errors.
llvm::Expected<Topology> parseTopologyJSON(llvm::StringRef text,
                                           llvm::StringRef source);

/// Reads and parses a topology file; a file that cannot be read gives
/// "<path>: cannot read file: <reason>".
llvm::Expected<Topology> loadTopologyFile(llvm::StringRef path);

/// Writes the JSON form of a verified topology, the inverse of
/// parseTopologyJSON, with `indent` spaces per level (0: one line). Fields
/// come in the order of the cluster files; numbers in the shortest form
/// that reads back exactly ("0.1", not 0.10000000000000001); "description"
/// is left out when empty.
void writeTopologyJSON(const Topology &topology, llvm::raw_ostream &os,
                       unsigned indent = 2);

} // namespace tamoe::topology

#endif // TAMOE_TOPOLOGY_TOPOLOGY_H
