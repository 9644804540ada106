//===- Topology.cpp - Tree model of a cluster's interconnect --------------===//
//
// The JSON form of a topology (docs/topology.md):
//
// clang-format off
//   {
//     "name": "dgx-a100",
//     "description": "8 x A100 per node, NVSwitch; one HDR 200 Gb/s NIC per GPU",
//     "levels": [
//       {"name": "node",    "fanout": 8, "up_GBps": 300, "down_GBps": 300, "latency_us": 3, "per_message_us": 0.02, "uplink": "per-rank"},
//       {"name": "cluster", "fanout": 4, "up_GBps": 25,  "down_GBps": 25,  "latency_us": 7, "per_message_us": 0.02, "uplink": "per-rank"}
//     ]
//   }
// clang-format on
//
// - `levels` lists the levels innermost first; level l groups `fanout`
//   children of level l - 1 (level 0 groups ranks). The link of level l
//   connects each child to the level's switch.
// - `uplink` is "per-rank" (the bandwidth is there for every rank below the
//   link) or "shared" (the whole child subtree shares it).
// - `latency_us` is the start-up latency of an exchange that reaches the
//   level, `per_message_us` the sender's overhead for each message it posts
//   over it (docs/cost-model.md, "Latency").
// - `description` (default empty) and `per_message_us` (default 0) are
//   optional; every other field is required, and unknown keys anywhere are
//   errors.
// - `name` and level names are non-empty, level names unique; there is at
//   least one level; `fanout` is an integer in [1, 2^20] and the product of
//   fanouts is at most 2^24; `up_GBps` and `down_GBps` are in
//   [0.001, 100000]; `latency_us` and `per_message_us` are in [0, 1000000].
// - A key appears at most once in an object.
//
// Every error is one line, "<source>: <field path>: <reason>", for example
// "bad.json: levels[1].fanout: expected an integer >= 1, got 0".
//
//===----------------------------------------------------------------------===//

#include "tamoe/Topology/Topology.h"
#include "tamoe/Support/Messages.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cassert>
#include <cmath>
#include <cstdlib>

using namespace llvm;
using tamoe::fieldError;
using tamoe::formatNumber;
using namespace tamoe::topology;

/// Bounds that keep rank arithmetic (products of fanouts) far from int64
/// overflow.
static constexpr int64_t kMaxFanout = int64_t(1) << 20;
static constexpr int64_t kMaxRanks = int64_t(1) << 24;
/// Fanout-1 levels add no ranks, so the rank bound does not bound the
/// depth; the cost model's evaluation is cubic in it (a 2000-level file
/// took minutes to plan).
static constexpr size_t kMaxLevels = 32;

/// Deeper JSON is rejected before llvm::json::parse sees it: the parser
/// recurses once per nesting level and overflows the stack near 50000 levels,
/// while a topology file nests 3 deep.
static constexpr size_t kMaxJSONDepth = 64;

/// Longest quoted value in a message, so that one line stays readable.
static constexpr size_t kMaxQuotedBytes = 40;

/// Up to a second per message (the bandwidth range is in Topology.h).
static constexpr double kMaxLatencyUs = 1e6;

/// What the numeric fields accept; parsing and verify() word it the same.
static constexpr StringLiteral kBandwidthRule =
    "expected a number of GB/s in [0.001, 100000]";
static constexpr StringLiteral kLatencyRule =
    "expected a number of microseconds in [0, 1000000]";

/// A JSON value as quoted in a message: compact, escaped (so it stays on one
/// line) and cut after kMaxQuotedBytes.
static std::string describe(const json::Value &value) {
  std::string text = formatv("{0}", value).str();
  // llvm::json prints doubles with 17 digits; anything but an integer is one.
  if (value.kind() == json::Value::Number &&
      text.find_first_not_of("-0123456789") != std::string::npos)
    text = formatNumber(*value.getAsNumber());
  if (text.size() <= kMaxQuotedBytes)
    return text;
  // Cut on a UTF-8 character boundary.
  size_t cut = kMaxQuotedBytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80)
    --cut;
  return text.substr(0, cut) + "...";
}

/// A name (valid UTF-8) quoted in a message: 'name', escaped so that it stays
/// on one line.
static std::string quoteName(StringRef name) {
  std::string escaped = describe(json::Value(name.str()));
  // describe() wraps strings in double quotes; names read better in single.
  if (escaped.back() == '"')
    escaped.pop_back();
  return "'" + escaped.substr(1) + "'";
}

/// Why `value` is not a valid fanout, or "" when it is one. Takes a double so
/// that parsing can check numbers that do not fit in int64 before narrowing.
static std::string fanoutProblem(double value) {
  if (!std::isfinite(value) || std::trunc(value) != value || value < 1)
    return "expected an integer >= 1";
  if (value > static_cast<double>(kMaxFanout))
    return "expected an integer <= " + std::to_string(kMaxFanout);
  return "";
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
         latencyUs == other.latencyUs && sharing == other.sharing &&
         perMessageUs == other.perMessageUs;
}

bool Topology::operator==(const Topology &other) const {
  return name == other.name && description == other.description &&
         levels == other.levels;
}

int64_t Topology::numRanks() const {
  return levels.empty() ? 0 : ranksPerSubtree(levels.size() - 1);
}

int64_t Topology::numNodes() const {
  return levels.empty() ? 0 : numRanks() / levels.front().fanout;
}

int64_t Topology::ranksPerSubtree(size_t level) const {
  int64_t ranks = 1;
  for (size_t index = 0; index <= level && index < levels.size(); ++index)
    ranks *= levels[index].fanout;
  return ranks;
}

int Topology::lowestCommonLevel(int64_t a, int64_t b) const {
  assert(a >= 0 && a < numRanks() && b >= 0 && b < numRanks() &&
         "rank outside the tree");
  if (a == b)
    return -1;
  int64_t subtree = 1;
  for (auto [index, level] : enumerate(levels)) {
    subtree *= level.fanout;
    if (a / subtree == b / subtree)
      return static_cast<int>(index);
  }
  // Unreachable for ranks inside the tree: the root holds all of them.
  return static_cast<int>(levels.size()) - 1;
}

Error tamoe::topology::verify(const Topology &topology) {
  if (topology.name.empty())
    return fieldError("name", "must not be empty");
  // writeTopologyJSON() writes the strings as JSON, which must be UTF-8.
  if (!json::isUTF8(topology.name))
    return fieldError("name", "must be valid UTF-8");
  // Names are quoted in remarks and tables, one line each.
  auto hasControl = [](StringRef text) {
    return any_of(text, [](char c) { return uint8_t(c) < 0x20 || c == 0x7f; });
  };
  if (hasControl(topology.name))
    return fieldError("name", "must not contain control characters");
  if (!json::isUTF8(topology.description))
    return fieldError("description", "must be valid UTF-8");
  if (topology.levels.empty())
    return fieldError("levels", "expected at least one level");
  if (topology.levels.size() > kMaxLevels)
    return fieldError("levels", formatv("expected at most {0} levels, got {1}",
                                        kMaxLevels, topology.levels.size()));
  StringSet<> names;
  int64_t ranks = 1;
  for (auto [index, level] : enumerate(topology.levels)) {
    std::string field = formatv("levels[{0}]", index).str();
    if (level.name.empty())
      return fieldError(field + ".name", "must not be empty");
    if (!json::isUTF8(level.name))
      return fieldError(field + ".name", "must be valid UTF-8");
    if (hasControl(level.name))
      return fieldError(field + ".name", "must not contain control characters");
    if (!names.insert(level.name).second)
      return fieldError(field + ".name",
                        "duplicate level name " + quoteName(level.name));
    std::string problem = fanoutProblem(static_cast<double>(level.fanout));
    if (!problem.empty())
      return fieldError(field + ".fanout",
                        problem + ", got " + Twine(level.fanout));
    // Both factors are bounded, so the product cannot overflow.
    ranks *= level.fanout;
    if (ranks > kMaxRanks)
      return fieldError(field + ".fanout",
                        formatv("the tree has more than {0} ranks", kMaxRanks));
    for (auto [key, value] :
         {std::pair<StringRef, double>{"up_GBps", level.upBandwidthGBps},
          {"down_GBps", level.downBandwidthGBps}})
      if (!(value >= kMinBandwidthGBps && value <= kMaxBandwidthGBps))
        return fieldError(field + "." + key,
                          kBandwidthRule + ", got " + formatNumber(value));
    for (auto [key, value] :
         {std::pair<StringRef, double>{"latency_us", level.latencyUs},
          {"per_message_us", level.perMessageUs}})
      if (!(value >= 0 && value <= kMaxLatencyUs))
        return fieldError(field + "." + key,
                          kLatencyRule + ", got " + formatNumber(value));
  }
  return Error::success();
}

//===----------------------------------------------------------------------===//
// JSON
//===----------------------------------------------------------------------===//

namespace {
/// Reads the fields of one JSON object into a Topology or Level. Keeps the
/// first failure and ignores later reads, so that a parser reads every field
/// in a row and checks once.
class FieldReader {
public:
  FieldReader(const json::Object &object, std::string path)
      : object(object), path(std::move(path)) {}

  /// Checks keys before any value so that a misspelt key is reported as such
  /// rather than as its correctly spelt twin being missing. The first unknown
  /// key in sorted order is reported, which keeps the message deterministic.
  void rejectUnknownFields(ArrayRef<StringRef> known) {
    if (failed())
      return;
    for (const json::Object::value_type *entry : json::sortedElements(object))
      if (!is_contained(known, StringRef(entry->first))) {
        fail(path.empty() ? "(root)" : path,
             "unknown field " + quoteName(entry->first));
        return;
      }
  }

  void readString(StringRef key, std::string &out, bool required = true) {
    const json::Value *value = lookup(key, required);
    if (!value)
      return;
    if (std::optional<StringRef> text = value->getAsString())
      out = text->str();
    else
      fail(field(key), "expected a string, got " + describe(*value));
  }

  void readNumber(StringRef key, StringRef rule, double &out,
                  bool required = true) {
    const json::Value *value = lookup(key, required);
    if (!value)
      return;
    if (std::optional<double> number = value->getAsNumber())
      out = *number;
    else
      fail(field(key), rule + ", got " + describe(*value));
  }

  void readFanout(StringRef key, int64_t &out) {
    const json::Value *value = lookup(key);
    if (!value)
      return;
    // Range-check as a double: the value may not fit in int64 at all.
    std::optional<double> number = value->getAsNumber();
    std::string problem =
        number ? fanoutProblem(*number) : "expected an integer >= 1";
    if (problem.empty())
      out = static_cast<int64_t>(*number);
    else
      fail(field(key), problem + ", got " + describe(*value));
  }

  void readSharing(StringRef key, LinkSharing &out) {
    const json::Value *value = lookup(key);
    if (!value)
      return;
    std::optional<StringRef> text = value->getAsString();
    std::optional<LinkSharing> sharing =
        text ? parseLinkSharing(*text) : std::nullopt;
    if (sharing)
      out = *sharing;
    else
      fail(field(key),
           "expected \"per-rank\" or \"shared\", got " + describe(*value));
  }

  const json::Array *readArray(StringRef key) {
    const json::Value *value = lookup(key);
    if (!value)
      return nullptr;
    if (const json::Array *array = value->getAsArray())
      return array;
    fail(field(key), "expected an array, got " + describe(*value));
    return nullptr;
  }

  bool failed() const { return error.has_value(); }

  /// Records a failure found outside the reader (in a nested object).
  void fail(Error nested) {
    if (!failed())
      error = toString(std::move(nested));
    else
      consumeError(std::move(nested));
  }

  Error takeError() {
    if (!failed())
      return Error::success();
    return createStringError(inconvertibleErrorCode(), *error);
  }

private:
  std::string field(StringRef key) const {
    return path.empty() ? key.str() : path + "." + key.str();
  }

  void fail(const Twine &field, const Twine &reason) {
    if (!failed())
      error = (field + ": " + reason).str();
  }

  /// The field's value; null when absent (an error if required) or when an
  /// earlier read failed.
  const json::Value *lookup(StringRef key, bool required = true) {
    if (failed())
      return nullptr;
    const json::Value *value = object.get(key);
    if (!value && required)
      fail(field(key), "missing");
    return value;
  }

  const json::Object &object;
  std::string path;
  std::optional<std::string> error;
};
} // namespace

static Expected<Level> parseLevel(const json::Value &value,
                                  const std::string &path) {
  const json::Object *object = value.getAsObject();
  if (!object)
    return fieldError(path, "expected an object, got " + describe(value));
  FieldReader reader(*object, path);
  reader.rejectUnknownFields(
      {"name", "fanout", "up_GBps", "down_GBps", "latency_us",
       "per_message_us", "uplink"});
  Level level;
  reader.readString("name", level.name);
  reader.readFanout("fanout", level.fanout);
  reader.readNumber("up_GBps", kBandwidthRule, level.upBandwidthGBps);
  reader.readNumber("down_GBps", kBandwidthRule, level.downBandwidthGBps);
  reader.readNumber("latency_us", kLatencyRule, level.latencyUs);
  reader.readNumber("per_message_us", kLatencyRule, level.perMessageUs,
                    /*required=*/false);
  reader.readSharing("uplink", level.sharing);
  if (Error error = reader.takeError())
    return std::move(error);
  return level;
}

static Expected<Topology> parseTopology(const json::Value &root) {
  const json::Object *object = root.getAsObject();
  if (!object)
    return fieldError("(root)", "expected an object, got " + describe(root));
  FieldReader reader(*object, "");
  reader.rejectUnknownFields({"name", "description", "levels"});
  Topology topology;
  reader.readString("name", topology.name);
  reader.readString("description", topology.description, /*required=*/false);
  if (const json::Array *levels = reader.readArray("levels")) {
    for (auto [index, value] : enumerate(*levels)) {
      Expected<Level> level =
          parseLevel(value, formatv("levels[{0}]", index).str());
      if (!level) {
        reader.fail(level.takeError());
        break;
      }
      topology.levels.push_back(std::move(*level));
    }
  }
  if (Error error = reader.takeError())
    return std::move(error);
  if (Error error = verify(topology))
    return std::move(error);
  return topology;
}

namespace {
/// What llvm::json::parse does not check: how deep the text nests (the
/// parser recurses once per level and overflows the stack near 50000) and
/// keys repeated within an object (it keeps the last, silently).
struct JSONStructure {
  bool tooDeep = false;
  /// "<object's path>: duplicate key '<key>'" for the first repeated key.
  std::optional<std::string> duplicate;
};

/// One open object or array of the scan.
struct OpenValue {
  bool isObject = false;
  bool expectingKey = false;
  StringSet<> keys;
  /// The member being read: the last key, or the index in an array.
  std::string key;
  int64_t index = 0;
};
} // namespace

/// The path of the innermost open value ("levels[1]"; "(root)" for the
/// root), as field errors name it.
static std::string pathOf(ArrayRef<OpenValue> open) {
  std::string path;
  for (const OpenValue &parent : open.drop_back()) {
    if (!parent.isObject)
      path += formatv("[{0}]", parent.index).str();
    else
      path += (path.empty() ? "" : ".") + parent.key;
  }
  return path.empty() ? "(root)" : path;
}

/// Scans `text` as JSON, stopping past `depthLimit` levels. Malformed text
/// is left for the JSON parser to diagnose.
static JSONStructure scanStructure(StringRef text, size_t depthLimit) {
  JSONStructure result;
  std::vector<OpenValue> open;
  for (size_t index = 0; index < text.size(); ++index) {
    char c = text[index];
    if (c == '"') {
      size_t end = index + 1;
      while (end < text.size() && text[end] != '"')
        end += text[end] == '\\' ? 2 : 1;
      StringRef token = text.slice(index, end + 1);
      index = end;
      if (open.empty() || !open.back().isObject || !open.back().expectingKey)
        continue;
      // Decoding the key as JSON makes "a" and "\u0061" the same key.
      Expected<json::Value> decoded = json::parse(token);
      std::optional<StringRef> key =
          decoded ? decoded->getAsString() : std::nullopt;
      if (!decoded)
        consumeError(decoded.takeError());
      OpenValue &object = open.back();
      object.key = key ? key->str() : token.str();
      object.expectingKey = false;
      if (!object.keys.insert(object.key).second && !result.duplicate)
        result.duplicate =
            pathOf(open) + ": duplicate key " + quoteName(object.key);
    } else if (c == '{' || c == '[') {
      if (open.size() == depthLimit) {
        result.tooDeep = true;
        return result;
      }
      open.emplace_back();
      open.back().isObject = c == '{';
      open.back().expectingKey = c == '{';
    } else if ((c == '}' || c == ']') && !open.empty()) {
      open.pop_back();
    } else if (c == ',' && !open.empty()) {
      open.back().expectingKey = open.back().isObject;
      ++open.back().index;
    }
  }
  return result;
}

Expected<json::Value> tamoe::topology::parseJSON(StringRef text,
                                                 StringRef source) {
  JSONStructure structure = scanStructure(text, kMaxJSONDepth);
  if (structure.tooDeep)
    return createStringError(inconvertibleErrorCode(),
                             source + ": invalid JSON: nested deeper than " +
                                 Twine(kMaxJSONDepth) + " levels");
  Expected<json::Value> root = json::parse(text);
  if (!root)
    return createStringError(
        inconvertibleErrorCode(),
        source + ": invalid JSON: " + toString(root.takeError()));
  if (structure.duplicate)
    return createStringError(inconvertibleErrorCode(),
                             source + ": " + *structure.duplicate);
  return root;
}

Expected<Topology> tamoe::topology::parseTopologyJSON(StringRef text,
                                                      StringRef source) {
  Expected<json::Value> root = parseJSON(text, source);
  if (!root)
    return root.takeError();
  Expected<Topology> topology = parseTopology(*root);
  if (!topology)
    return createStringError(inconvertibleErrorCode(),
                             source + ": " + toString(topology.takeError()));
  return topology;
}

Expected<std::string> tamoe::topology::readTextFile(StringRef path,
                                                    size_t limit) {
  auto cannotRead = [&](std::error_code error) {
    return createStringError(error,
                             path + ": cannot read file: " + error.message());
  };
  Expected<sys::fs::file_t> file =
      path == "-" ? Expected<sys::fs::file_t>(sys::fs::getStdinHandle())
                  : sys::fs::openNativeFileForRead(path);
  if (!file)
    return cannotRead(errorToErrorCode(file.takeError()));
  scope_exit closeFile([&] {
    if (path != "-")
      sys::fs::closeFile(*file);
  });
  // Read in chunks up to one byte past the limit: a pipe has no size.
  std::string text;
  char chunk[65536];
  while (true) {
    Expected<size_t> read =
        sys::fs::readNativeFile(*file, MutableArrayRef<char>(chunk));
    if (!read)
      return cannotRead(errorToErrorCode(read.takeError()));
    if (*read == 0)
      return text;
    text.append(chunk, *read);
    if (text.size() > limit)
      return createStringError(inconvertibleErrorCode(),
                               path + ": larger than " + Twine(limit >> 20) +
                                   " MiB");
  }
}

Expected<Topology> tamoe::topology::loadTopologyFile(StringRef path) {
  Expected<std::string> text = readTextFile(path);
  if (!text)
    return text.takeError();
  return parseTopologyJSON(*text, path);
}

void tamoe::topology::writeTopologyJSON(const Topology &topology,
                                        raw_ostream &os, unsigned indent) {
  json::OStream out(os, indent);
  // llvm::json writes a double with 17 digits.
  auto number = [&](StringRef key, double value) {
    out.attributeBegin(key);
    out.rawValue(formatNumber(value));
    out.attributeEnd();
  };
  out.object([&] {
    out.attribute("name", topology.name);
    if (!topology.description.empty())
      out.attribute("description", topology.description);
    out.attributeArray("levels", [&] {
      for (const Level &level : topology.levels)
        out.object([&] {
          out.attribute("name", level.name);
          out.attribute("fanout", level.fanout);
          number("up_GBps", level.upBandwidthGBps);
          number("down_GBps", level.downBandwidthGBps);
          number("latency_us", level.latencyUs);
          number("per_message_us", level.perMessageUs);
          out.attribute("uplink", stringifyLinkSharing(level.sharing));
        });
    });
  });
}
