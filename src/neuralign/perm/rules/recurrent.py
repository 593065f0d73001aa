"""Op-rule handler for recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``)."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

from neuralign.perm.rules.common import _consume, _first_tensor
from neuralign.perm.rules.types import FIXED, Call, Feat, Info, Seg

if TYPE_CHECKING:
    from neuralign.perm.walker import Walker


_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _rnn(w: Walker, call: Call) -> Info:
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``: the hidden units of each layer and direction are
    a group, permuted alike in every gate block of ``weight_ih``, ``weight_hh`` (rows and
    columns) and both biases, and in the next layer's ``weight_ih`` columns."""
    mod = call.module
    assert mod is not None
    p = call.prefix
    gates = _GATES.get(str(getattr(mod, "mode", "")), 0)
    if not gates or int(getattr(mod, "proj_size", 0) or 0):
        return w.unsupported("recurrent layers with proj_size (or of an unknown kind)")
    if call.arg(1, "hx") is not None:
        return w.unsupported("an initial hidden state is passed in (only zeros are known)")
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    rank = len(w.shape(xnode) or (0, 0, 0))
    if isinstance(x, Feat) and (x.axis != rank - 1 or any(s.inner != 1 for s in x.segs)):
        return w.unsupported("its input carries units on an axis other than the features")
    hid, layers = int(getattr(mod, "hidden_size")), int(getattr(mod, "num_layers"))  # noqa: B009
    dirs = 2 if getattr(mod, "bidirectional", False) else 1
    prev: Info = x
    for layer in range(layers):
        outs = []
        for d in range(dirs):
            sfx = f"l{layer}{'_reverse' if d else ''}"
            key = f"{p}.weight_hh_{sfx}"
            gid = w.producer(key if w.has_key(key) else None, hid, f"{p}.{sfx}")
            _consume(w, prev, f"{p}.weight_ih_{sfx}", 1)
            w.member(gid, f"{p}.weight_hh_{sfx}", 1, 0, 1, hid)
            for g in range(gates):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    k = f"{p}.{name}_{sfx}"
                    if w.has_key(k):
                        w.member(gid, k, 0, g * hid, 1, hid)
            outs.append(Seg(gid, hid))
        prev = Feat(rank - 1, tuple(outs))
    out = prev
    # h_n (and c_n): (layers * dirs, batch, hidden) stacks one group per slice
    final: Info
    if layers * dirs == 1:
        assert isinstance(out, Feat)
        final = Feat(len(w.shape(xnode) or (0, 0, 0)) - 1, out.segs)
    else:
        used = [
            u
            for u in call.node.users
            if u.target is operator.getitem and u.args[1] == 1 and len(u.users) > 0
        ]
        if used:
            return w.unsupported(
                "the final state h_n of a multi-layer or bidirectional RNN stacks several "
                "groups along one axis (read the output sequence instead)"
            )
        final = FIXED
    return (out, (final, final) if gates == 4 else final)
