//===- NCCLImportTest.cpp - Topologies from NCCL's topology dump ----------===//

#include "tamoe/Topology/NCCLImport.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include "gtest/gtest.h"

using namespace tamoe::topology;

namespace {

std::string readFile(llvm::StringRef relative) {
  llvm::SmallString<128> path(TAMOE_SOURCE_DIR);
  llvm::sys::path::append(path, relative);
  auto buffer = llvm::MemoryBuffer::getFile(path);
  EXPECT_TRUE(static_cast<bool>(buffer)) << path.str().str();
  return buffer ? (*buffer)->getBuffer().str() : std::string();
}

Topology importOrDie(llvm::StringRef text, int64_t nodes) {
  llvm::Expected<Topology> topology =
      importNCCLTopology(text, "dump.xml", nodes, "imported");
  EXPECT_TRUE(static_cast<bool>(topology))
      << llvm::toString(topology.takeError());
  return topology ? *topology : Topology();
}

std::string importError(llvm::StringRef text, int64_t nodes = 4) {
  llvm::Expected<Topology> topology =
      importNCCLTopology(text, "dump.xml", nodes, "imported");
  if (topology)
    return "(no error)";
  return llvm::toString(topology.takeError());
}

// 8 GPUs, 18 NVLinks each at NCCL's 20.6 GB/s for sm 90; one 400 Gb/s NIC
// per GPU (50 GB/s per rank).
TEST(NCCLImportTest, HGXWithANICPerGPU) {
  Topology topology =
      importOrDie(readFile("configs/nccl-topo/hgx-h100-8nic.xml"), 4);
  ASSERT_EQ(topology.levels.size(), 2u);
  EXPECT_EQ(topology.name, "imported");
  EXPECT_EQ(topology.levels[0].fanout, 8);
  EXPECT_DOUBLE_EQ(topology.levels[0].upBandwidthGBps, 18 * 20.6);
  EXPECT_EQ(topology.levels[1].fanout, 4);
  EXPECT_DOUBLE_EQ(topology.levels[1].upBandwidthGBps, 50);
  EXPECT_EQ(topology.levels[1].sharing, LinkSharing::PerRank);
  EXPECT_EQ(topology.numRanks(), 32);
}

// Fewer NICs than GPUs: the node shares the 4 x 50 GB/s.
TEST(NCCLImportTest, HGXWithANICPerTwoGPUs) {
  Topology topology =
      importOrDie(readFile("configs/nccl-topo/hgx-h100-4nic.xml"), 2);
  EXPECT_DOUBLE_EQ(topology.levels[1].upBandwidthGBps, 200);
  EXPECT_EQ(topology.levels[1].sharing, LinkSharing::Shared);
}

// No NVLink: PCIe Gen4 x16, 16 GT/s x 16 lanes x 128/130 / 8 = 31.5 GB/s;
// one 100 GbE NIC shared by 4 GPUs.
TEST(NCCLImportTest, PCIeOnly) {
  Topology topology =
      importOrDie(readFile("configs/nccl-topo/pcie-4gpu-100gbe.xml"), 3);
  EXPECT_EQ(topology.levels[0].fanout, 4);
  EXPECT_NEAR(topology.levels[0].upBandwidthGBps, 16.0 * 16 * 128 / 130 / 8,
              1e-12);
  EXPECT_DOUBLE_EQ(topology.levels[1].upBandwidthGBps, 12.5);
  EXPECT_EQ(topology.levels[1].sharing, LinkSharing::Shared);
  EXPECT_EQ(topology.levels[1].fanout, 3);
}

// The real dump of a one-GPU H200 VM: link_width 0 (x16 assumed), one
// 10 Gb/s Ethernet NIC.
TEST(NCCLImportTest, RealSingleGPUDump) {
  Topology topology = importOrDie(
      readFile("test/Topology/Inputs/nccl-h200-single-gpu-vm.xml"), 2);
  EXPECT_EQ(topology.levels[0].fanout, 1);
  EXPECT_NEAR(topology.levels[0].upBandwidthGBps, 32.0 * 16 * 128 / 130 / 8,
              1e-12);
  EXPECT_DOUBLE_EQ(topology.levels[1].upBandwidthGBps, 1.25);
  EXPECT_NE(topology.description.find("x16 assumed"), std::string::npos);
}

// GPUs that differ: the slowest sets the level, and the description names
// it rather than whichever GPU came last.
TEST(NCCLImportTest, SlowestGPUSetsTheNode) {
  Topology topology = importOrDie(
      R"(<system version="1"><cpu>)"
      R"(<gpu sm="90"><nvlink count="12"/></gpu>)"
      R"(<gpu sm="90"><nvlink count="18"/></gpu>)"
      R"(</cpu></system>)",
      1);
  EXPECT_DOUBLE_EQ(topology.levels[0].upBandwidthGBps, 12 * 20.6);
  EXPECT_NE(topology.description.find("12 NVLinks x 20.6 GB/s"),
            std::string::npos)
      << topology.description;
}

TEST(NCCLImportTest, Errors) {
  const std::string gpuOnPCIe =
      R"(<pci link_speed="16.0 GT/s PCIe" link_width="16"><gpu sm="80"/></pci>)";
  const std::string net = R"(<nic><net speed="100000"/></nic>)";
  auto system = [](const std::string &body) {
    return "<system version=\"1\"><cpu>" + body + "</cpu></system>";
  };
  EXPECT_EQ(importError("<system><cpu>"),
            "dump.xml: not XML: Premature end of data in tag cpu line 1 "
            "(line 1)");
  EXPECT_EQ(importError("<topology/>"),
            "dump.xml: expected a <system> root element, got <topology>");
  EXPECT_EQ(importError(system(net)),
            "dump.xml: no <gpu> element: NCCL saw no GPU on this node");
  EXPECT_EQ(importError(system(R"(<gpu sm="80"/>)" + net)),
            "dump.xml: gpu[0]: no <nvlink> and no enclosing <pci> element "
            "with a link_speed: cannot tell its bandwidth");
  EXPECT_EQ(
      importError(system(R"(<pci link_speed="fast" link_width="16"><gpu/></pci>)" + net)),
      "dump.xml: gpu[0]: pci link_speed: expected '<rate> GT/s PCIe', got "
      "'fast'");
  EXPECT_EQ(importError(system(
                R"(<pci link_speed="8.0 GT/s PCIe" link_width="x8"><gpu/></pci>)" +
                net)),
            "dump.xml: gpu[0]: pci.link_width: expected an integer >= 0, got "
            "'x8'");
  EXPECT_EQ(importError(system(R"(<gpu sm="52"><nvlink count="4"/></gpu>)" +
                               net)),
            "dump.xml: gpu[0].sm: expected an integer >= 60 (compute "
            "capability x 10, NVLink needs 60), got '52'");
  EXPECT_EQ(importError(system(
                R"(<gpu sm="90"><nvlink count="4"/><nvlink count="0"/></gpu>)" +
                net)),
            "dump.xml: gpu[0].nvlink[1].count: expected an integer >= 1, "
            "got '0'");
  EXPECT_EQ(importError(system(gpuOnPCIe + R"(<nic><net speed="-5"/></nic>)")),
            "dump.xml: net[0].speed: expected a number of Mb/s in [8, "
            "800000000], got '-5'");
  EXPECT_EQ(importError(system(gpuOnPCIe + R"(<nic><net/></nic>)")),
            "dump.xml: net[0].speed: expected a number of Mb/s in [8, "
            "800000000], got nothing");
  EXPECT_EQ(importError(system(gpuOnPCIe)),
            "dump.xml: no <net> element: nothing joins this node to the 3 "
            "others (import with --nodes 1, or a dump from a node with NICs)");
  EXPECT_EQ(importError(system(gpuOnPCIe + net), 0),
            "nodes: expected >= 1, got 0");
  // A NIC of 10^12 Mb/s (or 10^-300) is outside every physical range.
  EXPECT_EQ(
      importError(system(gpuOnPCIe + R"(<nic><net speed="1e12"/></nic>)")),
      "dump.xml: net[0].speed: expected a number of Mb/s in [8, "
      "800000000], got '1e12'");
  EXPECT_EQ(
      importError(system(gpuOnPCIe + R"(<nic><net speed="1e-300"/></nic>)")),
      "dump.xml: net[0].speed: expected a number of Mb/s in [8, "
      "800000000], got '1e-300'");
  // Counts whose sum overflowed int64 (and gave -41.2 GB/s).
  EXPECT_EQ(
      importError(system(
          R"(<gpu sm="90"><nvlink count="9223372036854775807"/></gpu>)" + net)),
      "dump.xml: gpu[0].nvlink[0].count: expected an integer <= 64, got "
      "'9223372036854775807'");
  // A value in range that only several elements together push out of it:
  // the derivation is named with the field.
  std::string links;
  for (int i = 0; i < 400; ++i)
    links += R"(<nvlink count="64"/>)";
  EXPECT_EQ(importError(system(R"(<gpu sm="90">)" + links + "</gpu>" + net)),
            "dump.xml: the imported topology's levels[0].up_GBps: expected a "
            "number of GB/s in [0.001, 100000], got 527360 (from 25600 "
            "NVLinks x 20.6 GB/s (sm 90); 1 NIC, 12.5 GB/s in all, one or more "
            "per GPU (per-rank); latency 7 us (assumed); 4 nodes)");
  // One node without NICs is a single level.
  Topology alone = importOrDie(system(gpuOnPCIe), 1);
  EXPECT_EQ(alone.levels.size(), 1u);
}

} // namespace
