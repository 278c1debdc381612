"""The build half: checkpoint to edge package (needs torch: ``pip install 'cephalon-edge[export]'``).

Spec and reference model, checkpoints, training and the zoo, segmentation into static
subgraphs, the converters (one module per target, from the repository's ``converters/``
folder), parity against PyTorch, export and compression. It sits on the device half (it
writes and verifies what the device half runs), never the other way round.
"""

from cephalon_edge.extras import require

require("export", "the build half (checkpoints, export, compress, the zoo)")
