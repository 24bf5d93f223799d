# kiln_simd_source_flags(SOURCES...): the compile flags of the runtime's SIMD files, by
# file name (its suffix names the instruction set; the runtime picks the path by CPU
# detection, so the library still runs on CPUs without them). Source properties are per
# directory: every directory compiling runtime sources (infer/, tests/fuzz/) calls this.
function(kiln_simd_source_flags)
  foreach(src ${ARGN})
    if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|i[3-6]86")
      if(src MATCHES "_avx2\\.c$")
        set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma")
      elseif(src MATCHES "_avx512\\.c$")
        set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS
                                    "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mfma")
      elseif(src MATCHES "_vnni\\.c$")
        set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS
                                    "-mavx512f;-mavx512bw;-mavx512vl;-mavx512vnni;-mfma")
      endif()
    elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "arm|ARM")
      if(src MATCHES "_neon\\.c$")
        set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "-mfpu=neon")
      endif()
    elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
      # SDOT (Armv8.2 dot product), chosen at run time from HWCAP_ASIMDDP.
      if(src MATCHES "_dotprod\\.c$")
        set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "-march=armv8.2-a+dotprod")
      endif()
    endif()
  endforeach()
endfunction()
