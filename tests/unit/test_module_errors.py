"""common.modules: a module that fails inside its TaskGroup is logged with the cause, not only the group."""

from __future__ import annotations

import asyncio

from common.modules import _describe


async def _failing_group() -> None:
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(_boom())


async def _boom() -> None:
    raise KeyError("twin")


async def test_a_task_group_failure_names_each_cause_and_where() -> None:
    try:
        await _failing_group()
    except BaseExceptionGroup as exc:
        text = _describe(exc)
    assert text.startswith("ExceptionGroup: KeyError: 'twin' at ")
    assert "test_module_errors.py" in text
    assert _describe(ValueError("plain")) == "ValueError: plain"
