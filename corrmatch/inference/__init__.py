"""Using a trained model (DESIGN.md §4): :class:`Segmenter` predicts whole images as ``train.py predict``
does and saves or loads the model in the Hugging Face layout.

- :mod:`corrmatch.inference.loading`: a trained model from a checkpoint of ``train.py fit``, a run
  directory, a checkpoint of the authors' code or a ``save_pretrained`` folder;
- :mod:`corrmatch.inference.segmenter`: :class:`Segmenter`, prediction;
- :mod:`corrmatch.inference.hub`: the Hugging Face layout's files and model card, and the Hub's errors.

What a prediction needs besides the weights, the class names, palette and normalisation, is
:class:`corrmatch.metadata.InferenceInfo`.
"""

from corrmatch.inference.segmenter import Segmenter

__all__ = ["Segmenter"]
