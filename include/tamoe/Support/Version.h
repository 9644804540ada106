//===- Version.h - tamoe's version for --version ----------------*- C++ -*-===//

#ifndef TAMOE_SUPPORT_VERSION_H
#define TAMOE_SUPPORT_VERSION_H

#include "tamoe/Support/VersionInfo.h"

#include "llvm/Support/raw_ostream.h"

namespace tamoe {

/// What --version prints after LLVM's own lines (register it with
/// llvm::cl::AddExtraVersionPrinter): "tamoe version 0.1.0 (git 1a2b3c...)".
inline void printVersion(llvm::raw_ostream &os) {
  os << "tamoe version " << TAMOE_VERSION << " (git " << TAMOE_GIT_REVISION
     << ")\n";
}

} // namespace tamoe

#endif // TAMOE_SUPPORT_VERSION_H
