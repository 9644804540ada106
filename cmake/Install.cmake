# `cmake --install`: headers (with the generated .inc files and the .td
# files), libraries, tools, the plugin and the runtime, and the package
# TAMoEConfig.cmake for find_package(TAMoE).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)


install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/tamoe
                  ${PROJECT_SOURCE_DIR}/include/tamoe-c
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h" PATTERN "*.td")
# The generated ones: the .inc files and Support/VersionInfo.h, which
# Support/Version.h includes.
install(DIRECTORY ${PROJECT_BINARY_DIR}/include/tamoe
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.inc" PATTERN "*.h"
        PATTERN "CMakeFiles" EXCLUDE)

set(tamoe_libraries MLIRTAMoE MLIRTAMoEAutodiff MLIRTAMoETransforms TAMoEPlanner
    TAMoETopology
    TAMoECAPI)
if(TAMOE_BUILD_RUNTIME)
  list(APPEND tamoe_libraries tamoe_rt)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/runtime/include/tamoe_rt
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  # tamoe-topo calibrate and validate run it from tamoe-topo's directory.
  foreach(tool tamoe-reference tamoe-topo-measure)
    if(TARGET ${tool})
      install(TARGETS ${tool} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
    endif()
  endforeach()
endif()
install(TARGETS ${tamoe_libraries} EXPORT TAMoETargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS tamoe-opt tamoe-topo tamoe-topo-mlir RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# Installed tools and the plugin find libLLVM.so / libMLIR.so where they
# were linked from (Debian's /usr/lib/llvm-22/lib is not in ld.so's cache).
foreach(target tamoe-opt tamoe-topo-mlir tamoe-reference tamoe-topo-measure
        TAMoEPlugin)
  if(TARGET ${target})
    set_property(TARGET ${target} APPEND PROPERTY INSTALL_RPATH
                 "${LLVM_LIBRARY_DIR}")
  endif()
endforeach()
install(TARGETS TAMoEPlugin LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})

install(EXPORT TAMoETargets NAMESPACE TAMoE::
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tamoe)
configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/TAMoEConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cmake/TAMoEConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tamoe
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_BINDIR CMAKE_INSTALL_LIBDIR)
# find_package(TAMoE 0.1) compares with project()'s version; a later
# minor version may change the runtime's ABI, so only the same one matches.
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/cmake/TAMoEConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cmake/TAMoEConfig.cmake
              ${PROJECT_BINARY_DIR}/cmake/TAMoEConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tamoe)
