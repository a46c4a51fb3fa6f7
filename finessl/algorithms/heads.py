"""Evaluation with a head of the algorithm's own: the methods whose papers infer with a
second, balanced classifier (ABC's g, ACR's balanced head) put its weights into the
model's main head while the model is evaluated, and into a rebuilt model's tensors."""
from __future__ import annotations

import contextlib


class EvaluatedByOwnHead:
    """Mixin of an algorithm that evaluates with ``self.modules[evaluated_head]``, a head
    of the main head's shape, in place of the model's main head (``model.head``)."""

    evaluated_head = ""  # the head's name in extra_modules and in the checkpoint

    @contextlib.contextmanager
    def evaluation_weights(self):
        """The model's head holds the own head's weights inside the block."""
        with super().evaluation_weights():
            head = self.model.head
            own = {k: v.detach().clone() for k, v in head.state_dict().items()}
            head.load_state_dict(self.modules[self.evaluated_head].state_dict())
            try:
                yield
            finally:
                head.load_state_dict(own)

    @classmethod
    def evaluated_state(cls, state):
        """The base's evaluated tensors, with the own head's weights as the model's head."""
        if state is None:
            return super().evaluated_state(state)
        evaluated = dict(super().evaluated_state(state) or {})
        prefix = cls.evaluated_head + "."
        evaluated.update({"head." + k[len(prefix):]: v for k, v in state["modules"].items()
                          if k.startswith(prefix)})
        return evaluated
