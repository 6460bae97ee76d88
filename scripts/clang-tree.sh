# scripts/clang-tree.sh: sourced by scripts/fuzz and scripts/test (not run on its own). Both use one
# clang build tree, build-asan/: the unit and integration layers under ASan and UBSan, and the
# libFuzzer targets, from the same instrumented objects (one compile of the libraries, not two).
# clang-14, -O1 with line tables only (a sanitizer report needs no more, and it compiles faster).
# clang_tree_configure [cmake options...]   configures $CLANG_TREE (quietly); needs clang-14.
CLANG_TREE="$ROOT/build-asan"
clang_tree_configure() {
  local launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  CC=clang-14 CXX=clang++-14 cmake -S "$ROOT" -B "$CLANG_TREE" -DDESCPROD_SANITIZE=ON -DDESCPROD_FUZZ=ON \
    -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -gline-tables-only" "${launcher[@]}" "$@" >/dev/null
  # A build directory: keep it (and the fuzz corpora it grows) out of git.
  [ -f "$CLANG_TREE/.gitignore" ] || echo '*' >"$CLANG_TREE/.gitignore"
}
