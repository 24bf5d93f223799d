# Cross build for 32-bit ARM (Debian armhf: ARMv7-A, VFPv3-D16, hard float, Thumb-2) with
# Debian's gcc-arm-linux-gnueabihf; libraries (libprotobuf-c, cmocka) come from Debian
# multiarch (…:armhf, see scripts/setup-arm.sh). Tests run under qemu-user.
#   cmake -S . -B build-armhf -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-armhf.cmake
# The default flags stay the armhf baseline (no NEON); only the *_neon.c kernels get
# NEON flags, from infer/CMakeLists.txt, and the runtime picks them by CPU detection.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(KILN_CROSS_TRIPLET arm-linux-gnueabihf)
set(KILN_CROSS_QEMU qemu-arm-static)

include(${CMAKE_CURRENT_LIST_DIR}/toolchain-common.cmake)
