//===- Topology.cpp - Tree model of a cluster's interconnect --------------===//
//
// JSON form (docs/topology.md):
//
//   {
//     "name": "dgx-a100",
//     "description": "optional free text",
//     "levels": [
//       {"name": "node", "fanout": 8, "up_GBps": 300, "down_GBps": 300,
//        "latency_us": 3, "uplink": "per-rank"},
//       ...
//     ]
//   }
//
// Every error is one line, "<source>: <field>: <reason>".
//
//===----------------------------------------------------------------------===//

#include "tamoe/Topology/Topology.h"
#include "tamoe/Support/Format.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cmath>

using namespace llvm;
using namespace tamoe::topology;

/// Bounds that keep rank arithmetic far from int64 overflow.
static constexpr int64_t kMaxFanout = int64_t(1) << 20;
static constexpr int64_t kMaxRanks = int64_t(1) << 24;

static Error fieldError(const Twine &field, const Twine &reason) {
  return createStringError(inconvertibleErrorCode(), field + ": " + reason);
}

StringRef tamoe::topology::stringifyLinkSharing(LinkSharing sharing) {
  return sharing == LinkSharing::Shared ? "shared" : "per-rank";
}

std::optional<LinkSharing> tamoe::topology::parseLinkSharing(StringRef text) {
  if (text == "per-rank")
    return LinkSharing::PerRank;
  if (text == "shared")
    return LinkSharing::Shared;
  return std::nullopt;
}

bool Level::operator==(const Level &other) const {
  return name == other.name && fanout == other.fanout &&
         upBandwidthGBps == other.upBandwidthGBps &&
         downBandwidthGBps == other.downBandwidthGBps &&
         latencyUs == other.latencyUs && sharing == other.sharing;
}

bool Topology::operator==(const Topology &other) const {
  return name == other.name && description == other.description &&
         levels == other.levels;
}

int64_t Topology::numRanks() const {
  return levels.empty() ? 0 : ranksPerSubtree(levels.size() - 1);
}

int64_t Topology::ranksPerSubtree(size_t level) const {
  int64_t ranks = 1;
  for (size_t index = 0; index <= level && index < levels.size(); ++index)
    ranks *= levels[index].fanout;
  return ranks;
}

int Topology::lowestCommonLevel(int64_t a, int64_t b) const {
  if (a == b)
    return -1;
  for (size_t level = 0; level + 1 < levels.size(); ++level) {
    int64_t subtree = ranksPerSubtree(level);
    if (a / subtree == b / subtree)
      return static_cast<int>(level);
  }
  return static_cast<int>(levels.size()) - 1;
}

Error tamoe::topology::verify(const Topology &topology) {
  if (topology.name.empty())
    return fieldError("name", "must not be empty");
  if (topology.levels.empty())
    return fieldError("levels", "expected at least one level");
  StringSet<> names;
  int64_t ranks = 1;
  for (const auto &[index, level] : enumerate(topology.levels)) {
    std::string field = formatv("levels[{0}]", index);
    if (level.name.empty())
      return fieldError(field + ".name", "must not be empty");
    if (!names.insert(level.name).second)
      return fieldError(field + ".name",
                        "duplicate level name '" + level.name + "'");
    if (level.fanout < 1 || level.fanout > kMaxFanout)
      return fieldError(field + ".fanout",
                        formatv("expected an integer in [1, {0}], got {1}",
                                kMaxFanout, level.fanout));
    ranks *= level.fanout;
    if (ranks > kMaxRanks)
      return fieldError(field + ".fanout",
                        formatv("the tree has more than {0} ranks", kMaxRanks));
    auto checkBandwidth = [&](StringRef key, double value) -> Error {
      if (std::isfinite(value) && value > 0)
        return Error::success();
      return fieldError(field + "." + key, "expected a number > 0, got " +
                                               tamoe::formatNumber(value));
    };
    if (Error error = checkBandwidth("up_GBps", level.upBandwidthGBps))
      return error;
    if (Error error = checkBandwidth("down_GBps", level.downBandwidthGBps))
      return error;
    if (!std::isfinite(level.latencyUs) || level.latencyUs < 0)
      return fieldError(field + ".latency_us",
                        "expected a number >= 0, got " +
                            tamoe::formatNumber(level.latencyUs));
  }
  return Error::success();
}

//===----------------------------------------------------------------------===//
// JSON
//===----------------------------------------------------------------------===//

namespace {
/// Reads the fields of one JSON object, reporting errors with their path and
/// rejecting keys that nothing read.
class ObjectReader {
public:
  ObjectReader(const json::Object &object, std::string path)
      : object(object), path(std::move(path)) {}

  Expected<const json::Value *> get(StringRef key, bool required = true) {
    seen.insert(key);
    const json::Value *value = object.get(key);
    if (!value && required)
      return fieldError(field(key), "missing");
    return value;
  }

  Expected<std::string> getString(StringRef key, bool required = true) {
    Expected<const json::Value *> value = get(key, required);
    if (!value)
      return value.takeError();
    if (!*value)
      return std::string();
    if (std::optional<StringRef> text = (*value)->getAsString())
      return text->str();
    return fieldError(field(key),
                      formatv("expected a string, got {0}", **value));
  }

  Expected<double> getNumber(StringRef key) {
    Expected<const json::Value *> value = get(key);
    if (!value)
      return value.takeError();
    if (std::optional<double> number = (*value)->getAsNumber())
      return *number;
    return fieldError(field(key),
                      formatv("expected a number, got {0}", **value));
  }

  Expected<int64_t> getInteger(StringRef key) {
    Expected<const json::Value *> value = get(key);
    if (!value)
      return value.takeError();
    if (std::optional<int64_t> number = (*value)->getAsInteger())
      return *number;
    return fieldError(field(key),
                      formatv("expected an integer, got {0}", **value));
  }

  /// Call after reading every known field.
  Error rejectUnknownFields() {
    for (const auto &entry : object)
      if (!seen.contains(entry.first))
        return fieldError(path.empty() ? "(root)" : path,
                          "unknown field '" + entry.first.str() + "'");
    return Error::success();
  }

  std::string field(StringRef key) const {
    return path.empty() ? key.str() : path + "." + key.str();
  }

private:
  const json::Object &object;
  std::string path;
  StringSet<> seen;
};
} // namespace

static Expected<Level> parseLevel(const json::Value &value,
                                  const std::string &path) {
  const json::Object *object = value.getAsObject();
  if (!object)
    return fieldError(path, formatv("expected an object, got {0}", value));
  ObjectReader reader(*object, path);
  Level level;
  Expected<std::string> name = reader.getString("name");
  if (!name)
    return name.takeError();
  level.name = *name;
  Expected<int64_t> fanout = reader.getInteger("fanout");
  if (!fanout)
    return fanout.takeError();
  level.fanout = *fanout;
  for (auto [key, slot] :
       {std::pair<StringRef, double *>{"up_GBps", &level.upBandwidthGBps},
        {"down_GBps", &level.downBandwidthGBps},
        {"latency_us", &level.latencyUs}}) {
    Expected<double> number = reader.getNumber(key);
    if (!number)
      return number.takeError();
    *slot = *number;
  }
  Expected<std::string> uplink = reader.getString("uplink");
  if (!uplink)
    return uplink.takeError();
  std::optional<LinkSharing> sharing = parseLinkSharing(*uplink);
  if (!sharing)
    return fieldError(reader.field("uplink"),
                      "expected \"per-rank\" or \"shared\", got \"" + *uplink +
                          "\"");
  level.sharing = *sharing;
  if (Error error = reader.rejectUnknownFields())
    return std::move(error);
  return level;
}

static Expected<Topology> parseTopology(const json::Value &root) {
  const json::Object *object = root.getAsObject();
  if (!object)
    return fieldError("(root)", "expected an object");
  ObjectReader reader(*object, "");
  Topology topology;
  Expected<std::string> name = reader.getString("name");
  if (!name)
    return name.takeError();
  topology.name = *name;
  Expected<std::string> description =
      reader.getString("description", /*required=*/false);
  if (!description)
    return description.takeError();
  topology.description = *description;
  Expected<const json::Value *> levels = reader.get("levels");
  if (!levels)
    return levels.takeError();
  const json::Array *array = (*levels)->getAsArray();
  if (!array)
    return fieldError("levels",
                      formatv("expected an array, got {0}", **levels));
  for (const auto &[index, value] : enumerate(*array)) {
    Expected<Level> level = parseLevel(value, formatv("levels[{0}]", index));
    if (!level)
      return level.takeError();
    topology.levels.push_back(std::move(*level));
  }
  if (Error error = reader.rejectUnknownFields())
    return std::move(error);
  if (Error error = verify(topology))
    return std::move(error);
  return topology;
}

Expected<Topology> tamoe::topology::parseTopologyJSON(StringRef text,
                                                      StringRef source) {
  Expected<json::Value> root = json::parse(text);
  if (!root)
    return createStringError(
        inconvertibleErrorCode(),
        source + ": invalid JSON: " + toString(root.takeError()));
  Expected<Topology> topology = parseTopology(*root);
  if (!topology)
    return createStringError(inconvertibleErrorCode(),
                             source + ": " + toString(topology.takeError()));
  return topology;
}

Expected<Topology> tamoe::topology::loadTopologyFile(StringRef path) {
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer =
      MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer)
    return createStringError(
        buffer.getError(),
        path + ": cannot read file: " + buffer.getError().message());
  return parseTopologyJSON((*buffer)->getBuffer(), path);
}

json::Value tamoe::topology::toJSON(const Topology &topology) {
  json::Array levels;
  for (const Level &level : topology.levels)
    levels.push_back(json::Object{
        {"name", level.name},
        {"fanout", level.fanout},
        {"up_GBps", level.upBandwidthGBps},
        {"down_GBps", level.downBandwidthGBps},
        {"latency_us", level.latencyUs},
        {"uplink", stringifyLinkSharing(level.sharing)},
    });
  json::Object object{{"name", topology.name}, {"levels", std::move(levels)}};
  if (!topology.description.empty())
    object["description"] = topology.description;
  return object;
}
