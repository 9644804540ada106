//===- TopologyTest.cpp - Topology model and JSON format ------------------===//

#include "tamoe/Topology/Topology.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "gtest/gtest.h"

#include <string>

using namespace tamoe::topology;

namespace {

std::string clusterPath(llvm::StringRef name) {
  llvm::SmallString<128> path(TAMOE_SOURCE_DIR);
  llvm::sys::path::append(path, "configs", "clusters", name + ".json");
  return std::string(path);
}

/// The message of a failed parse ("" if it succeeded).
std::string parseError(llvm::StringRef text) {
  llvm::Expected<Topology> topology = parseTopologyJSON(text, "t.json");
  if (topology)
    return "";
  return llvm::toString(topology.takeError());
}

std::string withLevel(llvm::StringRef level) {
  return (R"({"name": "t", "levels": [)" + level + "]}").str();
}

constexpr const char *kGoodLevel =
    R"({"name": "node", "fanout": 4, "up_GBps": 20, "down_GBps": 25,
        "latency_us": 1.5, "uplink": "per-rank"})";

struct ClusterCase {
  const char *name;
  int64_t ranks;
  size_t levels;
};

class ReferenceClusterTest : public testing::TestWithParam<ClusterCase> {};

TEST_P(ReferenceClusterTest, ParsesAndRoundTrips) {
  const ClusterCase &expected = GetParam();
  llvm::Expected<Topology> topology =
      loadTopologyFile(clusterPath(expected.name));
  ASSERT_TRUE(static_cast<bool>(topology))
      << llvm::toString(topology.takeError());
  EXPECT_EQ(topology->name, expected.name);
  EXPECT_EQ(topology->numRanks(), expected.ranks);
  EXPECT_EQ(topology->levels.size(), expected.levels);
  EXPECT_FALSE(topology->description.empty());

  std::string text;
  llvm::raw_string_ostream(text) << toJSON(*topology);
  llvm::Expected<Topology> again = parseTopologyJSON(text, "round-trip");
  ASSERT_TRUE(static_cast<bool>(again)) << llvm::toString(again.takeError());
  EXPECT_EQ(*again, *topology);
}

INSTANTIATE_TEST_SUITE_P(Clusters, ReferenceClusterTest,
                         testing::Values(ClusterCase{"dgx1-v100", 32, 2},
                                         ClusterCase{"dgx-a100", 32, 2},
                                         ClusterCase{"dgx-h100", 32, 2},
                                         ClusterCase{"h800-deepseek", 32, 2},
                                         ClusterCase{"pcie-ethernet", 16, 2},
                                         ClusterCase{"two-tier-oversubscribed",
                                                     128, 3},
                                         ClusterCase{"gb200-nvl72", 144, 2}),
                         [](const testing::TestParamInfo<ClusterCase> &info) {
                           std::string name = info.param.name;
                           for (char &c : name)
                             if (!isalnum(static_cast<unsigned char>(c)))
                               c = '_';
                           return name;
                         });

TEST(TopologyTest, ClusterFigures) {
  llvm::Expected<Topology> v100 = loadTopologyFile(clusterPath("dgx1-v100"));
  ASSERT_TRUE(static_cast<bool>(v100)) << llvm::toString(v100.takeError());
  EXPECT_EQ(v100->levels[0].upBandwidthGBps, 150);
  EXPECT_EQ(v100->levels[1].sharing, LinkSharing::Shared);
  EXPECT_EQ(v100->levels[1].upBandwidthGBps, 50);

  llvm::Expected<Topology> a100 = loadTopologyFile(clusterPath("dgx-a100"));
  ASSERT_TRUE(static_cast<bool>(a100)) << llvm::toString(a100.takeError());
  EXPECT_EQ(a100->levels[1].sharing, LinkSharing::PerRank);
  EXPECT_EQ(a100->levels[1].downBandwidthGBps, 25);

  llvm::Expected<Topology> pcie =
      loadTopologyFile(clusterPath("pcie-ethernet"));
  ASSERT_TRUE(static_cast<bool>(pcie)) << llvm::toString(pcie.takeError());
  EXPECT_EQ(pcie->levels[1].upBandwidthGBps, 12.5);
  EXPECT_EQ(pcie->levels[1].latencyUs, 30);
}

TEST(TopologyTest, ParsesEveryField) {
  llvm::Expected<Topology> topology =
      parseTopologyJSON(R"({"name": "t", "description": "d", "levels": [)" +
                            std::string(kGoodLevel) +
                            R"(, {"name": "cluster", "fanout": 2, "up_GBps": 5,
                "down_GBps": 6, "latency_us": 0, "uplink": "shared"}]})",
                        "t.json");
  ASSERT_TRUE(static_cast<bool>(topology))
      << llvm::toString(topology.takeError());
  EXPECT_EQ(topology->description, "d");
  ASSERT_EQ(topology->levels.size(), 2u);
  const Level &node = topology->levels[0];
  EXPECT_EQ(node.name, "node");
  EXPECT_EQ(node.fanout, 4);
  EXPECT_EQ(node.upBandwidthGBps, 20);
  EXPECT_EQ(node.downBandwidthGBps, 25);
  EXPECT_EQ(node.latencyUs, 1.5);
  EXPECT_EQ(node.sharing, LinkSharing::PerRank);
  EXPECT_EQ(topology->levels[1].sharing, LinkSharing::Shared);
  EXPECT_EQ(topology->levels[1].latencyUs, 0);
  EXPECT_EQ(topology->numRanks(), 8);
}

TEST(TopologyTest, TreeArithmetic) {
  // 4 ranks per node, 2 nodes per leaf, 3 leaves: 24 ranks.
  Topology topology;
  topology.name = "t";
  for (auto [name, fanout] :
       {std::pair<const char *, int64_t>{"node", 4}, {"leaf", 2}, {"spine", 3}})
    topology.levels.push_back(
        Level{name, fanout, 10, 10, 1, LinkSharing::PerRank});
  ASSERT_FALSE(static_cast<bool>(verify(topology)));
  EXPECT_EQ(topology.numRanks(), 24);
  EXPECT_EQ(topology.ranksPerSubtree(0), 4);
  EXPECT_EQ(topology.ranksPerSubtree(1), 8);
  EXPECT_EQ(topology.ranksPerSubtree(2), 24);
  EXPECT_EQ(topology.lowestCommonLevel(5, 5), -1);
  EXPECT_EQ(topology.lowestCommonLevel(4, 7), 0);
  EXPECT_EQ(topology.lowestCommonLevel(3, 4), 1);
  EXPECT_EQ(topology.lowestCommonLevel(0, 7), 1);
  EXPECT_EQ(topology.lowestCommonLevel(7, 8), 2);
  EXPECT_EQ(topology.lowestCommonLevel(23, 0), 2);
}

TEST(TopologyTest, JSONErrors) {
  struct Case {
    std::string text;
    const char *message;
  };
  const Case cases[] = {
      {"{", "t.json: invalid JSON: [1:1, byte=1]: Expected object key"},
      {"[]", "t.json: (root): expected an object"},
      {"{}", "t.json: name: missing"},
      {R"({"name": 3, "levels": []})", "t.json: name: expected a string, "
                                       "got 3"},
      {R"({"name": "", "levels": [)" + std::string(kGoodLevel) + "]}",
       "t.json: name: must not be empty"},
      {R"({"name": "t"})", "t.json: levels: missing"},
      {R"({"name": "t", "levels": {}})",
       "t.json: levels: expected an array, got {}"},
      {R"({"name": "t", "levels": []})",
       "t.json: levels: expected at least one level"},
      {R"({"name": "t", "levels": [], "nmae": 1})",
       "t.json: (root): unknown field 'nmae'"},
      {R"({"name": "t", "description": null, "levels": []})",
       "t.json: description: expected a string, got null"},
      {withLevel("7"), "t.json: levels[0]: expected an object, got 7"},
      {withLevel(R"({"fanout": 4})"), "t.json: levels[0].name: missing"},
      {withLevel(R"({"name": "n", "fanout": 2.5})"),
       "t.json: levels[0].fanout: expected an integer, got 2.5"},
      {withLevel(R"({"name": "n", "fanout": "8"})"),
       "t.json: levels[0].fanout: expected an integer, got \"8\""},
      {withLevel(R"({"name": "n", "fanout": 4})"),
       "t.json: levels[0].up_GBps: missing"},
      {withLevel(R"({"name": "n", "fanout": 4, "up_GBps": "fast"})"),
       "t.json: levels[0].up_GBps: expected a number, got \"fast\""},
      {withLevel(R"({"name": "n", "fanout": 4, "up_GBps": 1, "down_GBps": 1,
                     "latency_us": 1, "uplink": "dedicated"})"),
       "t.json: levels[0].uplink: expected \"per-rank\" or \"shared\", got "
       "\"dedicated\""},
      {withLevel(R"({"name": "n", "fanot": 4, "fanout": 4, "up_GBps": 1,
                     "down_GBps": 1, "latency_us": 1, "uplink": "shared"})"),
       "t.json: levels[0]: unknown field 'fanot'"},
      {withLevel(R"({"name": "n", "fanout": 0, "up_GBps": 1, "down_GBps": 1,
                     "latency_us": 1, "uplink": "shared"})"),
       "t.json: levels[0].fanout: expected an integer in [1, 1048576], got "
       "0"},
      {withLevel(R"({"name": "n", "fanout": 4, "up_GBps": 0, "down_GBps": 1,
                     "latency_us": 1, "uplink": "shared"})"),
       "t.json: levels[0].up_GBps: expected a number > 0, got 0"},
      {withLevel(R"({"name": "n", "fanout": 4, "up_GBps": 1, "down_GBps": -2,
                     "latency_us": 1, "uplink": "shared"})"),
       "t.json: levels[0].down_GBps: expected a number > 0, got -2"},
      {withLevel(R"({"name": "n", "fanout": 4, "up_GBps": 1, "down_GBps": 1,
                     "latency_us": -1, "uplink": "shared"})"),
       "t.json: levels[0].latency_us: expected a number >= 0, got -1"},
      {withLevel(std::string(kGoodLevel) + ", " + kGoodLevel),
       "t.json: levels[1].name: duplicate level name 'node'"},
      {withLevel(R"({"name": "", "fanout": 4, "up_GBps": 1, "down_GBps": 1,
                     "latency_us": 1, "uplink": "shared"})"),
       "t.json: levels[0].name: must not be empty"},
      {withLevel(R"({"name": "a", "fanout": 4096, "up_GBps": 1, "down_GBps": 1,
                     "latency_us": 1, "uplink": "shared"},
                    {"name": "b", "fanout": 8192, "up_GBps": 1, "down_GBps": 1,
                     "latency_us": 1, "uplink": "shared"})"),
       "t.json: levels[1].fanout: the tree has more than 16777216 ranks"},
  };
  for (const Case &c : cases)
    EXPECT_EQ(parseError(c.text), c.message) << "input: " << c.text;
}

TEST(TopologyTest, ErrorsAreOneLine) {
  for (const char *text : {"{", "{\n\"name\": \n}", "[1,\n2"}) {
    std::string message = parseError(text);
    EXPECT_FALSE(message.empty());
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(TopologyTest, MissingFile) {
  llvm::Expected<Topology> topology =
      loadTopologyFile("/nonexistent/cluster.json");
  ASSERT_FALSE(static_cast<bool>(topology));
  EXPECT_EQ(llvm::toString(topology.takeError()),
            "/nonexistent/cluster.json: cannot read file: No such file or "
            "directory");
}

TEST(TopologyTest, VerifyRejectsNonFinite) {
  Topology topology;
  topology.name = "t";
  topology.levels.push_back(
      Level{"node", 2, std::nan(""), 1, 0, LinkSharing::PerRank});
  llvm::Error error = verify(topology);
  ASSERT_TRUE(static_cast<bool>(error));
  EXPECT_EQ(llvm::toString(std::move(error)),
            "levels[0].up_GBps: expected a number > 0, got nan");
}

TEST(TopologyTest, LinkSharingNames) {
  EXPECT_EQ(stringifyLinkSharing(LinkSharing::PerRank), "per-rank");
  EXPECT_EQ(stringifyLinkSharing(LinkSharing::Shared), "shared");
  EXPECT_EQ(parseLinkSharing("shared"), LinkSharing::Shared);
  EXPECT_EQ(parseLinkSharing("per_rank"), std::nullopt);
}

} // namespace
