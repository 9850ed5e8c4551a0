"""What a tuning workload is made of, apart from its sizes: the key schedule transfer looks up.

Two kernels have the same *structure* when their TIR is the same but for its numbers
(buffer shapes, loop extents, constant indices, and the constants that follow from them, such
as an attention scale): a pruned width, another input size, or the same block in another model.
A schedule tuned for one is a good start for the other once its tile sizes are refitted
(`compile.transfer`). The structure key is a hash of the TVMScript text with its parameters
renamed by position and every number blanked, so it is stable across processes and stored beside each workload; the extents
(the parameters' shapes, in order) say how far apart two workloads of one structure are.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Sequence

# A number standing alone: 64 in T.int64(64), 0.125 in T.float32(0.125) (an attention scale
# follows the head width), 1e-05; not the 64 of int64 or the 1 of T_add_1.
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")


def _main(mod: Any) -> Any:
    funcs = list(mod.functions.values())
    if len(funcs) != 1:
        raise ValueError(f"a tuning workload holds one PrimFunc, this module holds {len(funcs)}")
    return funcs[0]


def structure_key(mod: Any) -> str:
    """A hash of the workload's TIR with its parameters renamed by position and its numbers
    blanked (16 hex digits). Parameters, and the blocks and buffers named after them, carry the
    names of the Relax variables that fed them (`lv31`, `lv31_sum`), which say where a layer sits
    in a model, not what its kernel does."""
    func = _main(mod)
    text = func.script()
    for position, param in enumerate(func.params):  # also the blocks named after them (lv31_sum)
        text = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(str(param.name))}(?![A-Za-z0-9])", f"arg_{position}", text)
    return hashlib.sha1(_NUMBER.sub("#", text).encode()).hexdigest()[:16]


def extents(mod: Any) -> tuple[int, ...]:
    """Every dimension of every parameter buffer, in parameter order."""
    return tuple(int(d) for p in _main(mod).params for d in p.shape)


def shape_distance(a: Sequence[int], b: Sequence[int]) -> float:
    """How far apart two workloads of one structure are: the sum over dimensions of
    |log(a/b)| (a width halved is as far as a width doubled)."""
    if len(a) != len(b):
        return math.inf
    return sum(abs(math.log(max(x, 1) / max(y, 1))) for x, y in zip(a, b))


def block_names(mod: Any) -> list[str]:
    """The workload's block names in program order: two workloads of one structure have their
    blocks in the same order, so a trace's blocks map by position."""
    return re.findall(r'T\.sblock\("([^"]*)"', _main(mod).script())


def rename_blocks(trace: Any, donor_mod: Any, mod: Any) -> Any | None:
    """The donor's trace with its blocks renamed to `mod`'s (a trace finds blocks by name, and
    blocks are named after the variables that fed the kernel); None when the block lists differ."""
    from tvm.s_tir.schedule import Instruction, Trace

    donor, own = block_names(donor_mod), block_names(mod)
    if donor == own:
        return trace
    if len(donor) != len(own):
        return None
    names = dict(zip(donor, own))
    by_length = sorted(names, key=len, reverse=True)

    def rename(name: str) -> str:
        """A workload block's own name, or a block the schedule made from one (`lv5_sum_rf`
        from rfactor): the longest donor name it starts with, replaced."""
        if name in names:
            return names[name]
        stem = next((d for d in by_length if name.startswith(d + "_")), None)
        return names[stem] + name[len(stem):] if stem else name

    insts, decisions = [], {}
    for inst in trace.insts:
        renamed = inst
        if inst.kind.name == "GetSBlock":
            attrs = [rename(str(inst.attrs[0])), *inst.attrs[1:]]
            renamed = Instruction(inst.kind, list(inst.inputs), attrs, list(inst.outputs))
        insts.append(renamed)
        if inst in trace.decisions:
            decisions[renamed] = trace.decisions[inst]
    return Trace(insts, decisions)
