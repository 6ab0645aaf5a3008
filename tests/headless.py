"""Papermill whose kernel channels cannot miss a message: the tests, the device run and the README's pictures run
the notebook through it.

    python tests/headless.py diffusion_model.ipynb OUT.ipynb -p EPOCHS 2 ...   # papermill's own arguments

Why: pyzmq's asyncio poll can miss a socket's wake-up, so that a message sits unread in the client's socket; and
nbclient waits for a cell's reply with no time limit. A run then hangs for ever with its kernel idle, typically at a
cell that displays widgets (jupyter/nbclient#312). Seen here: at the notebook's timestep-slider cell, once in CI and
once in two runs of the simulated Mac; and in 3 of 35 runs of a notebook of 60 widget cells, where each reply was
found the moment the cell's time limit ran out. A poll that times out checks the socket itself, so these channels
wait in one-second polls (the same notebook: 30 runs, no cell over 1.3 s).
"""

import sys
import time
from queue import Empty

import papermill
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from papermill.engines import NBClientEngine, papermill_engines
from traitlets import Type

POLL_SECONDS = 1.0


class PollingChannel(AsyncZMQSocketChannel):
    async def get_msg(self, timeout=None):
        """The next message, waited for in polls of at most POLL_SECONDS; Empty once `timeout` seconds (None: no
        limit) have passed without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await super().get_msg(timeout=min(POLL_SECONDS, left))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


class PollingKernelClient(AsyncKernelClient):
    shell_channel_class = Type(PollingChannel)  # a cell's reply
    iopub_channel_class = Type(PollingChannel)  # its outputs


class PollingKernelManager(AsyncKernelManager):
    client_factory = Type(PollingKernelClient, klass=AsyncKernelClient)


class PollingEngine(NBClientEngine):
    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
        return super().execute_managed_notebook(nb_man, kernel_name, kernel_manager_class=PollingKernelManager,
                                                **kwargs)


def execute_notebook(*args, **kwargs):
    """papermill.execute_notebook with the polling channels."""
    return papermill.execute_notebook(*args, engine_name="polling", **kwargs)


papermill_engines.register("polling", PollingEngine)

if __name__ == "__main__":
    from papermill.cli import papermill as papermill_cli

    papermill_engines.register(None, PollingEngine)  # the engine papermill's command line uses unless told
    sys.exit(papermill_cli())
