# Cross build for 64-bit ARM (aarch64) with Debian's gcc-aarch64-linux-gnu; libraries
# (libprotobuf-c, cmocka) come from Debian multiarch (…:arm64, see scripts/setup-arm.sh).
# Tests run under qemu-user: ctest prefixes each test command with the emulator.
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(KILN_CROSS_TRIPLET aarch64-linux-gnu)
set(KILN_CROSS_QEMU qemu-aarch64-static)

include(${CMAKE_CURRENT_LIST_DIR}/toolchain-common.cmake)
