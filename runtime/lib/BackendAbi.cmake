# The core (libtamoe_rt.so) and the cuda backend (libtamoe_rt_cuda.so) share
# C++ classes across dlopen (Backend.h): a library built from other versions
# of those headers would call through the wrong virtual slots. Both are
# compiled with TAMOE_RT_BACKEND_ABI, a hash of the headers that define the
# interface, and the core refuses a cuda backend whose hash differs.
function(tamoe_rt_backend_abi target)
  set(text "")
  foreach(header Backend.h Timeline.h ../include/tamoe_rt/tamoe_rt.h)
    set(path "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/${header}")
    file(READ "${path}" content)
    string(APPEND text "${content}")
    # Configure again when a header changes, so the hash follows it.
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${path}")
  endforeach()
  string(SHA256 hash "${text}")
  string(SUBSTRING "${hash}" 0 16 hash)
  target_compile_definitions(${target} PRIVATE
    TAMOE_RT_BACKEND_ABI="${hash}")
endfunction()
