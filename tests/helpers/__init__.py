"""Helpers shared by edgeseg's tests (real TVM builds, no mocks)."""
