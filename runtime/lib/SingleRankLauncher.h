//===- SingleRankLauncher.h - A world of one, without a launcher -*- C++
//-*-===//
//
// What drives libtamoe_rt_cuda.so's backend directly, without the core (its
// no-GPU test, the GPU benchmark's direct mode): one rank, no peers, so a
// broadcast is a no-op, an agreement is the local status and an all-to-all
// a copy.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_LIB_SINGLERANKLAUNCHER_H
#define TAMOE_RT_LIB_SINGLERANKLAUNCHER_H

#include "Backend.h"

namespace tamoe_rt {

class SingleRankLauncher final : public Launcher {
public:
  explicit SingleRankLauncher(double timeoutSeconds = 60)
      : timeout(timeoutSeconds) {}
  int64_t rank() const override { return 0; }
  int64_t numRanks() const override { return 1; }
  int64_t ranksPerNode() const override { return 1; }
  double timeoutSeconds() const override { return timeout; }
  Status broadcast(tamoe_rt_group_t, void *, size_t) override {
    return Status::success();
  }
  Status agreeOn(tamoe_rt_group_t, Status local,
                 const std::vector<Value> &) override {
    return local;
  }
  Status allToAllInts(tamoe_rt_group_t, const std::vector<int32_t> &send,
                      int perPeer, std::vector<int32_t> &recv,
                      const std::string &) override {
    recv.assign(send.begin(), send.end());
    recv.resize(size_t(perPeer), 0);
    return Status::success();
  }
  const Status &broken() const override { return ok; }

private:
  double timeout;
  Status ok;
};

} // namespace tamoe_rt

#endif // TAMOE_RT_LIB_SINGLERANKLAUNCHER_H
