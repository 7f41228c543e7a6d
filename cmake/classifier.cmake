# classifier.cmake - build-time training of the built-in task classifier.
#
# Included from the top-level CMakeLists.txt after the gwcore library is
# defined. It builds hybridgw-train-builtin from the classifier's own
# sources (not from gwcore, which will contain the generated model: no
# dependency cycle), runs it on data/routing/train/*.jsonl with a fixed seed
# to write ${CMAKE_BINARY_DIR}/generated/classifier_builtin.c (the model as a
# const byte array), and adds that file to gwcore.
#
# The tool is compiled without the sanitizer and fuzzer flags of the build
# (it only runs at build time) and always with -O2, so training takes a few
# seconds in every configuration. Training is deterministic: the same data
# and sources give the same model bytes.

set(GW_CLS_DIR ${CMAKE_CURRENT_LIST_DIR}/..)
add_executable(hybridgw-train-builtin
  ${GW_CLS_DIR}/src/router/cls_tool.c
  ${GW_CLS_DIR}/src/router/cls_train.c
  ${GW_CLS_DIR}/src/router/classifier.c
  ${GW_CLS_DIR}/src/core/core.c)
target_compile_definitions(hybridgw-train-builtin PRIVATE GW_CLS_BUILD_TOOL)
target_include_directories(hybridgw-train-builtin PRIVATE
  ${GW_CLS_DIR}/include ${GW_CLS_DIR}/src)
target_link_libraries(hybridgw-train-builtin PRIVATE PkgConfig::JANSSON m)
# Drop the directory-wide sanitizer / fuzzer options for this host tool.
set_property(TARGET hybridgw-train-builtin PROPERTY COMPILE_OPTIONS
  ${GW_WARN} -fno-strict-aliasing -O2)
set_property(TARGET hybridgw-train-builtin PROPERTY LINK_OPTIONS "")

file(GLOB GW_CLS_TRAIN_DATA CONFIGURE_DEPENDS ${GW_CLS_DIR}/data/routing/train/*.jsonl)
list(SORT GW_CLS_TRAIN_DATA)
if(NOT GW_CLS_TRAIN_DATA)
  message(FATAL_ERROR "classifier.cmake: no training data in data/routing/train")
endif()
set(GW_CLS_GENERATED ${CMAKE_BINARY_DIR}/generated/classifier_builtin.c)
add_custom_command(
  OUTPUT ${GW_CLS_GENERATED}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/generated
  COMMAND hybridgw-train-builtin ${GW_CLS_GENERATED} ${GW_CLS_TRAIN_DATA}
  DEPENDS hybridgw-train-builtin ${GW_CLS_TRAIN_DATA}
  COMMENT "Training the built-in task classifier"
  VERBATIM)
target_sources(gwcore PRIVATE ${GW_CLS_GENERATED})
target_compile_definitions(gwcore PRIVATE GW_CLS_HAVE_BUILTIN)
