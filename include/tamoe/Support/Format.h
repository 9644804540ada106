//===- Format.h - Numbers in messages ---------------------------*- C++ -*-===//

#ifndef TAMOE_SUPPORT_FORMAT_H
#define TAMOE_SUPPORT_FORMAT_H

#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

namespace tamoe {

/// Formats a number for a message as a person writes it ("12.5", "0",
/// "1e+06"), not with a fixed number of decimals or MLIR's "1.250000e+01".
inline std::string formatNumber(double value) {
  std::string text;
  llvm::raw_string_ostream(text) << llvm::format("%g", value);
  return text;
}

} // namespace tamoe

#endif // TAMOE_SUPPORT_FORMAT_H
