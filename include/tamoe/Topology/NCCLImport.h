//===- NCCLImport.h - A topology from NCCL's topology dump ------*- C++ -*-===//
//
// NCCL writes the node it detected to the file named by NCCL_TOPO_DUMP_FILE:
// an XML tree of CPUs, PCI switches, GPUs with their NVLinks, and NICs with
// their speeds. importNCCLTopology turns one such node into a two-level
// topology: the node (its GPUs, joined by NVLink or PCIe) and a cluster of
// `nodes` copies of it joined by the node's NICs (docs/topology.md, "From
// NCCL's topology dump").
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_TOPOLOGY_NCCLIMPORT_H
#define TAMOE_TOPOLOGY_NCCLIMPORT_H

#include "tamoe/Topology/Topology.h"

namespace tamoe::topology {

/// Parses NCCL's topology XML (`text`, named `source` in messages) into a
/// verified topology of `nodes` such nodes named `name`. Errors are one line,
/// "<source>: <element or attribute>: <reason>".
llvm::Expected<Topology> importNCCLTopology(llvm::StringRef text,
                                            llvm::StringRef source,
                                            int64_t nodes,
                                            llvm::StringRef name);

} // namespace tamoe::topology

#endif // TAMOE_TOPOLOGY_NCCLIMPORT_H
