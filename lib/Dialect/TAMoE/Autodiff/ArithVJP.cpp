//===- ArithVJP.cpp - Gradient rules of arith ops on tensors --------------===//
//
// arith's float ops applied to whole tensors (as tamoe-inject-topology-aux-
// loss scales and adds a loss). Scalars are never differentiated (only
// tensors are), so these rules only see tensors.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/Autodiff/Autodiff.h"
#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

using namespace mlir;
using namespace mlir::tamoe;

namespace {

/// add, sub, mul and neg of tensors: their elementwise gradients. Only
/// tensors are differentiated, so scalar arithmetic never gets here.
template <typename OpTy, ElementwiseKind Kind>
struct ElementwiseVJP
    : public VJPOpInterface::ExternalModel<ElementwiseVJP<OpTy, Kind>, OpTy> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b,
                         VJPContext &context) const {
    Value d = context.cotangent(op->getResult(0));
    if (!d)
      return success();
    Value y = op->getNumOperands() > 1 ? op->getOperand(1) : Value();
    return addElementwiseVJP(b, op->getLoc(), context, Kind, op->getOperand(0),
                             y, op->getResult(0), d);
  }
};

} // namespace

void mlir::tamoe::registerArithVJPExternalModels(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *context, arith::ArithDialect *) {
    arith::AddFOp::attachInterface<
        ElementwiseVJP<arith::AddFOp, ElementwiseKind::Add>>(*context);
    arith::SubFOp::attachInterface<
        ElementwiseVJP<arith::SubFOp, ElementwiseKind::Sub>>(*context);
    arith::MulFOp::attachInterface<
        ElementwiseVJP<arith::MulFOp, ElementwiseKind::Mul>>(*context);
    arith::NegFOp::attachInterface<
        ElementwiseVJP<arith::NegFOp, ElementwiseKind::Neg>>(*context);
  });
}
