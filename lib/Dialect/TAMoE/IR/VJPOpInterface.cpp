//===- VJPOpInterface.cpp - Reverse-mode gradient rules -------------------===//

#include "tamoe/Dialect/TAMoE/IR/VJPOpInterface.h"

#include "tamoe/Dialect/TAMoE/IR/VJPOpInterface.cpp.inc"
