"""tests/headless.py: papermill whose kernel channels cannot miss a message (why: its docstring)."""

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from queue import Empty

import nbformat
import pytest
import zmq
import zmq.asyncio
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.session import Session

from headless import POLL_SECONDS, PollingChannel

TESTS = Path(__file__).parent


@pytest.fixture
def missed_wake_up():
    """A socket holding one kernel message whose wake-up the asyncio poll missed: a poll without a time limit never
    returns, and one with a limit returns at its end, having checked the socket itself (as pyzmq's does)."""
    context = zmq.asyncio.Context()
    kernel, client = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    kernel.bind("inproc://missed-wake-up")
    client.connect("inproc://missed-wake-up")
    session = Session()
    session.send(kernel, "execute_reply", {"status": "ok"})

    async def missed_poll(timeout=None, flags=zmq.POLLIN):
        if timeout is None:
            await asyncio.Event().wait()
        await asyncio.sleep(timeout / 1000)
        return client.get(zmq.EVENTS) & flags

    client.poll = missed_poll
    yield client, session
    kernel.close(linger=0)
    client.close(linger=0)
    context.term()


async def waited(channel, timeout=None, limit=10):
    start = time.monotonic()
    message = await asyncio.wait_for(channel.get_msg(timeout=timeout), limit)
    return message, time.monotonic() - start


def test_a_message_whose_wake_up_was_missed_hangs_a_plain_channel(missed_wake_up):
    with pytest.raises(TimeoutError):  # what nbclient does with a cell's reply: waits with no time limit
        asyncio.run(waited(AsyncZMQSocketChannel(*missed_wake_up), limit=3 * POLL_SECONDS))


def test_a_message_whose_wake_up_was_missed_is_read_within_a_poll(missed_wake_up):
    message, seconds = asyncio.run(waited(PollingChannel(*missed_wake_up)))
    assert message["msg_type"] == "execute_reply"
    assert seconds < 2 * POLL_SECONDS


def test_a_wait_with_a_time_limit_still_ends_empty_at_the_limit(missed_wake_up):
    channel = PollingChannel(*missed_wake_up)
    asyncio.run(waited(channel))  # the one message
    start = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(waited(channel, timeout=2.5))
    assert 2.5 <= time.monotonic() - start < 2.5 + POLL_SECONDS


def test_the_command_takes_papermills_arguments(tmp_path):
    cells = [nbformat.v4.new_code_cell("EPOCHS = 50", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("print('epochs:', EPOCHS)")]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(notebook, tmp_path / "in.ipynb")
    subprocess.run([sys.executable, str(TESTS / "headless.py"), "in.ipynb", "out.ipynb", "-p", "EPOCHS", "2",
                    "--cwd", str(tmp_path), "-k", "python3", "--no-progress-bar"], cwd=tmp_path, check=True)
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[-1].outputs
    assert outputs[0].text == "epochs: 2\n"
