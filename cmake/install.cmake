# Installation: the client SDK as a CMake package, the three binaries (and swarm-tools, which
# `swarm` runs for its torch commands), the .proto files and the Python client.
#
#   cmake --install build --prefix /opt/swarm
#   # in another project:
#   find_package(swarm REQUIRED)        # CMAKE_PREFIX_PATH=/opt/swarm
#   target_link_libraries(app PRIVATE swarm::swarm_client)
#   #include "client/client.h"          // swarm::Client
#
# The SDK (swarm_client + swarm_rpc + swarm_proto + swarm_base) is torch-free: it needs gRPC,
# protobuf and Abseil only, which swarmConfig.cmake finds for the consumer. Included from the root CMakeLists.txt.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

if(TARGET swarm_client AND TARGET swarm_proto)
  set(SWARM_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/swarm)
  target_include_directories(swarm_client PUBLIC
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/swarm>)
  install(TARGETS swarm_client swarm_rpc swarm_proto swarm_base EXPORT swarmTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/swarm)
  install(FILES ${PROJECT_SOURCE_DIR}/client/client.h
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/swarm/client)
  install(EXPORT swarmTargets NAMESPACE swarm:: DESTINATION ${SWARM_INSTALL_CMAKEDIR})
  configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/swarmConfig.cmake.in
    ${PROJECT_BINARY_DIR}/swarmConfig.cmake
    INSTALL_DESTINATION ${SWARM_INSTALL_CMAKEDIR})
  write_basic_package_version_file(${PROJECT_BINARY_DIR}/swarmConfigVersion.cmake
    VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
  install(FILES ${PROJECT_BINARY_DIR}/swarmConfig.cmake ${PROJECT_BINARY_DIR}/swarmConfigVersion.cmake
    DESTINATION ${SWARM_INSTALL_CMAKEDIR})
endif()

foreach(_bin swarm swarm-worker swarm-coordinator)
  if(TARGET ${_bin})
    install(TARGETS ${_bin} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endforeach()
# The CLI's torch commands: `swarm` finds it at ../libexec/swarm/swarm-tools (tools_exec.h).
if(TARGET swarm-tools)
  install(TARGETS swarm-tools RUNTIME DESTINATION ${CMAKE_INSTALL_LIBEXECDIR}/swarm)
endif()

# The wire contract, for clients in other languages: share/swarm/proto/swarm/v1/*.proto (and the
# grpc.health.v1 protocol the servers speak).
install(DIRECTORY ${PROJECT_SOURCE_DIR}/proto/swarm ${PROJECT_SOURCE_DIR}/proto/grpc
  DESTINATION ${CMAKE_INSTALL_DATADIR}/swarm/proto FILES_MATCHING PATTERN "*.proto")
