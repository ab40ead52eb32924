"""The demo mini zoo (issue 3): one architecture, many training recipes, weights shipped as files.

Contract used by the registry loader (``zoo:`` arch and weight sources):

* ``ARCHITECTURES: dict[str, Callable[[int], nn.Module]]`` — arch name -> constructor(num_classes)
* ``weights_file(name: str) -> Path`` — the shipped safetensors file of checkpoint ``name``
* ``WORLD_PREPROCESS: Preprocess`` — mean/std (and size) the zoo models were trained with
* ``NUM_CLASSES: int`` — the world's class count (label space ``demo-world``)
"""
