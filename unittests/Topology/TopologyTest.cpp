//===- TopologyTest.cpp - Topology model and JSON format ------------------===//

#include "tamoe/Topology/Topology.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"
#include "gtest/gtest.h"

#include <cctype>
#include <cmath>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

using namespace tamoe::topology;

namespace {

std::string clusterPath(llvm::StringRef name) {
  llvm::SmallString<128> path(TAMOE_SOURCE_DIR);
  llvm::sys::path::append(path, "configs", "clusters", name + ".json");
  return std::string(path);
}

Topology loadCluster(llvm::StringRef name) {
  llvm::Expected<Topology> topology = loadTopologyFile(clusterPath(name));
  if (!topology) {
    ADD_FAILURE() << llvm::toString(topology.takeError());
    return Topology();
  }
  return std::move(*topology);
}

/// The message of a failed parse ("" if it succeeded).
std::string parseError(llvm::StringRef text) {
  llvm::Expected<Topology> topology = parseTopologyJSON(text, "bad.json");
  if (topology)
    return "";
  return llvm::toString(topology.takeError());
}

/// The message of verify() ("" if the topology is valid).
std::string verifyError(const Topology &topology) {
  return llvm::toString(verify(topology));
}

std::string printJSON(const Topology &topology) {
  std::string text;
  llvm::raw_string_ostream stream(text);
  writeTopologyJSON(topology, stream, /*indent=*/0);
  return text;
}

/// A topology with one level whose fields are `fields` (JSON members).
std::string withLevelFields(llvm::StringRef fields) {
  return (R"({"name": "t", "levels": [{)" + fields + "}]}").str();
}

/// A complete level with `field` replaced by `value` (or left out when
/// `value` is empty).
std::string levelWith(llvm::StringRef field, llvm::StringRef value) {
  const std::pair<const char *, const char *> fields[] = {
      {"name", R"("node")"}, {"fanout", "4"},       {"up_GBps", "20"},
      {"down_GBps", "25"},   {"latency_us", "1.5"}, {"uplink", R"("shared")"}};
  std::string text;
  for (auto [key, defaultValue] : fields) {
    llvm::StringRef chosen = key == field ? value : defaultValue;
    if (chosen.empty())
      continue;
    if (!text.empty())
      text += ", ";
    text += "\"" + std::string(key) + "\": " + chosen.str();
  }
  return withLevelFields(text);
}

/// A complete level with the optional `per_message_us` set to `value`.
std::string levelWithPerMessage(llvm::StringRef value) {
  return withLevelFields((R"("name": "node", "fanout": 4, "up_GBps": 20, )"
                          R"("down_GBps": 25, "latency_us": 1, )"
                          R"("uplink": "shared", "per_message_us": )" +
                          value)
                             .str());
}

Level makeLevel(const char *name, int64_t fanout) {
  return Level{name, fanout, 10, 10, 1, LinkSharing::PerRank};
}

//===----------------------------------------------------------------------===//
// Reference clusters
//===----------------------------------------------------------------------===//

struct ClusterCase {
  const char *name;
  int64_t ranks;
  std::vector<int64_t> fanouts;
};

class ReferenceClusterTest : public testing::TestWithParam<ClusterCase> {};

TEST_P(ReferenceClusterTest, ParsesAndRoundTrips) {
  const ClusterCase &expected = GetParam();
  Topology topology = loadCluster(expected.name);
  EXPECT_EQ(topology.name, expected.name);
  EXPECT_FALSE(topology.description.empty());
  EXPECT_EQ(topology.numRanks(), expected.ranks);
  ASSERT_EQ(topology.levels.size(), expected.fanouts.size());
  for (size_t level = 0; level < expected.fanouts.size(); ++level)
    EXPECT_EQ(topology.levels[level].fanout, expected.fanouts[level]) << level;

  // JSON -> Topology -> JSON -> Topology -> JSON.
  std::string text = printJSON(topology);
  llvm::Expected<Topology> again = parseTopologyJSON(text, "round-trip");
  ASSERT_TRUE(static_cast<bool>(again)) << llvm::toString(again.takeError());
  EXPECT_EQ(*again, topology);
  EXPECT_EQ(printJSON(*again), text);
}

INSTANTIATE_TEST_SUITE_P(
    Clusters, ReferenceClusterTest,
    testing::Values(ClusterCase{"dgx1-v100", 32, {8, 4}},
                    ClusterCase{"dgx-a100", 32, {8, 4}},
                    ClusterCase{"dgx-h100", 32, {8, 4}},
                    ClusterCase{"h800-deepseek", 32, {8, 4}},
                    ClusterCase{"pcie-ethernet", 16, {4, 4}},
                    ClusterCase{"two-tier-oversubscribed", 128, {8, 4, 4}},
                    ClusterCase{"gb200-nvl72", 144, {72, 2}}),
    [](const testing::TestParamInfo<ClusterCase> &info) {
      std::string name = info.param.name;
      for (char &c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)))
          c = '_';
      return name;
    });

/// The figures of clusters.md that each file must carry.
TEST(ClusterFiguresTest, Bandwidths) {
  struct Figure {
    const char *cluster;
    size_t level;
    double gbps;
    LinkSharing sharing;
  };
  const Figure figures[] = {
      {"dgx1-v100", 0, 150, LinkSharing::PerRank},
      {"dgx1-v100", 1, 50, LinkSharing::Shared},
      {"dgx-a100", 0, 300, LinkSharing::PerRank},
      {"dgx-a100", 1, 25, LinkSharing::PerRank},
      {"dgx-h100", 0, 450, LinkSharing::PerRank},
      {"dgx-h100", 1, 50, LinkSharing::PerRank},
      {"h800-deepseek", 0, 160, LinkSharing::PerRank},
      {"h800-deepseek", 1, 50, LinkSharing::PerRank},
      {"pcie-ethernet", 0, 25, LinkSharing::PerRank},
      {"pcie-ethernet", 1, 12.5, LinkSharing::Shared},
      {"two-tier-oversubscribed", 0, 300, LinkSharing::PerRank},
      {"two-tier-oversubscribed", 1, 25, LinkSharing::PerRank},
      {"two-tier-oversubscribed", 2, 12.5, LinkSharing::PerRank},
      {"gb200-nvl72", 0, 900, LinkSharing::PerRank},
      {"gb200-nvl72", 1, 100, LinkSharing::PerRank},
  };
  for (const Figure &figure : figures) {
    Topology topology = loadCluster(figure.cluster);
    ASSERT_LT(figure.level, topology.levels.size()) << figure.cluster;
    const Level &level = topology.levels[figure.level];
    EXPECT_EQ(level.upBandwidthGBps, figure.gbps)
        << figure.cluster << " level " << figure.level;
    EXPECT_EQ(level.downBandwidthGBps, figure.gbps)
        << figure.cluster << " level " << figure.level;
    EXPECT_EQ(level.sharing, figure.sharing)
        << figure.cluster << " level " << figure.level;
  }
}

TEST(ClusterFiguresTest, NamesAndLatencies) {
  Topology a100 = loadCluster("dgx-a100");
  ASSERT_EQ(a100.levels.size(), 2u);
  EXPECT_EQ(a100.levels[0].name, "node");
  EXPECT_EQ(a100.levels[0].latencyUs, 3);
  EXPECT_EQ(a100.levels[1].name, "cluster");
  EXPECT_EQ(a100.levels[1].latencyUs, 7);

  Topology pcie = loadCluster("pcie-ethernet");
  ASSERT_EQ(pcie.levels.size(), 2u);
  EXPECT_EQ(pcie.levels[1].latencyUs, 30);

  Topology twoTier = loadCluster("two-tier-oversubscribed");
  ASSERT_EQ(twoTier.levels.size(), 3u);
  EXPECT_EQ(twoTier.levels[0].name, "node");
  EXPECT_EQ(twoTier.levels[1].name, "leaf");
  EXPECT_EQ(twoTier.levels[2].name, "spine");

  Topology nvl72 = loadCluster("gb200-nvl72");
  ASSERT_EQ(nvl72.levels.size(), 2u);
  EXPECT_EQ(nvl72.levels[0].name, "rack");
}

//===----------------------------------------------------------------------===//
// Parsing and printing
//===----------------------------------------------------------------------===//

TEST(TopologyJSONTest, ParsesEveryField) {
  llvm::Expected<Topology> topology = parseTopologyJSON(
      R"({"name": "t", "description": "d", "levels": [
            {"name": "node", "fanout": 4, "up_GBps": 20, "down_GBps": 25,
             "latency_us": 1.5, "uplink": "per-rank"},
            {"name": "cluster", "fanout": 2, "up_GBps": 5.25,
             "down_GBps": 6, "latency_us": 0, "uplink": "shared"}]})",
      "t.json");
  ASSERT_TRUE(static_cast<bool>(topology))
      << llvm::toString(topology.takeError());
  Topology expected;
  expected.name = "t";
  expected.description = "d";
  expected.levels = {Level{"node", 4, 20, 25, 1.5, LinkSharing::PerRank},
                     Level{"cluster", 2, 5.25, 6, 0, LinkSharing::Shared}};
  EXPECT_EQ(*topology, expected);
  EXPECT_EQ(topology->numRanks(), 8);
}

/// The example of Topology.cpp and docs/topology.md, verbatim.
TEST(TopologyJSONTest, DocumentedExample) {
  llvm::Expected<Topology> topology = parseTopologyJSON(R"({
  "name": "dgx-a100",
  "description": "8 x A100 per node, NVSwitch; one HDR 200 Gb/s NIC per GPU",
  "levels": [
    {"name": "node",    "fanout": 8, "up_GBps": 300, "down_GBps": 300, "latency_us": 3, "uplink": "per-rank"},
    {"name": "cluster", "fanout": 4, "up_GBps": 25,  "down_GBps": 25,  "latency_us": 7, "uplink": "per-rank"}
  ]
})",
                                                        "example.json");
  ASSERT_TRUE(static_cast<bool>(topology))
      << llvm::toString(topology.takeError());
  Topology expected;
  expected.name = "dgx-a100";
  expected.description =
      "8 x A100 per node, NVSwitch; one HDR 200 Gb/s NIC per GPU";
  expected.levels = {Level{"node", 8, 300, 300, 3, LinkSharing::PerRank},
                     Level{"cluster", 4, 25, 25, 7, LinkSharing::PerRank}};
  EXPECT_EQ(*topology, expected);
  EXPECT_EQ(topology->numRanks(), 32);
}

TEST(TopologyJSONTest, DescriptionIsOptional) {
  llvm::Expected<Topology> topology = parseTopologyJSON(levelWith("", ""), "");
  ASSERT_TRUE(static_cast<bool>(topology))
      << llvm::toString(topology.takeError());
  EXPECT_EQ(topology->description, "");
  // An empty description is left out of the JSON form; fields come in the
  // cluster files' order.
  EXPECT_EQ(printJSON(*topology),
            R"({"name":"t","levels":[{"name":"node","fanout":4,"up_GBps":20,)"
            R"("down_GBps":25,"latency_us":1.5,"per_message_us":0,)"
            R"("uplink":"shared"}]})");
}

TEST(TopologyJSONTest, IntegralFanoutWrittenAsFloat) {
  llvm::Expected<Topology> topology =
      parseTopologyJSON(levelWith("fanout", "8.0"), "t.json");
  ASSERT_TRUE(static_cast<bool>(topology))
      << llvm::toString(topology.takeError());
  EXPECT_EQ(topology->levels[0].fanout, 8);
}

TEST(TopologyJSONTest, RoundTripsAwkwardValues) {
  Topology topology;
  topology.name = "quote\" and µs";
  topology.description = "µs, \t tab and\nnewline";
  topology.levels = {
      Level{"a", 1, 0.1, 1e-3, 0, LinkSharing::Shared},
      Level{"b", 1 << 20, 1e5, 1.0 / 3, 1e6, LinkSharing::PerRank},
  };
  ASSERT_EQ(verifyError(topology), "");
  // Each number in the shortest form that reads back exactly.
  std::string text = printJSON(topology);
  EXPECT_NE(text.find(R"("up_GBps":0.1,"down_GBps":0.001,)"), std::string::npos)
      << text;
  EXPECT_NE(
      text.find(R"("down_GBps":0.3333333333333333,"latency_us":1000000,)"),
      std::string::npos)
      << text;
  llvm::Expected<Topology> again = parseTopologyJSON(text, "round-trip");
  ASSERT_TRUE(static_cast<bool>(again)) << llvm::toString(again.takeError());
  EXPECT_EQ(*again, topology);
}

TEST(TopologyJSONTest, LinkSharingNames) {
  EXPECT_EQ(stringifyLinkSharing(LinkSharing::PerRank), "per-rank");
  EXPECT_EQ(stringifyLinkSharing(LinkSharing::Shared), "shared");
  EXPECT_EQ(parseLinkSharing("per-rank"), LinkSharing::PerRank);
  EXPECT_EQ(parseLinkSharing("shared"), LinkSharing::Shared);
  EXPECT_EQ(parseLinkSharing("per_rank"), std::nullopt);
  EXPECT_EQ(parseLinkSharing(""), std::nullopt);
}

//===----------------------------------------------------------------------===//
// Tree arithmetic
//===----------------------------------------------------------------------===//

TEST(TopologyTreeTest, ThreeLevels) {
  // 4 ranks per node, 2 nodes per leaf, 3 leaves: 24 ranks.
  Topology topology;
  topology.name = "t";
  topology.levels = {makeLevel("node", 4), makeLevel("leaf", 2),
                     makeLevel("spine", 3)};
  ASSERT_EQ(verifyError(topology), "");
  EXPECT_EQ(topology.numRanks(), 24);
  EXPECT_EQ(topology.ranksPerSubtree(0), 4);
  EXPECT_EQ(topology.ranksPerSubtree(1), 8);
  EXPECT_EQ(topology.ranksPerSubtree(2), 24);
  EXPECT_EQ(topology.ranksPerSubtree(3), 24);
  EXPECT_EQ(topology.lowestCommonLevel(5, 5), -1);
  EXPECT_EQ(topology.lowestCommonLevel(0, 3), 0);
  EXPECT_EQ(topology.lowestCommonLevel(4, 7), 0);
  EXPECT_EQ(topology.lowestCommonLevel(3, 4), 1);
  EXPECT_EQ(topology.lowestCommonLevel(0, 7), 1);
  EXPECT_EQ(topology.lowestCommonLevel(7, 8), 2);
  EXPECT_EQ(topology.lowestCommonLevel(16, 15), 2);
  EXPECT_EQ(topology.lowestCommonLevel(23, 0), 2);
  EXPECT_EQ(topology.lowestCommonLevel(22, 23), 0);
}

TEST(TopologyTreeTest, MatchesDefinitionOnEveryPair) {
  Topology topology;
  topology.name = "t";
  topology.levels = {makeLevel("node", 3), makeLevel("leaf", 2),
                     makeLevel("spine", 2)};
  for (int64_t a = 0; a < topology.numRanks(); ++a)
    for (int64_t b = 0; b < topology.numRanks(); ++b) {
      int expected = -1;
      if (a != b)
        for (int level = 0; level < 3 && expected < 0; ++level)
          if (a / topology.ranksPerSubtree(level) ==
              b / topology.ranksPerSubtree(level))
            expected = level;
      EXPECT_EQ(topology.lowestCommonLevel(a, b), expected) << a << ", " << b;
    }
}

TEST(TopologyTreeTest, OneLevel) {
  Topology topology;
  topology.name = "t";
  topology.levels = {makeLevel("node", 1)};
  EXPECT_EQ(verifyError(topology), "");
  EXPECT_EQ(topology.numRanks(), 1);
  EXPECT_EQ(topology.lowestCommonLevel(0, 0), -1);
  EXPECT_EQ(Topology().numRanks(), 0);
}

//===----------------------------------------------------------------------===//
// Errors
//===----------------------------------------------------------------------===//

struct ErrorCase {
  std::string text;
  std::string message;
};

/// Names a failing case by its input rather than by its bytes.
void PrintTo(const ErrorCase &errorCase, std::ostream *os) {
  *os << errorCase.text.substr(0, 200);
}

class TopologyErrorTest : public testing::TestWithParam<ErrorCase> {};

TEST_P(TopologyErrorTest, ExactMessage) {
  std::string message = parseError(GetParam().text);
  EXPECT_EQ(message, GetParam().message) << "input: " << GetParam().text;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

const ErrorCase kErrorCases[] = {
    // Malformed JSON.
    {"{", "bad.json: invalid JSON: [1:1, byte=1]: Expected object key"},
    {"", "bad.json: invalid JSON: [1:0, byte=0]: Unexpected EOF"},
    {"{\n\"name\": \n}",
     "bad.json: invalid JSON: [3:1, byte=12]: Invalid JSON value"},
    {"{\"name\": \"\xff\"}",
     "bad.json: invalid JSON: [1:10, byte=10]: Invalid UTF-8 sequence"},
    {std::string(100000, '[') + std::string(100000, ']'),
     "bad.json: invalid JSON: nested deeper than 64 levels"},
    {R"({"name": "t", "levels": [")" + std::string(100000, '[') + R"("]})",
     "bad.json: levels[0]: expected an object, got \"[[[[[[[[[[[[[[[[[[[[[[["
     "[[[[[[[[[[[[[[[[..."},
    // A key given twice (llvm::json keeps the last): the first repeat, by the
    // path of its object, whatever the spelling of the key.
    {R"({"name": "a", "name": "b", "levels": []})",
     "bad.json: (root): duplicate key 'name'"},
    {R"({"name": "t", "levels": [{}, {"fanout": 1, "x": {"y": 1},
         "\u0066anout": 2}]})",
     "bad.json: levels[1]: duplicate key 'fanout'"},
    {R"({"name": "t", "description": "d", "levels": [{"name": "n",
         "x": {"a": 1, "a": 2}}]})",
     "bad.json: levels[0].x: duplicate key 'a'"},
    // Malformed text is reported as such, repeated key or not.
    {R"({"name": "t", "levels": [], "name": )",
     "bad.json: invalid JSON: [1:36, byte=36]: Unexpected EOF"},
    // The root.
    {"[]", "bad.json: (root): expected an object, got []"},
    {"null", "bad.json: (root): expected an object, got null"},
    {"{}", "bad.json: name: missing"},
    {R"({"name": "t", "levels": [], "nmae": 1})",
     "bad.json: (root): unknown field 'nmae'"},
    // Unknown fields are reported before missing ones, the first in sorted
    // order.
    {R"({"zz": 1, "nmae": "t", "levels": []})",
     "bad.json: (root): unknown field 'nmae'"},
    {R"({"name": "t", "levels": [], "a\nb": 1})",
     "bad.json: (root): unknown field 'a\\nb'"},
    // name and description.
    {R"({"name": 3, "levels": []})",
     "bad.json: name: expected a string, got 3"},
    {R"({"name": null, "levels": []})",
     "bad.json: name: expected a string, got null"},
    {R"({"name": "", "levels": [{"name": "node", "fanout": 4, "up_GBps": 1,
         "down_GBps": 1, "latency_us": 1, "uplink": "shared"}]})",
     "bad.json: name: must not be empty"},
    {R"({"name": "t", "description": null, "levels": []})",
     "bad.json: description: expected a string, got null"},
    {R"({"name": "t", "description": ["d"], "levels": []})",
     "bad.json: description: expected a string, got [\"d\"]"},
    // levels.
    {R"({"name": "t"})", "bad.json: levels: missing"},
    {R"({"name": "t", "levels": {}})",
     "bad.json: levels: expected an array, got {}"},
    {R"({"name": "t", "levels": "node"})",
     "bad.json: levels: expected an array, got \"node\""},
    {R"({"name": "t", "levels": []})",
     "bad.json: levels: expected at least one level"},
    {R"({"name": "t", "levels": [7]})",
     "bad.json: levels[0]: expected an object, got 7"},
    {R"({"name": "t", "levels": [[]]})",
     "bad.json: levels[0]: expected an object, got []"},
    {withLevelFields(R"("name": "n", "fanot": 4, "up_GBps": 1, "down_GBps": 1,
                        "latency_us": 1, "uplink": "shared")"),
     "bad.json: levels[0]: unknown field 'fanot'"},
    {withLevelFields(R"("name": "n", "fanout": 4, "fanot": 4, "up_GBps": 1,
                        "down_GBps": 1, "latency_us": 1, "uplink": "shared")"),
     "bad.json: levels[0]: unknown field 'fanot'"},
    {withLevelFields(""), "bad.json: levels[0].name: missing"},
    {levelWith("name", ""), "bad.json: levels[0].name: missing"},
    {levelWith("name", "1"),
     "bad.json: levels[0].name: expected a string, got 1"},
    {levelWith("name", R"("")"), "bad.json: levels[0].name: must not be empty"},
    {R"({"name": "t", "levels": [
        {"name": "node", "fanout": 4, "up_GBps": 1, "down_GBps": 1,
         "latency_us": 1, "uplink": "shared"},
        {"name": "node", "fanout": 4, "up_GBps": 1, "down_GBps": 1,
         "latency_us": 1, "uplink": "shared"}]})",
     "bad.json: levels[1].name: duplicate level name 'node'"},
    // The first bad level is reported.
    {R"({"name": "t", "levels": [
        {"name": "node", "fanout": 4, "up_GBps": 1, "down_GBps": 1,
         "latency_us": 1, "uplink": "shared"},
        {"name": "x", "fanout": 0},
        {"name": "y"}]})",
     "bad.json: levels[1].fanout: expected an integer >= 1, got 0"},
    // fanout.
    {levelWith("fanout", ""), "bad.json: levels[0].fanout: missing"},
    {levelWith("fanout", "0"),
     "bad.json: levels[0].fanout: expected an integer >= 1, got 0"},
    {levelWith("fanout", "-3"),
     "bad.json: levels[0].fanout: expected an integer >= 1, got -3"},
    {levelWith("fanout", "2.5"),
     "bad.json: levels[0].fanout: expected an integer >= 1, got 2.5"},
    {levelWith("fanout", "0.1"),
     "bad.json: levels[0].fanout: expected an integer >= 1, got 0.1"},
    {levelWith("fanout", R"("8")"),
     "bad.json: levels[0].fanout: expected an integer >= 1, got \"8\""},
    {levelWith("fanout", "null"),
     "bad.json: levels[0].fanout: expected an integer >= 1, got null"},
    {levelWith("fanout", "true"),
     "bad.json: levels[0].fanout: expected an integer >= 1, got true"},
    {levelWith("fanout", "1e999"),
     "bad.json: levels[0].fanout: expected an integer >= 1, got inf"},
    {levelWith("fanout", "1048577"),
     "bad.json: levels[0].fanout: expected an integer <= 1048576, got 1048577"},
    {levelWith("fanout", "1e300"),
     "bad.json: levels[0].fanout: expected an integer <= 1048576, got 1e+300"},
    {levelWith("fanout", "9223372036854775808"),
     "bad.json: levels[0].fanout: expected an integer <= 1048576, got "
     "9223372036854775808"},
    {levelWith("fanout", "18446744073709551615"),
     "bad.json: levels[0].fanout: expected an integer <= 1048576, got "
     "18446744073709551615"},
    {levelWith("fanout", "99999999999999999999999"),
     "bad.json: levels[0].fanout: expected an integer <= 1048576, got 1e+23"},
    {R"({"name": "t", "levels": [
        {"name": "a", "fanout": 4096, "up_GBps": 1, "down_GBps": 1,
         "latency_us": 1, "uplink": "shared"},
        {"name": "b", "fanout": 4097, "up_GBps": 1, "down_GBps": 1,
         "latency_us": 1, "uplink": "shared"}]})",
     "bad.json: levels[1].fanout: the tree has more than 16777216 ranks"},
    // Bandwidths.
    {levelWith("up_GBps", ""), "bad.json: levels[0].up_GBps: missing"},
    {levelWith("down_GBps", ""), "bad.json: levels[0].down_GBps: missing"},
    {levelWith("up_GBps", "0"), "bad.json: levels[0].up_GBps: expected a "
                                "number of GB/s in [0.001, 100000], got 0"},
    {levelWith("up_GBps", "-0.0"), "bad.json: levels[0].up_GBps: expected a "
                                   "number of GB/s in [0.001, 100000], got -0"},
    {levelWith("down_GBps", "-2"), "bad.json: levels[0].down_GBps: expected a "
                                   "number of GB/s in [0.001, 100000], got -2"},
    {levelWith("up_GBps", R"("fast")"),
     "bad.json: levels[0].up_GBps: expected a number of GB/s in [0.001, "
     "100000], got \"fast\""},
    {levelWith("down_GBps", "{}"), "bad.json: levels[0].down_GBps: expected a "
                                   "number of GB/s in [0.001, 100000], got {}"},
    {levelWith("up_GBps", "1e999"),
     "bad.json: levels[0].up_GBps: expected a number of GB/s in [0.001, "
     "100000], got inf"},
    {levelWith("down_GBps", "-1e999"),
     "bad.json: levels[0].down_GBps: expected a number of GB/s in [0.001, "
     "100000], got -inf"},
    // Finite but outside a physical range: the cost model's times would
    // overflow or lose every digit.
    {levelWith("up_GBps", "1e-300"),
     "bad.json: levels[0].up_GBps: expected a number of GB/s in [0.001, "
     "100000], got 1e-300"},
    {levelWith("down_GBps", "0.0009"),
     "bad.json: levels[0].down_GBps: expected a number of GB/s in [0.001, "
     "100000], got 0.0009"},
    {levelWith("down_GBps", "100001"),
     "bad.json: levels[0].down_GBps: expected a number of GB/s in [0.001, "
     "100000], got 100001"},
    {levelWith("latency_us", "1e308"),
     "bad.json: levels[0].latency_us: expected a number of microseconds in "
     "[0, 1000000], got 1e+308"},
    {levelWith("latency_us", "1000000.5"),
     "bad.json: levels[0].latency_us: expected a number of microseconds in "
     "[0, 1000000], got 1000000.5"},
    // Latency.
    {levelWith("latency_us", ""), "bad.json: levels[0].latency_us: missing"},
    {levelWith("latency_us", "-1"),
     "bad.json: levels[0].latency_us: expected a number of microseconds in [0, "
     "1000000], got -1"},
    {levelWith("latency_us", "-0.25"),
     "bad.json: levels[0].latency_us: expected a number of microseconds in [0, "
     "1000000], got -0.25"},
    {levelWith("latency_us", "1e999"),
     "bad.json: levels[0].latency_us: expected a number of microseconds in [0, "
     "1000000], got inf"},
    {levelWith("latency_us", "false"),
     "bad.json: levels[0].latency_us: expected a number of microseconds in [0, "
     "1000000], got false"},
    // Per-message overhead: optional, same range as the latency.
    {levelWithPerMessage("-1"),
     "bad.json: levels[0].per_message_us: expected a number of microseconds "
     "in [0, 1000000], got -1"},
    {levelWithPerMessage(R"("fast")"),
     "bad.json: levels[0].per_message_us: expected a number of microseconds "
     "in [0, 1000000], got \"fast\""},
    {levelWithPerMessage("2e6"),
     "bad.json: levels[0].per_message_us: expected a number of microseconds "
     "in [0, 1000000], got 2000000"},
    // uplink.
    {levelWith("uplink", ""), "bad.json: levels[0].uplink: missing"},
    {levelWith("uplink", R"("dedicated")"),
     "bad.json: levels[0].uplink: expected \"per-rank\" or \"shared\", got "
     "\"dedicated\""},
    {levelWith("uplink", "1"),
     "bad.json: levels[0].uplink: expected \"per-rank\" or \"shared\", got 1"},
    {levelWith("uplink", R"("per_rank\nshared")"),
     "bad.json: levels[0].uplink: expected \"per-rank\" or \"shared\", got "
     "\"per_rank\\nshared\""},
};

INSTANTIATE_TEST_SUITE_P(Messages, TopologyErrorTest,
                         testing::ValuesIn(kErrorCases));

TEST(TopologyFileTest, MissingFile) {
  llvm::Expected<Topology> topology =
      loadTopologyFile("/nonexistent/cluster.json");
  ASSERT_FALSE(static_cast<bool>(topology));
  EXPECT_EQ(llvm::toString(topology.takeError()),
            "/nonexistent/cluster.json: cannot read file: No such file or "
            "directory");
}

TEST(TopologyFileTest, DirectoryIsNotAFile) {
  // A directory reads as a file that cannot be read.
  llvm::Expected<Topology> topology = loadTopologyFile(TAMOE_SOURCE_DIR);
  ASSERT_FALSE(static_cast<bool>(topology));
  EXPECT_EQ(llvm::toString(topology.takeError()),
            std::string(TAMOE_SOURCE_DIR) +
                ": cannot read file: Is a directory");
}

TEST(TopologyVerifyTest, MessagesHaveNoSource) {
  Topology topology;
  EXPECT_EQ(verifyError(topology), "name: must not be empty");
  topology.name = "t";
  EXPECT_EQ(verifyError(topology), "levels: expected at least one level");

  topology.levels = {makeLevel("node", 0)};
  EXPECT_EQ(verifyError(topology),
            "levels[0].fanout: expected an integer >= 1, got 0");
  topology.levels = {makeLevel("node", std::numeric_limits<int64_t>::max())};
  EXPECT_EQ(verifyError(topology),
            "levels[0].fanout: expected an integer <= 1048576, got "
            "9223372036854775807");
  topology.levels = {makeLevel("node", 1 << 20), makeLevel("rack", 17)};
  EXPECT_EQ(verifyError(topology),
            "levels[1].fanout: the tree has more than 16777216 ranks");
  topology.levels = {makeLevel("node", 1 << 20), makeLevel("rack", 16)};
  EXPECT_EQ(verifyError(topology), "");

  // Fanout-1 levels add no ranks; the depth has its own bound.
  topology.levels.clear();
  for (int level = 0; level < 33; ++level)
    topology.levels.push_back(
        makeLevel(("l" + std::to_string(level)).c_str(), 1));
  EXPECT_EQ(verifyError(topology),
            "levels: expected at most 32 levels, got 33");
  topology.levels.pop_back();
  EXPECT_EQ(verifyError(topology), "");

  topology.levels = {makeLevel("node", 2), makeLevel("", 2)};
  EXPECT_EQ(verifyError(topology), "levels[1].name: must not be empty");
  topology.levels = {makeLevel("a b", 2), makeLevel("a b", 2)};
  EXPECT_EQ(verifyError(topology),
            "levels[1].name: duplicate level name 'a b'");
}

TEST(TopologyVerifyTest, RejectsNonFiniteNumbers) {
  Topology topology;
  topology.name = "t";
  topology.levels = {makeLevel("node", 2)};
  topology.levels[0].upBandwidthGBps = std::nan("");
  EXPECT_EQ(verifyError(topology), "levels[0].up_GBps: expected a number of "
                                   "GB/s in [0.001, 100000], got nan");
  topology.levels[0].upBandwidthGBps = 1;
  topology.levels[0].downBandwidthGBps = HUGE_VAL;
  EXPECT_EQ(verifyError(topology), "levels[0].down_GBps: expected a number of "
                                   "GB/s in [0.001, 100000], got inf");
  topology.levels[0].downBandwidthGBps = 1;
  topology.levels[0].latencyUs = std::nan("");
  EXPECT_EQ(verifyError(topology), "levels[0].latency_us: expected a number of "
                                   "microseconds in [0, 1000000], got nan");
}

TEST(TopologyVerifyTest, RejectsInvalidUTF8) {
  Topology topology;
  topology.name = "\xff";
  topology.levels = {makeLevel("node", 2)};
  EXPECT_EQ(verifyError(topology), "name: must be valid UTF-8");
  topology.name = "t";
  topology.description = "\xc3";
  EXPECT_EQ(verifyError(topology), "description: must be valid UTF-8");
  topology.description = "";
  topology.levels = {makeLevel("\xe2\x82", 2)};
  EXPECT_EQ(verifyError(topology), "levels[0].name: must be valid UTF-8");
}

TEST(TopologyVerifyTest, NamesAreOneLine) {
  // A remark quotes them: a newline would split it.
  Topology topology;
  topology.name = "two\nlines";
  topology.levels = {makeLevel("node", 2)};
  EXPECT_EQ(verifyError(topology), "name: must not contain control characters");
  topology.name = "t";
  topology.levels = {makeLevel("no\tde", 2)};
  EXPECT_EQ(verifyError(topology),
            "levels[0].name: must not contain control characters");
  // The description is free text.
  topology.levels = {makeLevel("node", 2)};
  topology.description = "line one\nline two";
  EXPECT_EQ(verifyError(topology), "");
}

TEST(TopologyMessageTest, LongValuesAreCut) {
  std::string name(100, 'x');
  EXPECT_EQ(parseError(levelWith("uplink", "\"" + name + "\"")),
            "bad.json: levels[0].uplink: expected \"per-rank\" or \"shared\", "
            "got \"" +
                std::string(39, 'x') + "...");
  // Cuts fall between UTF-8 characters ("é" is 2 bytes).
  std::string accents;
  for (int i = 0; i < 30; ++i)
    accents += "\xc3\xa9";
  EXPECT_EQ(parseError(levelWith("uplink", "\"" + accents + "\"")),
            "bad.json: levels[0].uplink: expected \"per-rank\" or \"shared\", "
            "got \"" +
                accents.substr(0, 38) + "...");
}

} // namespace
