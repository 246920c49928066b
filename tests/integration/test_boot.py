"""The built kernel boots and the console reports real exit statuses."""

import pytest

pytestmark = pytest.mark.qemu


def test_guest_runs_the_built_kernel(pipeline, guest):
    assert guest.run("uname -r", check=True).output.strip() == pipeline.build().release


@pytest.mark.parametrize("command,status", [("true", 0), ("false", 1), ("exit 3", 3), ("sh -c 'kill -9 $$'", 137)])
def test_exit_status_comes_from_the_guest(guest, command, status):
    assert guest.run(command).status == status


def test_output_is_what_the_command_printed(guest):
    result = guest.run("echo one; echo two >&2; printf three")
    assert result.status == 0
    assert result.output.splitlines() == ["one", "two", "three"]


def test_guest_has_the_cpus_asked_for_and_the_dump_disk_tools(pipeline, guest):
    assert guest.run("grep -c ^processor /proc/cpuinfo").output.strip() == str(pipeline.options.smp)
    assert guest.run("test -c /dev/null && command -v runas").status == 0
