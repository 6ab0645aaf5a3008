"""A simulated Apple-silicon (MPS) device, so that the CPU tests can see the crashes only a Mac would show.

On a CPU, float64, mixed devices and unsynchronised copies are all legal; on MPS they are not. Under `simulated_mps()`
the notebook's code runs on the CPU while behaving like a device that is not the CPU:

- `torch.backends.mps.is_available()` is True, `pick_device("mps")` works, and the `torch.mps` calls the notebook
  makes (memory, RNG state) answer;
- a tensor moved to or made on "mps" is an `MPSTensor`: it reports `device(type='mps')` and computes on an inner
  CPU tensor (a wrapper subclass with `__torch_dispatch__`, the technique behind PyTorch's FakeTensor and its
  testing TwoTensor); a dispatch mode catches the factory calls (`torch.randn(..., device="mps")`) that have no
  tensor argument to dispatch on;
- `torch.Generator(device="mps")` gives a generator that reports device mps and draws on the CPU.

It raises `SimulatedMPSError`, naming the aten operation and the function of the notebook it ran in, on:

- float64 on the device: MPS has no float64 ("Cannot convert a MPS Tensor to float64 dtype", pytorch/pytorch#122602;
  PYTORCH_ENABLE_MPS_FALLBACK does not cover it);
- an operation that mixes device tensors with CPU tensors (0-dim CPU tensors aside, which PyTorch allows as
  scalars); `copy_` and `.to()` are the legal ways across. The same bug crashes on CUDA;
- a copy between the device and the CPU with non_blocking=True: to the CPU, the CPU may read it before it lands
  (https://pytorch.org/tutorials/intermediate/pinmem_nonblock.html); to the device, such copies were seen corrupted
  (pytorch/pytorch#139550, #189690).

Operations MPS lacks in some torch version that requirements.txt allows (FALLBACK_OPS, with sources) run, as
PYTORCH_ENABLE_MPS_FALLBACK=1 (set by the notebook) lets them, but each call is counted in `fallbacks`: on a Mac each
is a copy to the CPU and back.

What it cannot show: MPS's numerics (its kernels round differently), its memory limits, its speed, bugs inside its
own kernels, and a draw on the device from a CPU generator (PyTorch hands __torch_dispatch__ a new Generator object,
so the simulated device's generators cannot be told apart there). A TorchScript module (INCEPTION_WEIGHTS' default_1.pt)
cannot be moved to it: its parameters cannot be swapped for the wrapper subclass. Its RNG is the CPU's, so a resume
that forgot the MPS generator's state would go unseen.
"""

import collections
import contextlib
import functools
import sys
from pathlib import Path

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode, return_and_correct_aliasing

MPS = torch.device("mps", 0)  # what an MPS tensor reports on a Mac (torch.device("mps") compares unequal to it)
aten = torch.ops.aten

# aten operations without an MPS kernel in some torch version that requirements.txt (torch>=2.5) allows: name -> the
# first torch version with one, and its source. Read from the native_functions.yaml inside each macOS torch wheel,
# 2.5.1 to 2.14.1. On a Mac with PYTORCH_ENABLE_MPS_FALLBACK=1 each call copies its inputs to the CPU and back.
FALLBACK_OPS = {
    "aten::_upsample_bilinear2d_aa": ("2.7", "pytorch/pytorch#145526"),
    "aten::_upsample_bilinear2d_aa_backward": ("2.14", "pytorch/pytorch#188819"),
    "aten::native_dropout": ("2.9", "pytorch/pytorch#162108"),  # eager F.dropout takes bernoulli_ on MPS instead
    "aten::native_dropout_backward": ("2.9", "pytorch/pytorch#162108"),
}

fallbacks = collections.Counter()  # aten operation -> calls that fell back to the CPU


class SimulatedMPSError(RuntimeError):
    """What a Mac would have raised (or, for a non-blocking copy, silently got wrong)."""


class MPSTensor(torch.Tensor):
    """A tensor on the simulated MPS device: reports device mps to Python, computes on `elem`, a CPU tensor. To
    PyTorch's C++ bindings it is a CPU tensor, so that they need no MPS device guard, which this build lacks."""

    @staticmethod
    def __new__(cls, elem):
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(),
                                                   storage_offset=elem.storage_offset(), dtype=elem.dtype,
                                                   layout=elem.layout, device=elem.device,
                                                   requires_grad=elem.requires_grad)

    def __init__(self, elem):
        assert type(elem) is torch.Tensor and elem.device.type == "cpu"
        self.elem = elem

    @property
    def device(self):
        return MPS

    @property
    def is_cpu(self):
        return False

    @property
    def is_mps(self):
        return True

    def __repr__(self):
        return f"MPSTensor({self.elem!r})"

    def __reduce_ex__(self, protocol):
        # torch.save of an MPS tensor stores its values; torch.load(map_location="cpu") gives a CPU tensor back
        return self.elem.__reduce_ex__(protocol)

    def cpu(self, memory_format=torch.preserve_format):
        return aten._to_copy.default(self, device=torch.device("cpu"), memory_format=memory_format)

    def __tensor_flatten__(self):  # a traceable wrapper subclass: nn.Module.to swaps such parameters in place
        return ["elem"], None

    @staticmethod
    def __tensor_unflatten__(inner_tensors, meta, outer_size, outer_stride):
        return MPSTensor(inner_tensors["elem"])

    def tolist(self):  # a synchronous copy to the CPU, as on a Mac
        return self.elem.tolist()

    def numpy(self, *, force=False):
        raise TypeError("can't convert mps:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to "
                        "host memory first.")

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args, kwargs=None):
        return run_on_simulated_device(func, args, kwargs or {})


_to = torch.Tensor.to


def to(self, *args, **kwargs):
    """Tensor.to under the simulation: to or from the mps device through aten._to_copy (the C++ binding would ask
    for an MPS device guard); a no-op where nothing changes, as Tensor.to is."""
    device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
    if not (isinstance(self, MPSTensor) or is_mps(device)):
        return _to(self, *args, **kwargs)
    if ((device is None or device.type == self.device.type) and (dtype is None or dtype == self.dtype)
            and memory_format is None and not kwargs.get("copy", False)):
        return self
    return aten._to_copy.default(self, dtype=dtype, device=device, non_blocking=non_blocking,
                                 memory_format=memory_format)


class MPSGenerator(torch.Generator):
    """torch.Generator(device="mps"): draws on the CPU, reports device mps."""

    @property
    def device(self):
        return MPS

    def manual_seed(self, seed):
        super().manual_seed(seed)
        return self  # PyTorch's returns a plain Generator


_Generator = torch.Generator


class Generator(_Generator):
    """Stands in for torch.Generator under the simulation: device="mps" gives an MPSGenerator."""

    def __new__(cls, device="cpu"):
        if torch.device(device).type == "mps":  # a Mac's reports device(type='mps', index=0) too
            return MPSGenerator()
        return _Generator(device)


def where_in_notebook():
    """'in FUNCTION (FILE, line N)' for the innermost caller outside torch and this file."""
    skip = (str(Path(torch.__file__).parent), __file__)
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame = frame.f_back
    if frame is None:
        return "outside any Python function"
    return f"in {frame.f_code.co_name} ({frame.f_code.co_filename}, line {frame.f_lineno})"


def fail(func, what):
    raise SimulatedMPSError(f"{func.name()} {what} {where_in_notebook()}")


def is_mps(device):
    return device is not None and torch.device(device).type == "mps"


def check(func, args, kwargs):
    """Raise where a Mac would; count fallbacks. Returns True if the result lives on the device."""
    flat = pytree.tree_leaves((args, kwargs))
    on_device = [x for x in flat if isinstance(x, MPSTensor)]
    on_cpu = [x for x in flat if isinstance(x, torch.Tensor) and not isinstance(x, MPSTensor)]
    if any(x.dtype == torch.float64 for x in on_device):
        fail(func, "takes a float64 tensor on the mps device, which has no float64")
    if func is aten._to_copy.default:  # .to(), .cpu(), .double(), ...: the legal way across devices
        (source,) = args
        to = torch.device(kwargs["device"]) if kwargs.get("device") is not None else source.device
        dtype = kwargs.get("dtype") or source.dtype
        if to.type == "mps" and dtype == torch.float64:
            fail(func, "makes a float64 tensor on the mps device, which has no float64 (pytorch/pytorch#122602)")
        if isinstance(source, MPSTensor) != (to.type == "mps") and kwargs.get("non_blocking"):
            fail(func, "copies between the mps device and the CPU with non_blocking=True: from the device the "
                       "CPU may read the tensor before the copy lands; to it, copies were corrupted "
                       "(pytorch/pytorch#139550, #189690)")
        return to.type == "mps"
    if func is aten.copy_.default:  # dst.copy_(src): across devices is legal
        destination, source = args[:2]
        if isinstance(source, MPSTensor) != isinstance(destination, MPSTensor) and args[2:3] == (True,):
            fail(func, "copies between the mps device and the CPU with non_blocking=True")
        return isinstance(destination, MPSTensor)
    if func in METADATA_OPS:
        return False
    device_result = bool(on_device) or is_mps(kwargs.get("device"))
    mixed = [x for x in on_cpu if x.dim() > 0]
    if device_result and mixed:
        fail(func, f"mixes tensors on the mps device with CPU tensors of shape "
                   f"{', '.join(str(tuple(x.shape)) for x in mixed)}")
    if device_result and func.name() in FALLBACK_OPS:
        fallbacks[func.name()] += 1
    return device_result


METADATA_OPS = {aten._has_compatible_shallow_copy_type.default}  # compare tensors' metadata only: legal across devices


def to_cpu(x):
    if isinstance(x, MPSTensor):
        return x.elem
    if isinstance(x, torch.device) and x.type == "mps":
        return torch.device("cpu")
    return x


def run_on_simulated_device(func, args, kwargs):
    device_result = check(func, args, kwargs)
    cpu_args, cpu_kwargs = pytree.tree_map(to_cpu, (args, kwargs))
    if is_mps(kwargs.get("device")):
        cpu_kwargs["device"] = torch.device("cpu")
    out = func(*cpu_args, **cpu_kwargs)
    if device_result:
        if any(isinstance(x, torch.Tensor) and x.dtype == torch.float64 for x in pytree.tree_leaves(out)):
            fail(func, "makes a float64 tensor on the mps device, which has no float64 (pytorch/pytorch#122602)")
        out = pytree.tree_map_only(torch.Tensor, MPSTensor, out)
    if func is aten.copy_.default or func is aten._to_copy.default:
        return out if func is aten._to_copy.default else args[0]
    if any(isinstance(x, MPSTensor) for x in pytree.tree_leaves((args, kwargs))):
        return return_and_correct_aliasing(func, args, kwargs, out)
    return out


class SimulatedMPSMode(TorchDispatchMode):
    """Sends every operation through run_on_simulated_device, factories with device="mps" included."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return run_on_simulated_device(func, args, kwargs or {})


def _rng_state():
    return torch.get_rng_state()  # the device's draws come from the CPU's generator here


MPS_FUNCTIONS = {  # torch.mps and torch.backends.mps, as a Mac with 8 GB answers them
    (torch.backends.mps, "is_available"): lambda: True,
    (torch.backends.mps, "is_built"): lambda: True,
    (torch.mps, "recommended_max_memory"): lambda: int(5.3 * 2**30),
    (torch.mps, "current_allocated_memory"): lambda: 0,
    (torch.mps, "driver_allocated_memory"): lambda: 0,
    (torch.mps, "synchronize"): lambda: None,
    (torch.mps, "empty_cache"): lambda: None,
    (torch.mps, "get_rng_state"): lambda device="mps": torch.get_rng_state(),
    (torch.mps, "set_rng_state"): lambda state, device="mps": torch.set_rng_state(state),
}


@contextlib.contextmanager
def simulated_mps():
    """Run the block with the simulated MPS device (see the module's docstring)."""
    saved = {key: getattr(*key) for key in MPS_FUNCTIONS}
    for (owner, name), function in MPS_FUNCTIONS.items():
        setattr(owner, name, functools.wraps(saved[owner, name])(function))  # keeps __wrapped__: dynamo reads it
    torch.Generator, torch.Tensor.to = Generator, to
    try:
        with SimulatedMPSMode():
            yield
    finally:
        torch.Generator, torch.Tensor.to = _Generator, _to
        for (owner, name), function in saved.items():
            setattr(owner, name, function)


_active = []


def activate():
    """Turn the simulation on for the rest of the process (a Jupyter kernel's startup file calls this)."""
    _active.append(simulated_mps())  # held: a context manager that is garbage-collected exits
    _active[-1].__enter__()
