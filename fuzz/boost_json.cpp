// Boost.JSON compiled header-only for the fuzz build, so that its parser is instrumented like the
// project's own code (see fuzz/CMakeLists.txt). Exactly one translation unit may include this.
#include <boost/json/src.hpp>
