// The translation unit that builds the tests' precompiled header (tests/pch/pch.hpp).
