//===- Precision.cpp - Rows of bf16 and f16 on f32 primitives -------------===//

#include "Precision.h"

using namespace tamoe_rt;

intptr_t tamoe_rt::dtypeBytes(int type) {
  switch (type) {
  case TAMOE_RT_F32:
    return 4;
  case TAMOE_RT_BF16:
  case TAMOE_RT_F16:
    return 2;
  }
  return 0;
}

F32Staging::~F32Staging() {
  for (void *buffer : buffers)
    (void)backend.free(buffer);
}

float *F32Staging::scratch(intptr_t elements) {
  void *pointer = nullptr;
  if (!failure.ok())
    return nullptr;
  // The entry points have checked that elements * 4 bytes fit.
  Status status = backend.alloc(elements * intptr_t(sizeof(float)), &pointer);
  if (!status.ok()) {
    failure = status;
    return nullptr;
  }
  buffers.push_back(pointer);
  return static_cast<float *>(pointer);
}

const float *F32Staging::in(tamoe_rt_dtype_t type, const void *data,
                            intptr_t elements) {
  if (type == TAMOE_RT_F32 || !data || elements <= 0)
    return static_cast<const float *>(data);
  float *staged = scratch(elements);
  if (staged && failure.ok())
    failure = backend.convert(type, data, TAMOE_RT_F32, staged, elements);
  return staged;
}

float *F32Staging::out(tamoe_rt_dtype_t type, void *data, intptr_t elements) {
  if (type == TAMOE_RT_F32 || !data || elements <= 0)
    return static_cast<float *>(data);
  float *staged = scratch(elements);
  if (staged)
    outputs.push_back({staged, data, type, elements});
  return staged;
}

Status F32Staging::run(const std::function<Status()> &primitive) {
  if (!failure.ok())
    return failure;
  Status status = primitive();
  for (const Output &output : outputs)
    if (status.ok())
      status = backend.convert(TAMOE_RT_F32, output.staged, output.type,
                               output.data, output.elements);
  return status;
}
