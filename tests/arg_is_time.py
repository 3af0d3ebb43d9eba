"""An execution-time model for analysis tests: a job of any package runs
exactly ``arg1`` ms, as a job of pkg ``idle`` does on SimSo's default model."""
from __future__ import annotations


class ArgIsTime:
    name = "arg-is-time"
    version = 3  # any number: tests check that labels record it

    def execution_time_ms(self, pkg: str, arg1: int) -> int:
        return arg1
