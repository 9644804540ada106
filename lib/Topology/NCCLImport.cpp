//===- NCCLImport.cpp - A topology from NCCL's topology dump --------------===//
//
// NCCL_TOPO_DUMP_FILE holds one node as NCCL saw it:
//
//   <system version="1">
//     <cpu ...>
//       <pci busid=".." link_speed="16.0 GT/s PCIe" link_width="16">
//         <gpu dev="0" sm="90" rank="0" gdr="1">
//           <nvlink target="0000:a3:00.0" count="18" tclass="0x068000"/>
//         </gpu>
//       </pci>
//       <nic> <net name="mlx5_0" dev="0" speed="400000" latency="0" .../> </nic>
//     </cpu>
//   </system>
//
// The node becomes level 0: fanout = its GPUs, bandwidth per GPU from its
// NVLinks (links x NCCL's per-link figure for the GPU's generation) or else
// from its PCIe link. The NICs become level 1: `speed` is in Mb/s; with at
// least one NIC per GPU each rank has its share (per-rank), with fewer the
// node shares them. A node's GPUs are not always alike, so the slowest sets
// the level's bandwidth. XML is parsed with libxml2, without network access.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Topology/NCCLImport.h"
#include "tamoe/Support/Messages.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <algorithm>
#include <cmath>
#include <memory>

using namespace llvm;
using namespace tamoe::topology;

namespace {
/// The attribute `name` of `node`, empty when it is missing.
std::string attribute(xmlNode *node, const char *name) {
  xmlChar *value = xmlGetProp(node, reinterpret_cast<const xmlChar *>(name));
  if (!value)
    return "";
  std::string text(reinterpret_cast<const char *>(value));
  xmlFree(value);
  return text;
}

bool isElement(xmlNode *node, StringRef name) {
  return node->type == XML_ELEMENT_NODE &&
         name == reinterpret_cast<const char *>(node->name);
}

/// Every element called `name` below `root`, in document order.
void collect(xmlNode *root, StringRef name, SmallVectorImpl<xmlNode *> &out) {
  for (xmlNode *child = root->children; child; child = child->next) {
    if (child->type != XML_ELEMENT_NODE)
      continue;
    if (isElement(child, name))
      out.push_back(child);
    collect(child, name, out);
  }
}

/// A value quoted in a message: escaped as in a JSON string, so that a
/// character reference such as &#10; cannot break the message's line, and
/// cut on a UTF-8 character boundary so that the line stays readable.
std::string quoted(StringRef text) {
  std::string escaped =
      formatv("{0}", json::Value(json::isUTF8(text) ? text.str()
                                                    : json::fixUTF8(text)))
          .str();
  // Without the double quotes JSON adds.
  escaped = escaped.substr(1, escaped.size() - 2);
  if (escaped.size() > 40) {
    size_t cut = 40;
    while (cut > 0 && (static_cast<unsigned char>(escaped[cut]) & 0xC0) == 0x80)
      --cut;
    escaped = escaped.substr(0, cut) + "...";
  }
  return "'" + escaped + "'";
}

/// NCCL's bandwidth of one NVLink, GB/s per direction, by compute capability
/// (src/graph/topo.h: SM60 18, SM70 and SM80 20, SM86 12, SM90 20.6,
/// SM100 40.1).
double nvlinkGBps(int64_t sm) {
  if (sm >= 100)
    return 40.1;
  if (sm >= 90)
    return 20.6;
  if (sm == 86)
    return 12.0;
  if (sm >= 70)
    return 20.0;
  return 18.0;
}

struct Reader {
  StringRef source;
  std::optional<std::string> error;

  void fail(const Twine &where, const Twine &reason) {
    if (!error)
      error = (source + ": " + where + ": " + reason).str();
  }

  /// An integer attribute in [`least`, `most`].
  std::optional<int64_t> integer(xmlNode *node, const char *name,
                                 const Twine &where, int64_t least,
                                 int64_t most, StringRef meaning) {
    std::string text = attribute(node, name);
    int64_t value;
    bool parsed = !StringRef(text).trim().getAsInteger(10, value);
    if (!parsed || value < least || value > most) {
      bool tooLarge = parsed && value > most;
      fail(where + "." + name,
           formatv("expected an integer {0} {1}{2}, got {3}",
                   tooLarge ? "<=" : ">=", tooLarge ? most : least, meaning,
                   text.empty() ? "nothing" : quoted(text)));
      return std::nullopt;
    }
    return value;
  }
};
} // namespace

Expected<Topology> tamoe::topology::importNCCLTopology(StringRef text,
                                                       StringRef source,
                                                       int64_t nodes,
                                                       StringRef name) {
  auto fail = [&](const Twine &message) -> Expected<Topology> {
    return createStringError(inconvertibleErrorCode(), message);
  };
  if (nodes < 1)
    return fail(formatv("nodes: expected >= 1, got {0}", nodes));
  std::unique_ptr<xmlDoc, void (*)(xmlDoc *)> document(
      xmlReadMemory(text.data(), int(std::min<size_t>(text.size(), INT32_MAX)),
                    source.str().c_str(), nullptr,
                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING),
      xmlFreeDoc);
  if (!document) {
    const xmlError *error = xmlGetLastError();
    std::string reason =
        error && error->message ? StringRef(error->message).trim().str()
                                : std::string("unreadable");
    return fail(formatv("{0}: not XML: {1} (line {2})", source, reason,
                        error ? error->line : 0));
  }
  xmlNode *root = xmlDocGetRootElement(document.get());
  if (!root || !isElement(root, "system"))
    return fail(formatv("{0}: expected a <system> root element, got {1}",
                        source,
                        root ? "<" + std::string(reinterpret_cast<const char *>(
                                         root->name)) +
                                   ">"
                             : std::string("none")));

  Reader reader{source, std::nullopt};
  SmallVector<xmlNode *> gpus, nets;
  collect(root, "gpu", gpus);
  collect(root, "net", nets);
  if (gpus.empty())
    return fail(source + ": no <gpu> element: NCCL saw no GPU on this node");

  // Level 0: the slowest GPU's bandwidth to the others.
  double intraGBps = INFINITY;
  bool allNVLink = true;
  std::string intraHow;
  for (auto [index, gpu] : llvm::enumerate(gpus)) {
    std::string where = formatv("gpu[{0}]", index);
    SmallVector<xmlNode *> links;
    for (xmlNode *child = gpu->children; child; child = child->next)
      if (isElement(child, "nvlink"))
        links.push_back(child);
    double gbps;
    std::string how;
    if (!links.empty()) {
      std::optional<int64_t> sm =
          reader.integer(gpu, "sm", where, 60, 1000,
                         " (compute capability x 10, NVLink needs 60)");
      int64_t count = 0;
      for (auto [linkIndex, link] : llvm::enumerate(links))
        if (std::optional<int64_t> n = reader.integer(
                link, "count", formatv("{0}.nvlink[{1}]", where, linkIndex), 1,
                64, ""))
          count += *n;
      if (reader.error)
        return fail(*reader.error);
      gbps = double(count) * nvlinkGBps(*sm);
      how = formatv("{0} NVLinks x {1} GB/s (sm {2})", count,
                    tamoe::formatNumber(nvlinkGBps(*sm)), *sm);
    } else {
      allNVLink = false;
      xmlNode *pci = gpu->parent;
      if (!pci || !isElement(pci, "pci") ||
          attribute(pci, "link_speed").empty())
        return fail(source + ": " + where +
                    ": no <nvlink> and no enclosing <pci> element with a "
                    "link_speed: cannot tell its bandwidth");
      std::string speed = attribute(pci, "link_speed");
      double rate;
      StringRef rest = StringRef(speed).trim();
      auto [number, unit] = rest.split(' ');
      if (number.getAsDouble(rate) || !(rate > 0 && rate <= 1e3) ||
          !unit.trim().starts_with("GT/s"))
        return fail(source + ": " + where + ": pci link_speed: expected "
                    "'<rate> GT/s PCIe', got " + quoted(speed));
      std::optional<int64_t> width =
          reader.integer(pci, "link_width", where + ": pci", 0, 32, "");
      if (reader.error)
        return fail(*reader.error);
      // A virtual machine reports width 0: take the x16 of a GPU slot.
      int64_t lanes = *width ? *width : 16;
      // 8b/10b coding up to 5 GT/s (PCIe 1 and 2), 128b/130b above.
      double coding = rate <= 5 ? 0.8 : 128.0 / 130.0;
      gbps = rate * double(lanes) * coding / 8;
      how = formatv("PCIe {0} GT/s x{1}{2}: {3} GB/s",
                    tamoe::formatNumber(rate), lanes,
                    *width ? "" : " (width 0 reported, x16 assumed)",
                    formatv("{0:f1}", gbps));
    }
    // The description names the GPU whose bandwidth the level takes.
    if (gbps < intraGBps) {
      intraGBps = gbps;
      intraHow = how;
    }
  }

  Topology topology;
  topology.name = name.str();
  int64_t perNode = int64_t(gpus.size());
  Level node{"node", perNode, intraGBps, intraGBps, allNVLink ? 3.0 : 5.0,
             LinkSharing::PerRank, allNVLink ? 0.02 : 0.1};
  topology.levels.push_back(node);

  // Level 1: the NICs.
  double nicGBps = 0, netLatencyUs = 0;
  for (auto [index, net] : llvm::enumerate(nets)) {
    std::string where = formatv("net[{0}]", index);
    std::string speed = attribute(net, "speed");
    double megabits;
    // A topology's bandwidths are in [0.001, 100000] GB/s.
    if (StringRef(speed).trim().getAsDouble(megabits) || !(megabits >= 8) ||
        !(megabits <= 8e8))
      return fail(source + ": " + where +
                  ".speed: expected a number of Mb/s "
                  "in [8, 800000000], got " +
                  (speed.empty() ? "nothing" : quoted(speed)));
    nicGBps += megabits / 8000;
    // NCCL writes 0 when it does not know the latency; anything but a
    // number of microseconds a topology accepts is an error here rather
    // than silently the assumed figure, or a level's range further on.
    std::string latency = attribute(net, "latency");
    double us;
    if (!latency.empty() && (StringRef(latency).trim().getAsDouble(us) ||
                             !(us >= 0) || !(us <= 1e6)))
      return fail(source + ": " + where +
                  ".latency: expected a number of microseconds in [0, "
                  "1000000], got " +
                  quoted(latency));
    if (!latency.empty())
      netLatencyUs = std::max(netLatencyUs, us);
  }
  std::string interHow = "no NIC";
  if (!nets.empty()) {
    bool perRank = int64_t(nets.size()) >= perNode;
    // NCCL reports 0 when it does not know; 7 us is InfiniBand's range.
    double latencyUs = netLatencyUs > 0 ? netLatencyUs : 7.0;
    double gbps = perRank ? nicGBps / double(perNode) : nicGBps;
    topology.levels.push_back(Level{
        "cluster", nodes, gbps, gbps, latencyUs,
        perRank ? LinkSharing::PerRank : LinkSharing::Shared, 0.02});
    interHow = formatv("{0} NIC{1}, {2} GB/s in all, {3}; latency {4} us{5}",
                       nets.size(), nets.size() == 1 ? "" : "s",
                       formatv("{0:f1}", nicGBps),
                       perRank ? "one or more per GPU (per-rank)"
                               : "shared by the node's GPUs",
                       tamoe::formatNumber(latencyUs),
                       netLatencyUs > 0 ? " (from the dump)" : " (assumed)");
  } else if (nodes > 1) {
    return fail(formatv("{0}: no <net> element: nothing joins this node to "
                        "the {1} others (import with --nodes 1, or a dump "
                        "from a node with NICs)",
                        source, nodes - 1));
  }
  topology.description =
      formatv("Imported from NCCL's topology dump {0}: {1} GPU{2} per node, "
              "{3}; {4}; {5} node{6}. Latencies: {7} us in the node (assumed), "
              "per-message overhead {8} us in the node (docs/cost-model.md, "
              "Latency).",
              source, perNode, perNode == 1 ? "" : "s", intraHow, interHow,
              nodes, nodes == 1 ? "" : "s", tamoe::formatNumber(node.latencyUs),
              tamoe::formatNumber(node.perMessageUs))
          .str();
  // What is still out of range comes from several elements or --nodes.
  if (Error error = verify(topology))
    return fail(source + ": the imported topology's " +
                toString(std::move(error)) + " (from " + intraHow + "; " +
                interHow + "; " + Twine(nodes) + " nodes)");
  return topology;
}
