# Sets TESSERA_FMT, the fmt target to link (after find_package(Torch) and find_package(fmt)).
# PyPI's torch ships fmt headers of another version in its include folder, which comes ahead of Debian's on the
# include path: then fmt is compiled header-only (those headers, their code) instead of linking Debian's libfmt,
# whose symbols belong to its own version.
set(TESSERA_FMT fmt::fmt)
foreach(dir ${TORCH_INCLUDE_DIRS})
  foreach(header base.h core.h)
    if(EXISTS "${dir}/fmt/${header}" AND NOT dir MATCHES "^/usr/include/?$")
      file(STRINGS "${dir}/fmt/${header}" torch_fmt REGEX "^#define FMT_VERSION [0-9]+")
      string(REGEX MATCH "[0-9]+$" torch_fmt "${torch_fmt}")
      if(torch_fmt)
        math(EXPR debian_fmt "${fmt_VERSION_MAJOR} * 10000 + ${fmt_VERSION_MINOR} * 100 + ${fmt_VERSION_PATCH}")
        if(NOT torch_fmt EQUAL debian_fmt)
          set(TESSERA_FMT fmt::fmt-header-only)
        endif()
      endif()
    endif()
  endforeach()
endforeach()
