//===- TAMoEEnums.td - tamoe enumerations ------------------*- tablegen -*-===//

#ifndef TAMOE_DIALECT_TAMOE_IR_TAMOEENUMS_TD
#define TAMOE_DIALECT_TAMOE_IR_TAMOEENUMS_TD

include "mlir/IR/EnumAttr.td"

def TAMoE_ScoreFunction : I32EnumAttr<"ScoreFunction",
    "function that turns router logits into scores", [
      I32EnumAttrCase<"Softmax", 0, "softmax">,
      I32EnumAttrCase<"Sigmoid", 1, "sigmoid">
    ]> {
  let cppNamespace = "::mlir::tamoe";
}

def TAMoE_DropPolicy : I32EnumAttr<"DropPolicy",
    "which assignments an expert over capacity drops", [
      I32EnumAttrCase<"Position", 0, "position">,
      I32EnumAttrCase<"Probability", 1, "probability">
    ]> {
  let cppNamespace = "::mlir::tamoe";
}

def TAMoE_AuxLossKind : I32EnumAttr<"AuxLossKind",
    "form of the load-balancing auxiliary loss", [
      I32EnumAttrCase<"Switch", 0, "switch">,
      I32EnumAttrCase<"Topology", 1, "topology">
    ]> {
  let cppNamespace = "::mlir::tamoe";
}

def TAMoE_LinkSharing : I32EnumAttr<"LinkSharing",
    "whether a link's bandwidth is per rank or shared by its subtree", [
      I32EnumAttrCase<"PerRank", 0, "per_rank">,
      I32EnumAttrCase<"Shared", 1, "shared">
    ]> {
  let cppNamespace = "::mlir::tamoe";
}

def TAMoE_PlanPolicy : I32EnumAttr<"PlanPolicy",
    "policy that produced a dispatch plan", [
      I32EnumAttrCase<"Uniform", 0, "uniform">,
      I32EnumAttrCase<"TAMoE", 1, "tamoe">,
      I32EnumAttrCase<"Optimal", 2, "optimal">,
      I32EnumAttrCase<"FasterMoE", 3, "fastermoe">,
      I32EnumAttrCase<"NodeLimited", 4, "node_limited">,
      I32EnumAttrCase<"Box", 5, "box">
    ]> {
  let cppNamespace = "::mlir::tamoe";
}

#endif // TAMOE_DIALECT_TAMOE_IR_TAMOEENUMS_TD
