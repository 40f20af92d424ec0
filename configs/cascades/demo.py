"""The demo cascade for experiments: the shipped one with its stages' training configs.

  python -m experiments.train_cascade --cascade configs/cascades/demo.py --workdir /tmp/runs
  python -m experiments.evaluate --cascade configs/cascades/demo.py --num_prompts 256

The sampling settings and weights are the shipped demo's (videojax/cascade/demo.py, the
one place they are defined); each stage's config is its training config in configs/
(configs/base.py:demo, ...) instead of the one recorded beside its weights, so that
retraining or evaluating a changed stage config goes through the same cascade. A stage
config whose network differs from the one its weights were trained with is refused
when the stage loads. Every field can be overridden on the command line, e.g.
--cascade.stages.base.sample.num_steps=32.
"""

import ml_collections

from videojax.cascade import demo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = demo.get_config()
  for name in c.order:  # the stage's training config, e.g. configs/tsr.py:demo
    c.stages[name].config = f"configs/{name}.py:demo"
  return c
