# Shared by cmake/toolchain-aarch64.cmake and cmake/toolchain-armhf.cmake, which set
# CMAKE_SYSTEM_PROCESSOR, KILN_CROSS_TRIPLET and KILN_CROSS_QEMU first.

set(CMAKE_C_COMPILER ${KILN_CROSS_TRIPLET}-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE ${KILN_CROSS_TRIPLET})

# The cross libc lives in /usr/<triplet>; multiarch libraries (libprotobuf-c:arm64 or :armhf)
# in /usr/lib/<triplet>, found through the "/" root with CMAKE_LIBRARY_ARCHITECTURE.
# Programs (protoc-c) are the host's.
set(CMAKE_FIND_ROOT_PATH /usr/${KILN_CROSS_TRIPLET} /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config must see the target's .pc files only, never the host's.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${KILN_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# ctest runs every test binary under qemu-user. The ARM libprotobuf-c and cmocka come
# from multiarch, which brings the matching libc6:<arch> (loader in /lib, libc in
# /lib/<triplet>): qemu then needs no -L, and the loader and libc.so.6 are one glibc
# build. Forcing -L /usr/<triplet> would pair the cross loader (libc6-*-cross, another
# Debian revision) with the multiarch libc.so.6 found through /etc/ld.so.cache; -L is
# only the fallback where the multiarch libc is absent.
find_program(KILN_CROSS_QEMU_PATH ${KILN_CROSS_QEMU})
if(NOT KILN_CROSS_QEMU_PATH)
  set(KILN_CROSS_QEMU_PATH ${KILN_CROSS_QEMU})
endif()
if(EXISTS /lib/${KILN_CROSS_TRIPLET}/libc.so.6 OR EXISTS /usr/lib/${KILN_CROSS_TRIPLET}/libc.so.6)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${KILN_CROSS_QEMU_PATH})
else()
  set(CMAKE_CROSSCOMPILING_EMULATOR ${KILN_CROSS_QEMU_PATH} -L /usr/${KILN_CROSS_TRIPLET})
endif()
