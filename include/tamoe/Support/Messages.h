//===- Messages.h - Shared pieces of user-facing messages -------*- C++ -*-===//

#ifndef TAMOE_SUPPORT_MESSAGES_H
#define TAMOE_SUPPORT_MESSAGES_H

#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace tamoe {

/// The shortest text that reads back as `value`, so that messages quote
/// "0.1" as written rather than "0.10000000000000001" or "1.000000e-01".
inline std::string formatNumber(double value) {
  // A whole number as one ("200000", not the shorter "2e+05"); -0 keeps its
  // sign.
  if (std::abs(value) < 1e15 && value == double(int64_t(value)) &&
      !(value == 0 && std::signbit(value)))
    return std::to_string(int64_t(value));
  std::string text;
  for (int precision = 1; precision <= 17; ++precision) {
    text.clear();
    llvm::raw_string_ostream(text) << llvm::format("%.*g", precision, value);
    if (std::strtod(text.c_str(), nullptr) == value)
      break;
  }
  return text;
}

/// `value` with a fixed number of decimals ("412.5" for one), for times.
inline std::string formatFixed(double value, int decimals) {
  std::string text;
  llvm::raw_string_ostream(text) << llvm::format("%.*f", decimals, value);
  return text;
}

/// An error about one field of an input: "<field>: <reason>", one line.
inline llvm::Error fieldError(const llvm::Twine &field,
                              const llvm::Twine &reason) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 field + ": " + reason);
}

} // namespace tamoe

#endif // TAMOE_SUPPORT_MESSAGES_H
