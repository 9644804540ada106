# -*- Python -*-
import os
import shutil
import sys

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "TAMOE"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Inputs", "Unit", "CMakeLists.txt", "tamoe-capi.c",
                   "lit.cfg.py",
                   "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.tamoe_obj_root, "test")

config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%tamoe_src_root", config.tamoe_src_root))
config.substitutions.append(("%tamoe_obj_root", config.tamoe_obj_root))
config.substitutions.append(("%mlir_lib_dir", config.mlir_lib_dir))
# The Python that runs lit, for the report scripts of bench/.
config.substitutions.append(("%python", sys.executable))
config.substitutions.append(
    ("%tamoe_plugin", os.path.join(config.tamoe_obj_root, "lib",
                                   "TAMoEPlugin.so")))

llvm_config.with_system_environment(["HOME", "INCLUDE", "LIB", "TMP", "TEMP"])
llvm_config.use_default_substitutions()

tool_dirs = [config.tamoe_tools_dir, config.llvm_tools_dir]
tools = ["tamoe-opt", "tamoe-topo", "tamoe-fuzz", "tamoe-planner-bench", "tamoe-capi-test",
         "mlir-opt",
         "mlir-runner",
         "mlir-tblgen"]
llvm_config.add_tool_substitutions(tools, tool_dirs)
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

# The runtime (runtime/): its test programs, their sanitized build, and
# mpirun for the multi-rank tests (8 ranks, however many cores there are).
if config.tamoe_build_runtime:
    config.available_features.add("tamoe-runtime")
    config.substitutions.append(("%tamoe_rt_bin", config.tamoe_rt_bin_dir))
    config.substitutions.append(
        ("%tamoe_rt_lib", os.path.join(config.tamoe_rt_bin_dir, "..", "lib",
                                       "libtamoe_rt.so")))
    llvm_config.add_tool_substitutions(["tamoe-reference"],
                                       [config.tamoe_tools_dir])
    # The cuda backend builds wherever nvcc is (it runs only on a GPU).
    if os.path.exists(os.path.join(config.tamoe_rt_bin_dir, "..", "lib",
                                   "libtamoe_rt_cuda.so")):
        config.available_features.add("tamoe-runtime-cuda")
    if config.tamoe_rt_asan_bin_dir:
        config.available_features.add("tamoe-runtime-asan")
        config.substitutions.append(
            ("%tamoe_rt_asan_bin", config.tamoe_rt_asan_bin_dir))
    if config.tamoe_rt_nompi_bin_dir:
        config.available_features.add("tamoe-runtime-nompi")
        config.substitutions.append(
            ("%tamoe_rt_nompi_bin", config.tamoe_rt_nompi_bin_dir))
mpirun = shutil.which("mpirun", path=config.environment["PATH"])
if mpirun:
    config.available_features.add("mpirun")
    # Every mpirun a test starts (the scripts' too) goes through a wrapper
    # that gives its job a session directory of its own (Inputs/bin/mpirun
    # says why).
    wrapper_dir = os.path.join(config.test_source_root, "Inputs", "bin")
    config.environment["TAMOE_REAL_MPIRUN"] = mpirun
    config.environment["PATH"] = os.pathsep.join(
        [wrapper_dir, config.environment["PATH"]])
    config.substitutions.append(
        ("%mpirun", os.path.join(wrapper_dir, "mpirun") +
         " --allow-run-as-root --oversubscribe"))
