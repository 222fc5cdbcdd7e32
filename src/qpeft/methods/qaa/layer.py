"""The QAA layer: a frozen linear layer plus a measured quantum circuit on its input (injection: ``model``).

y = W0 x + s (W_up z(x) + b), where z(x) is the readout of the circuit (``qpeft.quantum``)
on the amplitude-embedded x. Three forward paths:

- training (default): ``qpeft.quantum.simulate``, differentiable in x and the angles, with
  the memory-lean backward unless ``memory_lean=False``;
- inference form (``to_inference()``, what ``QAA.load`` gives): without autograd, the angles and
  one matrix [s W_up | s b] cached, applied to the readout and its presence column (1 for a
  non-zero input), so that the update is one matrix multiply after the circuit. This is not a
  merge in PEFT's sense: the update is non-linear in x and never folds into the base weight;
- noisy (``set_noise``): ``simulate_noisy`` with finite shots and/or one noise model (depolarising,
  or the hardware model's fidelity and readout error), shots drawn from the layer's own seeded
  generator, so that an evaluation is reproducible.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qpeft.methods.base import AdapterLayer
from qpeft.methods.qaa.config import ANGLE_INITS, QAAConfig
from qpeft.quantum import CircuitSpec, n_qubits_for_width, simulate, simulate_noisy
from qpeft.quantum.hardware import GateErrors, circuit_fidelity, device_circuit, gate_counts
from qpeft.quantum.simulator import InferenceReadout, autocast_off
from qpeft.utils.errors import UsageError

#: Standard deviation of the "normal" angle initialisation (radians).
NORMAL_ANGLE_STD = 0.1


@dataclass
class NoiseSettings:
    """A layer's noisy path: shots (None: exact expectation values), depolarising strength, or the hardware
    model's circuit fidelity and readout error (``qpeft.quantum.hardware``)."""

    shots: int | None
    depolarizing: float
    seed: int
    fidelity: float = 1.0
    readout_error: float = 0.0


class QAALinear(nn.Module, AdapterLayer):
    """y = W0 x + s (W_up z(x) + b) around a frozen ``nn.Linear`` or GPT-2 ``Conv1D``.

    ``qaa_angles`` (``spec.angle_shape``), ``qaa_up`` (out x readout width, zero-initialised so
    that the model starts exactly at the base model) and ``qaa_bias`` (out, zeros; absent
    with ``bias=False``) are float32 whatever the base layer's dtype; the circuit always runs
    in float32 (or float64 for float64 inputs), also under bf16/fp16 autocast. The update is
    non-linear in x: there is no ΔW (``get_delta_weight`` raises) and no merge.
    """

    adapter_param_names = ("qaa_angles", "qaa_up", "qaa_bias")
    label = "QAA"

    def __init__(
        self,
        base_layer: nn.Module,
        layers: int,
        ansatz: str = "ry",
        readout: str = "z",
        scale: float = 1.0,
        bias: bool = True,
        angle_init: str = "uniform",
        memory_lean: bool = True,
    ) -> None:
        super().__init__()
        if angle_init not in ANGLE_INITS:
            raise UsageError(f"unknown QAA angle_init {angle_init!r}; choose one of {', '.join(ANGLE_INITS)}")
        self._wrap_base_layer(base_layer)
        self.spec = CircuitSpec(n_qubits_for_width(self.in_features), layers, ansatz, readout)
        self.scale = float(scale)
        self.memory_lean = memory_lean
        device = base_layer.weight.device
        self.qaa_angles = nn.Parameter(init_angles(self.spec.angle_shape, angle_init, device))
        self.qaa_up = nn.Parameter(torch.zeros(self.out_features, self.spec.output_dim, device=device))
        self.qaa_bias = nn.Parameter(torch.zeros(self.out_features, device=device)) if bias else None
        self.inference_form = False
        self._inference_readout: InferenceReadout | None = None
        self.noise: NoiseSettings | None = None
        self._generator: torch.Generator | None = None

    @classmethod
    def from_config(cls, base_layer: nn.Module, config: QAAConfig) -> QAALinear:
        return cls(base_layer, config.layers, config.ansatz, config.readout, config.scale, config.bias,
                   config.angle_init, config.memory_lean)

    @property
    def n_qubits(self) -> int:
        return self.spec.n_qubits

    def trainable_count(self) -> int:
        """L n (2 L n for ry_rz) angles + readout width x out + out (bias)."""
        bias = self.out_features if self.has_bias else 0
        return self.spec.n_angles + self.spec.output_dim * self.out_features + bias

    @property
    def has_bias(self) -> bool:
        return self.qaa_bias is not None

    # Forward paths -----------------------------------------------------------------

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        if self.noise is None and not self.inference_form and not args and not kwargs:
            return self._training_forward(x)
        result = self.base_layer(x, *args, **kwargs)
        with autocast_off(x.device.type):
            if self.noise is not None:
                update = self._update(self._noisy_readout(x), x)
            elif self.inference_form:
                return self._add_inference_update(result, x)
            else:
                update = self._training_update(x, self.qaa_angles)
        return result + update.to(result.dtype)

    def _training_forward(self, x: Tensor) -> Tensor:
        """base(x) + the update, the base layer run on the tokens as rows (a 2-D output of its own, which the
        update goes into in place). The circuit runs first: backward then reaches the base layer first (autograd
        takes the later node first), and the circuit's input gradient is added into the base layer's in place;
        the other way round, autograd added them into a new 1.2 MB tensor (0.1-0.3 ms a module call here)."""
        x2 = x.reshape(-1, x.shape[-1])
        with autocast_off(x.device.type):
            z, affine_t = self._training_readout(x2, self.qaa_angles)
        result = self.base_layer(x2)
        with autocast_off(x.device.type):
            result = _add_into(result, z, affine_t)
        return result.view(*x.shape[:-1], result.shape[-1])

    def _update(self, z: Tensor, x: Tensor) -> Tensor:
        """s (W_up z + b) in the readout's dtype (zero where x is zero)."""
        up, bias = self.qaa_up.to(z.dtype), None if self.qaa_bias is None else self.qaa_bias.to(z.dtype)
        if self.scale != 1.0:
            up, bias = up * self.scale, None if bias is None else bias * self.scale
        return _affine(z, up, bias, x)

    def _training_readout(self, x: Tensor, angles: Tensor) -> tuple[Tensor, Tensor]:
        """The readout z and (s W_up)^T, differentiable: with a bias, z has its presence column (1 for a non-zero
        input) and the matrix is s [W_up | b]^T, so that one matrix multiply keeps the bias off zero inputs
        without a mask pass.

        The matrix is made contiguous in its (readout, out) form, the form the update multiplies by: autograd's
        matrix-multiply backward keeps the layout of what it was given, and for [W_up | b] transposed (a view) it
        took the two products of backward in the slow orientation of this tall, narrow shape (the output
        gradient transposed times z: 0.29 ms, and times the matrix: 0.26 ms, 512 tokens of SmolLM2's width here,
        70% of the circuit's own time) against 0.09 and 0.15 ms this way."""
        if self.qaa_bias is None:
            z = simulate(x, angles, self.spec, memory_lean=self.memory_lean)
            affine_t = self.qaa_up.t().contiguous().to(z.dtype)
        else:
            z = simulate(x, angles, self.spec, memory_lean=self.memory_lean, presence=True)
            affine_t = torch.cat([self.qaa_up.t(), self.qaa_bias[None]]).to(z.dtype)
        return z, affine_t * self.scale if self.scale != 1.0 else affine_t

    def _training_update(self, x: Tensor, angles: Tensor) -> Tensor:
        """s (W_up z + b), differentiable."""
        z, affine_t = self._training_readout(x, angles)
        return z @ affine_t

    def update(self, x: Tensor) -> Tensor:
        """The adapter's contribution s (W_up z(x) + b) alone, differentiable (training path, any dtype)."""
        with torch.autocast(x.device.type, enabled=False):
            dtype = x.dtype if x.dtype == torch.float64 else torch.float32
            return self._training_update(x.to(dtype), self.qaa_angles.to(dtype))

    def to_inference(self) -> None:
        """Switch to the inference-only form: no autograd, the angles and s [W_up | b] cached once (not persistent
        buffers; after changing the parameters, call it again).

        The base weight is untouched: unlike SoRA's ``merge``, nothing folds into it.
        """
        with torch.no_grad():
            # [s W_up | s b], transposed for addmm: the readout's presence column (1 for a non-zero input)
            # carries the bias
            up = self.qaa_up.detach().float() * self.scale
            bias = torch.zeros_like(up[:, 0]) if self.qaa_bias is None else self.qaa_bias.detach().float() * self.scale
            self.register_buffer("inference_affine_t", torch.cat([up, bias[:, None]], 1).T.contiguous(),
                                 persistent=False)
            self.register_buffer("inference_angles", self.qaa_angles.detach().clone(), persistent=False)
        self._inference_readout = InferenceReadout(self.spec)
        self.inference_form = True

    def to_training(self) -> None:
        """Back to the training form (after training further, ``to_inference()`` again)."""
        for name in [n for n in self._buffers if n.startswith("inference_")]:
            delattr(self, name)
        self._inference_readout = None
        self.inference_form = False

    @torch.no_grad()
    def _inference_update(self, x: Tensor) -> Tensor:
        z = self._inference_readout(x, self.inference_angles)
        return z @ self.inference_affine_t.to(z.dtype)

    def _add_inference_update(self, result: Tensor, x: Tensor) -> Tensor:
        """result + the update, added into result by one addmm where nothing else needs result (no autograd)."""
        grad = torch.is_grad_enabled()
        keep_graph = grad and result.requires_grad
        # generation runs without grad already: entering no_grad again costs 1.8 us per call, 60 calls per token
        with torch.no_grad() if grad else contextlib.nullcontext():
            z = self._inference_readout(x, self.inference_angles)
            affine_t = self.inference_affine_t.to(z.dtype)
            if not keep_graph and z.dtype == result.dtype and result.is_contiguous():
                result.view(-1, result.shape[-1]).addmm_(z.view(-1, z.shape[-1]), affine_t)
                return result
            update = z @ affine_t
        return result + update.to(result.dtype)

    def set_noise(self, shots: int | None, depolarizing: float, seed: int,
                  hardware: tuple[GateErrors, str] | None = None) -> None:
        """Evaluate with finite shots and/or a noise model (None, 0.0 and no hardware together: back to exact).

        ``hardware`` (error rates, connectivity): the whole circuit a device would run for this layer,
        its state preparation included, with its gates counted by Qiskit once per circuit shape.
        """
        fidelity, readout_error = 1.0, 0.0
        if hardware is not None:
            errors, connectivity = hardware
            spec = self.spec
            fidelity = circuit_fidelity(gate_counts(device_circuit(spec.n_qubits, spec.n_layers, spec.ansatz,
                                                                   connectivity)), errors)
            readout_error = errors.readout
        exact = shots is None and not depolarizing and hardware is None
        self.noise = None if exact else NoiseSettings(shots, depolarizing, seed, fidelity, readout_error)
        self._generator = None

    def _noisy_readout(self, x: Tensor) -> Tensor:
        assert self.noise is not None
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(self.noise.seed)
        x32 = x.float() if x.dtype != torch.float64 else x
        noise = self.noise
        return simulate_noisy(x32, self.qaa_angles.detach().to(x32.dtype), self.spec, shots=noise.shots,
                              depolarizing=noise.depolarizing, fidelity=noise.fidelity,
                              readout_error=noise.readout_error, generator=self._generator)

    def jacobian_bound(self) -> int:
        """Largest possible rank of the update's Jacobian in x.

        The update is s W_up z(x) + const, and z does not change when x is scaled (so x
        itself is in the Jacobian's kernel): at most min(n, in - 1, out) for the z readout
        (n for any real projection), and min(2**n - 1, in - 1, out) for the probs readout,
        whose 2**n entries also sum to 1.
        """
        width = self.n_qubits if self.spec.readout == "z" else self.spec.dim - 1
        return max(0, min(width, self.in_features - 1, self.out_features))

    def extra_repr(self) -> str:
        spec = self.spec
        return (f"in={self.in_features}, out={self.out_features}, qubits={spec.n_qubits}, layers={spec.n_layers}, "
                f"ansatz={spec.ansatz}, readout={spec.readout}, scale={self.scale:g}, bias={self.has_bias}"
                + (", inference form" if self.inference_form else ""))


def _add_into(result: Tensor, z: Tensor, affine_t: Tensor) -> Tensor:
    """result + z affine_t (result: the base layer's 2-D output), added into it by one in-place addmm where the
    dtypes agree: no update tensor, and no new output to allocate (a fresh 1.2 MB buffer faults its pages in: the
    update took 0.59 ms a call in a SmolLM2 step here, 0.68 out of place). Autograd allows it: the base layer's
    backward does not read its own output (were it saved, backward would raise, not go wrong). Into a view (of a
    3-D output, say), autograd would copy the whole output gradient in backward (CopySlices: 6 ms of a SmolLM2
    step here)."""
    if z.dtype != result.dtype or not result.is_contiguous() or result._is_view():
        return result + (z @ affine_t).to(result.dtype)
    return result.addmm_(z, affine_t)


def _affine(z: Tensor, up: Tensor, bias: Tensor | None, x: Tensor) -> Tensor:
    """up z + bias, the bias only for tokens whose input is not zero.

    A zero input has no quantum state, so the circuit reads out zero; the adapter then adds
    nothing at all (not even its bias), so that a zero x always gets a zero delta.
    """
    out = F.linear(z, up)
    if bias is None:
        return out
    present = (x != 0).any(-1, keepdim=True)
    return torch.addcmul(out, present.to(out.dtype), bias)


def init_angles(shape: tuple[int, ...], how: str, device: torch.device | None = None) -> Tensor:
    """Initial angles: uniform in [0, 2π), N(0, 0.1²) or zeros (draws from torch's global generator)."""
    if how == "uniform":
        return torch.rand(shape, device=device) * (2 * math.pi)
    if how == "normal":
        return torch.randn(shape, device=device) * NORMAL_ANGLE_STD
    if how == "zeros":
        return torch.zeros(shape, device=device)
    raise UsageError(f"unknown QAA angle_init {how!r}; choose one of {', '.join(ANGLE_INITS)}")
