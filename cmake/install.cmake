# Installation: the client SDK as a CMake package, and the three binaries.
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
