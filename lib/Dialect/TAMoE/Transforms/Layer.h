//===- Layer.h - Finding the parts of an MoE layer --------------*- C++ -*-===//
//
// The passes look at an MoE layer as the ops around its tamoe.dispatch: the
// gate that chose the experts, the all-to-all that sends the rows, and the
// all-to-all that brings them back. These helpers find them.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_LIB_DIALECT_TAMOE_TRANSFORMS_LAYER_H
#define TAMOE_LIB_DIALECT_TAMOE_TRANSFORMS_LAYER_H

#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"
#include "tamoe/Planner/Policies.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/SymbolTable.h"

namespace mlir::tamoe {

namespace planner = ::tamoe::planner;

/// The all-to-all that sends the dispatch's rows with its counts, or null.
AllToAllOp findSendingAllToAll(DispatchOp dispatch);

/// The dispatch whose counts drive `exchange`: directly, through the counts
/// an earlier all-to-all received (the return trip) or through a chunk of
/// them (tamoe-overlap). Null if none. `parts`, when given, gets how many
/// parts the chunks on the way cut the dispatch's rows into (1 if none).
DispatchOp findLayerDispatch(AllToAllOp exchange, int64_t *parts = nullptr);

/// Whether `mode` is one of tamoe-hierarchical-all-to-all's (auto, flat,
/// hierarchical); an error on `module` naming `pass` if not.
LogicalResult verifyExchangeMode(Operation *module, StringRef pass,
                                 StringRef mode);

/// Ranks in the group of `exchange` (the product of its grid axes); nullopt
/// when the grid is missing or has a dynamic axis.
std::optional<int64_t> groupSize(AllToAllOp exchange,
                                 SymbolTableCollection &symbols);

/// Why `exchange` (on `grid`) must stay flat on `tree`, or nullopt when the
/// hierarchical schedule can replace it: that needs two levels or more, and
/// the exchange over all of a grid whose last axis is a node of the tree and
/// whose ranks are the tree's.
std::optional<std::string> whyFlat(AllToAllOp exchange, shard::GridOp grid,
                                   const ::tamoe::topology::Topology &tree,
                                   SymbolTableCollection &symbols);

/// Bytes of one element; nullopt for types without a bit width.
std::optional<int64_t> elementBytes(Type type);

/// The nodes a token of `dispatch` may reach when its gate limits them (a
/// tamoe.gate whose groups are the topology's nodes, `groups N keep M`);
/// nullopt otherwise.
std::optional<int64_t>
nodesPerToken(DispatchOp dispatch, const ::tamoe::topology::Topology &topology);

/// The planner's pattern for the layer of `dispatch`: its plan's per-level
/// shares (uniform when it has none, or `dispatch` is null) and the nodes
/// its gate lets a token reach.
planner::Pattern patternOf(DispatchOp dispatch,
                           const ::tamoe::topology::Topology &topology);

PlanPolicy toPlanPolicy(planner::Policy policy);

/// Fails, with notes at `other` and `gate`, when `dispatch` (planned `plan`)
/// and `other` (planned `otherPlan`), both routed by `gate`, were planned
/// for different patterns: one router realises one dispatch pattern, and
/// its topology loss weighs the experts by one plan.
LogicalResult verifySharedRouter(GateOp gate, DispatchOp dispatch,
                                 DispatchPlanAttr plan, DispatchOp other,
                                 DispatchPlanAttr otherPlan);

} // namespace mlir::tamoe

#endif // TAMOE_LIB_DIALECT_TAMOE_TRANSFORMS_LAYER_H
